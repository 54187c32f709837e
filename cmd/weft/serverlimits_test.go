package main

import (
	"context"
	"flag"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/server"
)

// TestLimitFlags: flags win over their environment variables, "0 turns
// off" flags reach the packages as off, --dns-allow takes CIDRs and
// addresses, and a malformed variable is an error naming it.
func TestLimitFlags(t *testing.T) {
	t.Setenv("WEFT_API_MAX_CONNS", "5")
	t.Setenv("WEFT_API_READ_TIMEOUT", "3s")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg server.Config
	finish := limitFlags(fs, &cfg)
	if err := fs.Parse([]string{"--api-read-timeout", "7s", "--dns-rrl-rate", "0", "--dns-allow", "10.1.0.0/16, 192.0.2.1,::1"}); err != nil {
		t.Fatal(err)
	}
	if err := finish(); err != nil {
		t.Fatal(err)
	}
	if cfg.API.MaxConns != 5 || cfg.API.ReadTimeout != 7*time.Second || cfg.API.IdleTimeout != server.DefaultAPIIdleTimeout {
		t.Errorf("API limits %+v", cfg.API)
	}
	if cfg.DNS.RRLRate >= 0 || cfg.DNS.RRLSlip != 2 {
		t.Errorf("--dns-rrl-rate 0: rate %d slip %d, want off and 2", cfg.DNS.RRLRate, cfg.DNS.RRLSlip)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("::1/128")}
	if !slices.Equal(cfg.DNS.Allow, want) {
		t.Errorf("--dns-allow %v, want %v", cfg.DNS.Allow, want)
	}

	t.Setenv("WEFT_XDS_MAX_STREAMS", "many")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	finish = limitFlags(fs, &server.Config{})
	fs.Parse(nil)
	if err := finish(); err == nil {
		t.Error("WEFT_XDS_MAX_STREAMS=many was accepted")
	}
}

// TestQuotaFlags: --appmesh-limits and --cloudmap-limits change the
// quotas they name over their API's defaults; a bad value, from the flag
// or its variable, stops weft server before it starts, naming the flag.
func TestQuotaFlags(t *testing.T) {
	var cfg server.Config
	if err := parseQuotas(&cfg, "meshes=3", "instancesPerService=5,namespaces=0"); err != nil {
		t.Fatal(err)
	}
	wantMesh, wantCM := appmesh.DefaultLimits(), cloudmap.DefaultLimits()
	wantMesh.Meshes = 3
	wantCM.InstancesPerService, wantCM.Namespaces = 5, 0
	if cfg.Limits == nil || cfg.CloudMapLimits == nil || *cfg.Limits != wantMesh || *cfg.CloudMapLimits != wantCM {
		t.Errorf("quotas %+v and %+v, want %+v and %+v", cfg.Limits, cfg.CloudMapLimits, wantMesh, wantCM)
	}
	// Nothing given: the defaults. Every quota 0: none at all, which the
	// server must not read as "the defaults" (internal/server's
	// TestZeroLimitsAreNoLimits).
	if err := parseQuotas(&cfg, "", ""); err != nil {
		t.Fatal(err)
	}
	if *cfg.Limits != appmesh.DefaultLimits() || *cfg.CloudMapLimits != cloudmap.DefaultLimits() {
		t.Errorf("no quota flags: %+v and %+v, want the defaults", cfg.Limits, cfg.CloudMapLimits)
	}
	if err := parseQuotas(&cfg, appmesh.Limits{}.String(), cloudmap.Limits{}.String()); err != nil {
		t.Fatal(err)
	}
	if *cfg.Limits != (appmesh.Limits{}) || *cfg.CloudMapLimits != (cloudmap.Limits{}) {
		t.Errorf("every quota 0 (%s; %s): %+v and %+v, want every one 0", appmesh.Limits{}, cloudmap.Limits{}, cfg.Limits, cfg.CloudMapLimits)
	}

	for _, tt := range []struct {
		name, env string
		args      []string
	}{
		{"flag", "", []string{"--cloudmap-limits", "instancesPerNamespace=x"}},
		{"variable", "bogus=1", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("WEFT_CLOUDMAP_LIMITS", tt.env)
			}
			// Should the value pass, the server stops as soon as it has
			// started: its context is already done.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			args := append([]string{"--data-dir", t.TempDir(), "--api-addr", "127.0.0.1:0", "--dns-addr", "", "--xds-addr", ""}, tt.args...)
			err := runServer(ctx, args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "--cloudmap-limits") {
				t.Fatalf("weft server %v with WEFT_CLOUDMAP_LIMITS=%q: %v, want an error naming --cloudmap-limits", tt.args, tt.env, err)
			}
		})
	}
}
