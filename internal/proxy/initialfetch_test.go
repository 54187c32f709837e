package proxy

import (
	"context"
	"testing"
	"time"
)

// TestInitialFetchTimeout: with InitialFetchTimeout (the image's
// ENVOY_INITIAL_FETCH_TIMEOUT) a proxy whose control plane sends nothing
// goes LIVE once it passes; with 0 (the image's default) it keeps
// waiting for its clusters and listeners.
func TestInitialFetchTimeout(t *testing.T) {
	waiting := newHarness(t) // started first: it has waited at least as long
	bounded := newHarness(t, func(c *Config) { c.InitialFetchTimeout = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := bounded.p.WaitLive(ctx); err != nil {
		t.Fatalf("not LIVE after its initial fetch timeout: %v", err)
	}
	if got := bounded.admin("/ready"); got != "LIVE\n" {
		t.Errorf("/ready after the timeout: %q", got)
	}
	if got := bounded.stat("server.state"); got != 0 {
		t.Errorf("server.state %d, want 0 (LIVE)", got)
	}
	if got := waiting.admin("/ready"); got != "PRE_INITIALIZING\n" {
		t.Errorf("/ready without a timeout and without configuration: %q", got)
	}
}
