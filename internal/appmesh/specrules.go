package appmesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/weftmesh/weft/internal/shape"
)

// maxDurationSeconds is protobuf's largest Duration, which Envoy's
// configuration holds every App Mesh duration in (10,000 years).
const maxDurationSeconds = 315_576_000_000

// checks returns App Mesh's rules on what a spec holds, wherever it holds
// it, that botocore's model leaves out (it declares no bound on these), by
// the shape they apply to: Model's Checks, which its validator runs in its
// one walk of a request. What they refuse was accepted and committed, and
// then could not be translated: the proxies of the nodes that read it
// stopped getting configuration, or got what Envoy refuses.
//   - A duration is at most protobuf's largest (its value in the unit it
//     names): a larger one overflowed into a negative timeout.
//   - A regex (route, gateway route, header and gRPC metadata matches)
//     compiles: Envoy's RE2 and Go's take the same syntax. Envoy also
//     bounds a regex's program size, which this does not check.
//   - A DNS hostname, and the virtual service a backend names, are not
//     empty and hold no control character.
//
// A test checks that every shape named here is in the model, and that
// every structure of the model with a regex member has its check.
func checks() map[string]shape.Check {
	return map[string]shape.Check{
		"Duration":              checkDuration,
		"DnsServiceDiscovery":   checkMember("hostname", nameRule),
		"VirtualServiceBackend": checkMember("virtualServiceName", serviceNameRule),
		// The structures with a regex member. (Their regex shares its
		// shape, HeaderMatch, with exact, prefix and suffix members.)
		"HttpPathMatch":                checkMember("regex", regexRule),
		"HeaderMatchMethod":            checkMember("regex", regexRule),
		"GrpcRouteMetadataMatchMethod": checkMember("regex", regexRule),
		"GrpcMetadataMatchMethod":      checkMember("regex", regexRule),
	}
}

// CheckStored checks a record as the store holds it (shapeName is its
// shape: "RouteData", "GatewayRouteData", ...) against App Mesh's rules
// that the model leaves out (checks), and only those: a record written
// before one of them existed may break it, and then Envoy refuses what it
// becomes (a regex that does not compile NACKs the whole route table it
// is in). The model's own constraints are not checked: a record that met
// them when it was written is served as it was. A value that is not JSON
// is an error.
func CheckStored(shapeName string, value []byte) error {
	d := json.NewDecoder(bytes.NewReader(value))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		return fmt.Errorf("decode %s: %w", shapeName, err)
	}
	if vs := Model().CheckRules(shapeName, doc); len(vs) > 0 {
		return errors.New(shape.Message(vs))
	}
	return nil
}

// checkDuration checks a Duration's value against protobuf's bound in the
// duration's unit. The bound is in seconds unless the unit is ms.
func checkDuration(path string, val any) []shape.Violation {
	obj, _ := val.(map[string]any)
	n, _ := obj["value"].(json.Number)
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return nil // absent, or not an integer: the model's rule says so
	}
	unit, _ := obj["unit"].(string)
	limit := int64(maxDurationSeconds)
	if unit == string(DurationUnitMs) {
		limit *= 1000
	}
	if v <= limit {
		return nil
	}
	rule := fmt.Sprintf("Member must have value less than or equal to %d", limit)
	if unit != "" {
		rule += " (" + unit + ")"
	}
	return []shape.Violation{{Path: shape.MemberPath(path, "value"), Value: n, Rule: rule}}
}

// checkMember returns a check of one string member of a structure: rule
// returns the constraint the member's value breaks, or "".
func checkMember(name string, rule func(string) string) shape.Check {
	return func(path string, val any) []shape.Violation {
		obj, _ := val.(map[string]any)
		s, ok := obj[name].(string)
		if !ok {
			return nil // absent, or not a string: the model's rule says so
		}
		if r := rule(s); r != "" {
			return []shape.Violation{{Path: shape.MemberPath(path, name), Value: s, Rule: r}}
		}
		return nil
	}
}

// regexRule refuses a regex that does not compile.
func regexRule(s string) string {
	if _, err := regexp.Compile(s); err != nil {
		return "Member must be a valid regular expression: " + err.Error()
	}
	return ""
}

// serviceNameRule returns the constraint a virtual service name breaks, or
// "". The model leaves ServiceName unbounded, but App Mesh names are 1-255
// characters and the name is a key in the store and a DNS name. It holds
// no control character either (nameRule): it becomes a virtual host's
// domain, which Envoy refuses with one.
func serviceNameRule(name string) string {
	if n := utf8.RuneCountInString(name); n < 1 || n > 255 {
		return "Member must have length between 1 and 255"
	}
	return nameRule(name)
}

// nameRule returns the constraint a name that becomes a DNS name or an
// Envoy domain breaks, or "": it is not empty and holds no control
// character.
func nameRule(s string) string {
	if s == "" {
		return "Member must have length greater than or equal to 1"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "Member must not contain control characters"
	}
	return ""
}
