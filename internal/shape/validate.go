package shape

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Violation is one failed constraint, located by its path in the request
// ("spec.listeners.1.member.portMapping.port", as AWS writes paths).
type Violation struct {
	Path  string
	Value any // the offending value; nil when it is missing
	Rule  string
}

// Error formats a violation as AWS services do.
func (v Violation) Error() string {
	return fmt.Sprintf("Value %s at '%s' failed to satisfy constraint: %s", quote(v.Value), v.Path, v.Rule)
}

// Message joins violations into the message of a validation error, in the
// form AWS uses: "2 validation errors detected: ...; ...".
func Message(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Error()
	}
	noun := "errors"
	if len(vs) == 1 {
		noun = "error"
	}
	return fmt.Sprintf("%d validation %s detected: %s", len(vs), noun, strings.Join(parts, "; "))
}

func quote(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "'" + v + "'"
	case json.Number:
		return "'" + v.String() + "'"
	case bool:
		return "'" + strconv.FormatBool(v) + "'"
	default:
		b, _ := json.Marshal(v)
		return "'" + string(b) + "'"
	}
}

// Check is a rule of a service that its model leaves out, on the values of
// one shape. Validate calls it on each value of that shape it meets that is
// of the shape's type (a map[string]any for a structure, a json.Number
// holding an int64 for a long), after that value's other constraints and
// its members' were checked. val may still break those, and what it breaks
// is reported already: a check leaves alone what it does not understand (a
// member of the wrong type, say) and reports only its own rule. path is
// val's path; a member's is MemberPath(path, name). A check returns nil
// when val keeps the rule, and must not modify val.
type Check func(path string, val any) []Violation

// MemberPath returns the path of the member name of the value at path, as
// Violation paths are written.
func MemberPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// maxViolations bounds the work and the message for hostile input.
const maxViolations = 32

// Validate checks doc, a value decoded by encoding/json with UseNumber,
// against the named shape. It checks types, required members, lengths,
// ranges, enums, patterns and unions, and the model's Checks, and ignores
// members the model does not know, as AWS does. A nil result means doc
// decodes into the shape's Go type without error.
func (m *Model) Validate(shapeName string, doc any) []Violation {
	v := validator{m: m}
	v.value(shapeName, "", doc)
	return v.out
}

// CheckRules runs only the model's Checks on doc (decoded as for
// Validate), on each value of their shapes that is of the shape's type:
// the service's own rules, for a document that met the model once but
// was stored before a rule existed. It reports none of the model's
// constraints.
func (m *Model) CheckRules(shapeName string, doc any) []Violation {
	v := validator{m: m, rulesOnly: true}
	v.value(shapeName, "", doc)
	return v.out
}

type validator struct {
	m         *Model
	out       []Violation
	rulesOnly bool // report only the Checks' violations (CheckRules)
}

func (v *validator) fail(path string, val any, format string, args ...any) {
	if !v.rulesOnly && len(v.out) < maxViolations {
		v.out = append(v.out, Violation{Path: path, Value: val, Rule: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) value(shapeName, path string, val any) {
	s := v.m.Shapes[shapeName]
	if s == nil || val == nil {
		return
	}
	switch s.Kind {
	case Structure:
		obj, ok := val.(map[string]any)
		if !ok {
			v.fail(path, val, "Member must be an object")
			return
		}
		v.structure(s, path, obj)
	case List:
		arr, ok := val.([]any)
		if !ok {
			v.fail(path, val, "Member must be a list")
			return
		}
		v.length(s, path, val, len(arr))
		for i, e := range arr {
			p := MemberPath(path, strconv.Itoa(i+1)+".member")
			if e == nil {
				v.fail(p, nil, "Member must not be null")
				continue
			}
			v.value(s.Elem, p, e)
		}
	case Map:
		obj, ok := val.(map[string]any)
		if !ok {
			v.fail(path, val, "Member must be a map")
			return
		}
		v.length(s, path, val, len(obj))
		for _, k := range sortedKeys(obj) {
			v.value(s.Key, MemberPath(path, "key"), k)
			if obj[k] == nil {
				v.fail(MemberPath(path, k), nil, "Member must not be null")
				continue
			}
			v.value(s.Value, MemberPath(path, k), obj[k])
		}
	case String:
		str, ok := val.(string)
		if !ok {
			v.fail(path, val, "Member must be a string")
			return
		}
		v.length(s, path, val, len([]rune(str)))
		if len(s.Enum) > 0 && !contains(s.Enum, str) {
			v.fail(path, val, "Member must satisfy enum value set: [%s]", strings.Join(s.Enum, ", "))
		}
		if !s.Match(str) {
			v.fail(path, val, "Member must satisfy regular expression pattern: %s", s.Pattern)
		}
	case Integer, Long:
		n, ok := val.(json.Number)
		if !ok {
			v.fail(path, val, "Member must be a number")
			return
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || (s.Kind == Integer && (i < math.MinInt32 || i > math.MaxInt32)) {
			v.fail(path, val, "Member must be an integer")
			return
		}
		if s.HasMin && i < s.Min {
			v.fail(path, val, "Member must have value greater than or equal to %d", s.Min)
		}
		if s.HasMax && i > s.Max {
			v.fail(path, val, "Member must have value less than or equal to %d", s.Max)
		}
	case Double:
		n, ok := val.(json.Number)
		if !ok {
			v.fail(path, val, "Member must be a number")
			return
		}
		if _, err := n.Float64(); err != nil {
			v.fail(path, val, "Member must be a number")
		}
	case Boolean:
		if _, ok := val.(bool); !ok {
			v.fail(path, val, "Member must be a boolean")
			return
		}
	case Timestamp:
		switch t := val.(type) {
		case json.Number:
			if _, err := t.Float64(); err != nil {
				v.fail(path, val, "Member must be a timestamp")
			}
		case string:
			if _, err := ParseTime(t); err != nil {
				v.fail(path, val, "Member must be a timestamp")
			}
		default:
			v.fail(path, val, "Member must be a timestamp")
			return
		}
	case Blob:
		if _, ok := val.(string); !ok {
			v.fail(path, val, "Member must be a base64 string")
			return
		}
	}
	// Each return above is for a value not of the shape's type (not an
	// object for a structure, not an integer for a long): a check is not
	// given those.
	if check := v.m.Checks[shapeName]; check != nil {
		for _, x := range check(path, val) {
			if len(v.out) < maxViolations {
				v.out = append(v.out, x)
			}
		}
	}
}

func (v *validator) structure(s *Shape, path string, obj map[string]any) {
	// Unknown members are ignored, as AWS ignores them, except a member's
	// name in another case: encoding/json matches names without regard to
	// case and the last one wins, so such a key would replace the checked
	// value after validation.
	var folded []string // keys that are a member's name in another case
	for key := range obj {
		exact, fold := false, false
		for _, mem := range s.Members {
			exact = exact || key == mem.Name
			fold = fold || strings.EqualFold(key, mem.Name)
		}
		if fold && !exact {
			folded = append(folded, key)
		}
	}
	slices.Sort(folded)
	for _, key := range folded {
		v.fail(MemberPath(path, key), nil, "Member is not in the model: member names are case-sensitive")
	}
	set := 0
	for _, mem := range s.Members {
		val, present := obj[mem.Name]
		if !present || val == nil {
			if mem.Required {
				v.fail(MemberPath(path, mem.Name), nil, "Member must not be null")
			}
			continue
		}
		set++
		v.value(mem.Shape, MemberPath(path, mem.Name), val)
	}
	if s.Union && set != 1 {
		names := make([]string, len(s.Members))
		for i, mem := range s.Members {
			names[i] = mem.Name
		}
		p := path
		if p == "" {
			p = s.Name
		}
		v.fail(p, obj, "Member must have exactly one of [%s] set", strings.Join(names, ", "))
	}
}

func (v *validator) length(s *Shape, path string, val any, n int) {
	if s.HasMin && int64(n) < s.Min {
		v.fail(path, val, "Member must have length greater than or equal to %d", s.Min)
	}
	if s.HasMax && int64(n) > s.Max {
		v.fail(path, val, "Member must have length less than or equal to %d", s.Max)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
