package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps weft-proxy the data plane alone: of weft's packages
// only the proxy's, the traffic interception's, their commands, the
// environment reader and the build information, and none of the control
// plane's libraries. Each of them would add its package initialisation to
// the proxy's heap and its code to the pages it maps.
// The same check on cmd/weft must find them, or the check is blind.
func TestImports(t *testing.T) {
	if bad := strayDeps(t, "github.com/weftmesh/weft/cmd/weft-proxy"); len(bad) > 0 {
		t.Errorf("weft-proxy imports %q", bad)
	}
	bad := strayDeps(t, "github.com/weftmesh/weft/cmd/weft")
	for _, want := range []string{"github.com/weftmesh/weft/internal/server", "go.etcd.io/etcd/client/v3", "github.com/aws/aws-sdk-go-v2/aws"} {
		found := false
		for _, b := range bad {
			found = found || b == want
		}
		if !found {
			t.Errorf("the check does not see %s in cmd/weft", want)
		}
	}
}

// strayDeps lists what pkg depends on that a proxy-only binary must not.
func strayDeps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	allowed := []string{ // weft's packages a proxy links: these and below
		"github.com/weftmesh/weft/cmd/weft-proxy",
		"github.com/weftmesh/weft/internal/proxy",
		"github.com/weftmesh/weft/internal/proxycmd",
		"github.com/weftmesh/weft/internal/envvar",
		"github.com/weftmesh/weft/internal/intercept",
		"github.com/weftmesh/weft/internal/buildinfo",
	}
	forbidden := []string{ // prefixes of the control plane's libraries
		"go.etcd.io/",                  // etcd client and server, bbolt
		"github.com/aws/",              // the AWS SDK (Cloud Map federation, SigV4)
		"github.com/miekg/dns",         // the DNS server
		"github.com/chromedp/",         // the console's browser driver
		"github.com/prometheus/client", // the server's metrics
		"github.com/envoyproxy/go-control-plane/pkg/server", // the xDS server
		"github.com/envoyproxy/go-control-plane/pkg/cache",
	}
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/weftmesh/weft/"):
			ok := false
			for _, a := range allowed {
				ok = ok || dep == a || strings.HasPrefix(dep, a+"/")
			}
			if !ok {
				bad = append(bad, dep)
			}
		default:
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					bad = append(bad, dep)
					break
				}
			}
		}
	}
	return bad
}

// TestReleaseTagsKeepTemplatesOut: release builds use -tags grpcnotrace
// (scripts/release.sh, the Dockerfile) so that text/template is not
// linked: its calls of methods by name stop the linker from dropping
// unused methods, which made weft-proxy 38 MB instead of 25 and mapped
// about 1 MB more of it in a running sidecar. A new dependency that brings
// text/template (or html/template) back fails here. Without the tag, grpc
// links it, or the tag does nothing any more.
func TestReleaseTagsKeepTemplatesOut(t *testing.T) {
	deps := func(tags ...string) map[string]bool {
		args := append([]string{"list", "-deps"}, tags...)
		out, err := exec.Command("go", append(args, "github.com/weftmesh/weft/cmd/weft-proxy")...).Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		m := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			m[d] = true
		}
		return m
	}
	release := deps("-tags", "grpcnotrace")
	for _, p := range []string{"text/template", "html/template", "golang.org/x/net/trace"} {
		if release[p] {
			t.Errorf("weft-proxy built with -tags grpcnotrace links %s", p)
		}
	}
	if !deps()["text/template"] {
		t.Error("without -tags grpcnotrace weft-proxy no longer links text/template: the tag may be dropped from release.sh and the Dockerfile")
	}
}
