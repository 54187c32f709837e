package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps weft proxy an xDS client like any other: nothing from
// weft's control plane (store, API, translator, xDS server, models).
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftmesh/weft/internal/proxy/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/weftmesh/weft/") && !strings.HasPrefix(dep, "github.com/weftmesh/weft/internal/proxy") {
			t.Errorf("weft proxy imports %s", dep)
		}
	}
}
