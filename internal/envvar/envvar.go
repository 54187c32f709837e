// Package envvar reads the environment variables weft's commands take
// their flag defaults from. A malformed value is reported, never dropped:
// a command refuses to start on it rather than run without the setting.
package envvar

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Or returns the variable's value, or def when it is unset.
func Or(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// Int reads an integer variable; def when it is unset or empty. A
// malformed value is added to errs and def returned.
func Int(name string, def int, errs *[]error) int {
	s := Or(name, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("env %s=%q: not an integer", name, s))
		return def
	}
	return n
}

// Duration is Int for durations ("10s").
func Duration(name string, def time.Duration, errs *[]error) time.Duration {
	s := Or(name, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("env %s=%q: not a duration", name, s))
		return def
	}
	return d
}

// Bool is Int for booleans, in the words strconv.ParseBool and the flag
// package take (1, t, true, 0, f, false, ...).
func Bool(name string, def bool, errs *[]error) bool {
	s := Or(name, "")
	if s == "" {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("env %s=%q: not a boolean (true or false)", name, s))
		return def
	}
	return b
}

// Uint reads an unsigned variable, as App Mesh's agent read
// ENVOY_ADMIN_ACCESS_PORT; ok is false when it is unset or not a number.
func Uint(name string) (uint, bool) {
	v, err := strconv.ParseUint(Or(name, ""), 10, 32)
	return uint(v), err == nil
}
