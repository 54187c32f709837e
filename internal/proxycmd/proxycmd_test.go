package proxycmd

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestSeconds: ENVOY_INITIAL_FETCH_TIMEOUT is read as the App Mesh image
// reads it (whole seconds), or as a duration; anything else is refused.
func TestSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "10": 10 * time.Second, "1500ms": 1500 * time.Millisecond, "2m": 2 * time.Minute} {
		if got, err := seconds(in); err != nil || got != want {
			t.Errorf("seconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-5s", "-1"} {
		if _, err := seconds(in); err == nil {
			t.Errorf("seconds(%q): no error", in)
		}
	}
}

func TestLogLevel(t *testing.T) {
	for _, in := range []string{"debug", "info", "warn", "error", "trace", "warning", "critical", "off", "INFO"} {
		if _, err := logLevel(in); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
	if _, err := logLevel("loud"); err == nil {
		t.Error(`"loud" was accepted`)
	}
}

// TestAdminPortFromEnv: ENVOY_ADMIN_ACCESS_PORT moves the proxy's default
// admin port, as it moved Envoy's in the App Mesh image.
func TestAdminPortFromEnv(t *testing.T) {
	t.Setenv("ENVOY_ADMIN_ACCESS_PORT", "9902")
	if got := defaultAdminAddr(); got != "127.0.0.1:9902" {
		t.Errorf("with ENVOY_ADMIN_ACCESS_PORT=9902: %s", got)
	}
	t.Setenv("ENVOY_ADMIN_ACCESS_PORT", "")
	if got := defaultAdminAddr(); got != "127.0.0.1:9901" {
		t.Errorf("without ENVOY_ADMIN_ACCESS_PORT: %s", got)
	}
}

// TestUsageNamesProg: the usage names the command as the binary running
// it was called, and -h starts nothing.
func TestUsageNamesProg(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(t.Context(), "weft-proxy proxy", []string{"-h"}, &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	if help := errOut.String(); !strings.HasPrefix(help, "usage: weft-proxy proxy [flags]") || !strings.Contains(help, "-resource-arn") {
		t.Fatalf("usage:\n%s", help)
	}
}

// TestTuneRuntime: without GOGC in the environment the proxy collects at
// DefaultGCPercent; a GOGC the user set is left as the runtime applied it.
// Heap profile sampling stops unless --pprof can serve the profiles.
func TestTuneRuntime(t *testing.T) {
	prevGC, prevRate := debug.SetGCPercent(100), runtime.MemProfileRate
	t.Cleanup(func() { debug.SetGCPercent(prevGC); runtime.MemProfileRate = prevRate })

	t.Setenv("GOGC", "") // restored at cleanup
	os.Unsetenv("GOGC")
	tuneRuntime(true)
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, DefaultGCPercent)
	}
	if runtime.MemProfileRate == 0 {
		t.Error("--pprof: heap profile sampling turned off")
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200) // as the runtime applied it at start
	tuneRuntime(false)
	if got := debug.SetGCPercent(100); got != 200 {
		t.Errorf("GOGC=200: GC percent %d, want 200 kept", got)
	}
	if runtime.MemProfileRate != 0 {
		t.Errorf("no --pprof: MemProfileRate %d, want 0", runtime.MemProfileRate)
	}
}

// TestEvloopFlag: the event loops are on unless --evloop=false or
// WEFT_PROXY_EVLOOP=false (the flag wins over the variable); the old
// opt-in, --experimental-evloop and WEFT_PROXY_EXPERIMENTAL_EVLOOP, is
// accepted and changes nothing; a variable that is not a boolean is
// refused rather than ignored.
func TestEvloopFlag(t *testing.T) {
	for _, tc := range []struct {
		name           string
		env            map[string]string
		args           []string
		wantGoroutines bool
		wantErr        string
	}{
		{name: "default"},
		{name: "flag off", args: []string{"--evloop=false"}, wantGoroutines: true},
		{name: "flag on", args: []string{"--evloop"}},
		{name: "env off", env: map[string]string{"WEFT_PROXY_EVLOOP": "false"}, wantGoroutines: true},
		{name: "env 0", env: map[string]string{"WEFT_PROXY_EVLOOP": "0"}, wantGoroutines: true},
		{name: "env off, flag on", env: map[string]string{"WEFT_PROXY_EVLOOP": "false"}, args: []string{"--evloop=true"}},
		{name: "old flag", args: []string{"--experimental-evloop"}},
		{name: "old flag with off", args: []string{"--experimental-evloop", "--evloop=false"}, wantGoroutines: true},
		{name: "old env", env: map[string]string{"WEFT_PROXY_EXPERIMENTAL_EVLOOP": "1"}},
		{name: "old env with env off", env: map[string]string{"WEFT_PROXY_EXPERIMENTAL_EVLOOP": "1", "WEFT_PROXY_EVLOOP": "false"}, wantGoroutines: true},
		{name: "env not a boolean", env: map[string]string{"WEFT_PROXY_EVLOOP": "sometimes"}, wantErr: `env WEFT_PROXY_EVLOOP="sometimes": not a boolean`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WEFT_PROXY_EVLOOP", "")
			t.Setenv("WEFT_PROXY_EXPERIMENTAL_EVLOOP", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var errOut bytes.Buffer
			cfg, _, err := parse(t.Context(), "weft proxy", tc.args, &errOut)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse %v: %v (%s)", tc.args, err, errOut.String())
			}
			if cfg.Goroutines != tc.wantGoroutines {
				t.Errorf("Goroutines %v, want %v", cfg.Goroutines, tc.wantGoroutines)
			}
		})
	}
}

// TestH2LoopsFlag: h2c on the event loops is on unless --h2loops=false or
// WEFT_PROXY_H2LOOPS=false (or 0); the flag wins over the variable.
func TestH2LoopsFlag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     string
		args    []string
		wantOff bool
	}{
		{name: "default"},
		{name: "flag off", args: []string{"--h2loops=false"}, wantOff: true},
		{name: "flag on", args: []string{"--h2loops"}},
		{name: "env 0", env: "0", wantOff: true},
		{name: "env false", env: "false", wantOff: true},
		{name: "env 1", env: "1"},
		{name: "env off, flag on", env: "0", args: []string{"--h2loops=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WEFT_PROXY_H2LOOPS", tc.env)
			var errOut bytes.Buffer
			cfg, _, err := parse(t.Context(), "weft proxy", tc.args, &errOut)
			if err != nil {
				t.Fatalf("parse %v: %v (%s)", tc.args, err, errOut.String())
			}
			if cfg.H2Goroutines != tc.wantOff {
				t.Errorf("H2Goroutines %v, want %v", cfg.H2Goroutines, tc.wantOff)
			}
		})
	}
}
