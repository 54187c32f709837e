package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestHelp: every subcommand answers -h with its usage and flag.ErrHelp,
// which main turns into exit status 0, and starts nothing.
func TestHelp(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := c.run(t.Context(), []string{"-h"}, &out, &errOut)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("weft %s -h: %v, want flag.ErrHelp", c.name, err)
			}
			if errOut.Len() == 0 && out.Len() == 0 {
				t.Fatalf("weft %s -h printed no usage", c.name)
			}
		})
	}
}

// TestProxyLimitEnv: a malformed limit in the environment stops weft proxy
// before it starts, naming the variable, rather than running without it.
func TestProxyLimitEnv(t *testing.T) {
	for name, val := range map[string]string{
		"WEFT_PROXY_REQUEST_HEADERS_TIMEOUT":  "soon",
		"WEFT_PROXY_LISTENER_MAX_CONNECTIONS": "many",
		"WEFT_PROXY_DRAIN_TIME":               "later",
		"WEFT_PROXY_PARK_IDLE_AFTER":          "idle",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, val)
			var out, errOut bytes.Buffer
			err := runProxy(t.Context(), []string{"--resource-arn", "mesh/m/virtualNode/n", "--admin-addr", ""}, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s=%s: %v, want an error naming it", name, val, err)
			}
		})
	}
}
