package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/buildinfo/releasetest"
)

// TestReleaseBuildRunsVersion: weft as release.sh ships it.
func TestReleaseBuildRunsVersion(t *testing.T) {
	releasetest.Check(t, "weft")
}

// TestVersionOfDevBuild: without a release stamp, `weft version` still
// names the module version and the toolchain.
func TestVersionOfDevBuild(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runVersion(t.Context(), nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "weft ") || !strings.Contains(out.String(), "go     go1.") {
		t.Errorf("weft version: %q", out.String())
	}
	if err := runVersion(t.Context(), []string{"extra"}, &out, &errOut); err == nil {
		t.Error("weft version extra: no error")
	}
}
