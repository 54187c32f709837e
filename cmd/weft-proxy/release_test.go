package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReleaseBuildRunsVersion builds weft-proxy with scripts/release.sh
// (linux/amd64 only, to keep it short), as releases ship it: the checksum
// file names it, the build directory is not in it, and `weft-proxy
// version` prints the stamp release.sh wrote, as `weft version` does.
func TestReleaseBuildRunsVersion(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/release.sh", "v0.0.0-test")
	cmd.Env = append(os.Environ(), "OUT="+out, "TARGETS=linux/amd64", "BINARIES=weft-proxy", "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	name := "weft-proxy-v0.0.0-test-linux-amd64"
	bin := filepath.Join(out, name)
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(sum[:]) + "  " + name + "\n"; string(sums) != want {
		t.Errorf("SHA256SUMS is %q, want %q", sums, want)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(wd)) {
		t.Errorf("the release binary holds the build directory's path: -trimpath was not applied")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	for _, arg := range []string{"version", "--version"} {
		v, err := exec.CommandContext(ctx, bin, arg).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", name, arg, err)
		}
		for _, want := range []string{
			"weft-proxy v0.0.0-test\n",
			"commit " + strings.TrimSpace(string(head)),
			"date   2023-11-14T22:13:20Z\n",
			"go     go1.", "linux/amd64\n",
		} {
			if !strings.Contains(string(v), want) {
				t.Errorf("weft-proxy %s printed\n%s\nwant it to contain %q", arg, v, want)
			}
		}
	}

	// A binary release.sh does not know is refused before anything is built.
	cmd = exec.CommandContext(ctx, "bash", "../../scripts/release.sh", "v0.0.0-test")
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
