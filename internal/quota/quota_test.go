package quota

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		a, b     int    // want, from a=1,b=2
		err      string // a substring of the error; "" for none
	}{
		{"empty", "", 1, 2, ""},
		{"one", "b=5", 1, 5, ""},
		{"both, spaces and case", " A = 7 ,, b=-1 ", 7, -1, ""},
		{"unknown name", "c=1", 0, 0, `unknown limit "c" (known: a, b)`},
		{"no value", "a", 0, 0, "want name=value"},
		{"not a number", "a=x", 0, 0, `limit "a=x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := 1, 2
			err := Parse(tt.in, []Field{{"a", &a}, {"b", &b}})
			switch {
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("Parse(%q): %v, want an error with %q", tt.in, err, tt.err)
			case tt.err == "" && err != nil:
				t.Fatalf("Parse(%q): %v", tt.in, err)
			case tt.err == "" && (a != tt.a || b != tt.b):
				t.Errorf("Parse(%q): a=%d b=%d, want %d %d", tt.in, a, b, tt.a, tt.b)
			}
		})
	}
}

// FuzzParse: no input panics, and what Parse accepts Format writes back
// into something Parse reads to the same values.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a=1", "a=1,b=2", " B = -3 ", "a", "a=", "=1", "c=1", "a=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, b := 1, 2
		fields := []Field{{"a", &a}, {"b", &b}}
		if Parse(s, fields) != nil {
			return
		}
		a2, b2 := 0, 0
		if err := Parse(Format(fields), []Field{{"a", &a2}, {"b", &b2}}); err != nil || a2 != a || b2 != b {
			t.Fatalf("Parse(Format(%q)) = %d %d, %v; want %d %d", s, a2, b2, err, a, b)
		}
	})
}
