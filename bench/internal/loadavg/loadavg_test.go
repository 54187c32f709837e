package loadavg

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  error
		want string
	}{
		{"linux", "0.52 1.04 2.50 3/456 7890\n", nil, "0.52 1.04 2.50"},
		{"short", "0.52 1.04", nil, "?"},
		{"unreadable", "", errors.New("no such file"), "?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parse([]byte(tc.in), tc.err); got != tc.want {
				t.Errorf("parse(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestOneMinute(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  error
		want string
	}{
		{"linux", "0.52 1.04 2.50 3/456 7890\n", nil, "0.52"},
		{"short", "0.52 1.04", nil, "?"},
		{"unreadable", "", errors.New("no such file"), "?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := oneMinute(parse([]byte(tc.in), tc.err)); got != tc.want {
				t.Errorf("oneMinute(parse(%q)) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
