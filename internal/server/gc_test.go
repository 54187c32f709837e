package server

import (
	"runtime/debug"
	"testing"
)

// TestSetGCDefault: weft server's GOGC default applies only when the
// environment sets none.
func TestSetGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	if got := SetGCDefault(env("50")); got != "50" {
		t.Fatalf("with GOGC=50 in force: %q", got)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC set in the environment, the percent became %d, want it left at 100", p)
	}
	if got := SetGCDefault(env("")); got != "200" {
		t.Fatalf("without GOGC: %q, want 200", got)
	}
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("without GOGC the percent is %d, want %d", p, DefaultGCPercent)
	}
}
