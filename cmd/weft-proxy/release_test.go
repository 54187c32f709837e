package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/buildinfo/releasetest"
)

// TestReleaseBuildRunsVersion: weft-proxy as release.sh ships it; a
// binary release.sh does not know is refused before anything is built.
func TestReleaseBuildRunsVersion(t *testing.T) {
	releasetest.Check(t, "weft-proxy")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/release.sh", "v0.0.0-test")
	cmd.Env = append(os.Environ(), "OUT="+t.TempDir(), "TARGETS=linux/amd64", "BINARIES=weft-server")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), `unknown binary "weft-server"`) {
		t.Errorf("release.sh with BINARIES=weft-server: %v\n%s", err, b)
	}
}

// TestVersionCommand: without a release stamp, `weft-proxy version` names
// the module version and the toolchain; arguments are refused.
func TestVersionCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "weft-proxy ") || !strings.Contains(out.String(), "go     go1.") {
		t.Errorf("weft-proxy version: %q", out.String())
	}
	if err := run(t.Context(), []string{"version", "extra"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Errorf("weft-proxy version extra: %v, want a usage error", err)
	}
}
