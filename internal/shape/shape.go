// Package shape describes an AWS service model (shapes and operations, as in
// botocore's service-2.json) and checks decoded JSON documents against it.
//
// The generated model tables in internal/appmesh and internal/cloudmap are
// values of these types; the validator here turns a request body into either
// a list of violations, phrased as AWS phrases them, or a document that is
// safe to decode into the generated Go types.
package shape

import (
	"regexp"
	"strings"
	"sync"
)

// Kind is the type of a shape.
type Kind uint8

// Shape kinds, as named in the service model.
const (
	String Kind = iota + 1
	Integer
	Long
	Boolean
	Double
	Timestamp
	Structure
	List
	Map
	Blob
)

// Shape is one named shape of a service model. Only the fields that apply to
// its Kind are set. A Shape is immutable once the model is built.
type Shape struct {
	Name string
	Kind Kind

	// Min and Max bound the length of strings, lists and maps and the value
	// of numbers. HasMin/HasMax say whether they are set.
	Min, Max       int64
	HasMin, HasMax bool
	Pattern        string
	Enum           []string

	Members []Member // Structure, in model order
	Union   bool     // Structure: exactly one member must be set

	Elem       string // List element shape
	Key, Value string // Map key and value shapes

	// Exception shapes carry their error code and HTTP status.
	Exception  bool
	StatusCode int

	// Payload names the member that is the whole HTTP body (rest-json).
	Payload string

	once    sync.Once
	matcher func(string) bool
}

// Member is one member of a structure shape.
type Member struct {
	Name             string // the JSON name
	Shape            string
	Required         bool
	Location         string // "", "uri", "querystring" or "header"
	LocationName     string
	IdempotencyToken bool
}

// Operation is one operation of a service model.
type Operation struct {
	Name         string
	Method       string
	URI          string
	Input        string
	Output       string
	Errors       []string
	ResponseCode int
	HostPrefix   string
}

// Model is a whole service model. It is built once and never modified.
type Model struct {
	Shapes     map[string]*Shape
	Operations map[string]*Operation
	// Checks are the service's rules that its model leaves out, by the
	// name of the shape they apply to; Validate runs them in its walk.
	// nil when the service has none.
	Checks map[string]Check
}

// Member returns the member of a structure shape by JSON name.
func (s *Shape) Member(name string) (Member, bool) {
	for _, m := range s.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Match reports whether v satisfies the shape's pattern. A shape without a
// pattern matches everything.
func (s *Shape) Match(v string) bool {
	if s.Pattern == "" {
		return true
	}
	s.once.Do(func() { s.matcher = compilePattern(s.Pattern) })
	return s.matcher(v)
}

// lookaheadLen matches the length lookahead some models put in front of a
// pattern; RE2 has no lookaround, so it becomes a length check.
var lookaheadLen = regexp.MustCompile(`\(\?=\^\.\{(\d+),(\d+)\}\$\)`)

// compilePattern compiles a model pattern. Models are written for Java
// regular expressions; the two lookaround forms they use are rewritten:
// a leading negative lookahead of a literal, and a lookahead on the length.
func compilePattern(p string) func(string) bool {
	if i := strings.Index(p, "(?!"); i >= 0 {
		j := strings.Index(p[i:], ")")
		lit := p[i+3 : i+j]
		rest := compilePattern(p[:i] + p[i+j+1:])
		return func(s string) bool { return !strings.HasPrefix(s, lit) && rest(s) }
	}
	if m := lookaheadLen.FindStringSubmatchIndex(p); m != nil {
		lo, hi := atoi(p[m[2]:m[3]]), atoi(p[m[4]:m[5]])
		rest := compilePattern(p[:m[0]] + p[m[1]:])
		// Every model that uses it applies the length to the whole value.
		return func(s string) bool {
			n := len([]rune(s))
			return n >= lo && n <= hi && rest(s)
		}
	}
	// RE2 repeats at most 1000 times; Java has no such limit. The models
	// use larger bounds only on whole values whose length the shape's Max
	// also bounds, so the upper bound can go.
	p = bigRepeat.ReplaceAllString(p, "{$1,}")
	// Java's matches() must consume the whole value; RE2 finds a substring.
	re := regexp.MustCompile(`^(?:` + p + `)$`)
	return re.MatchString
}

// bigRepeat matches a repetition {m,n} with n of four digits or more.
var bigRepeat = regexp.MustCompile(`\{(\d+),\d{4,}\}`)

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
