package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReleaseBuildRunsVersion builds a release binary with
// scripts/release.sh (linux/amd64 only, to keep it short), checks its
// checksum file, and runs `weft version` from it: the version, commit and
// date stamped at link time are what it prints.
func TestReleaseBuildRunsVersion(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/release.sh", "v0.0.0-test")
	cmd.Env = append(os.Environ(), "OUT="+out, "TARGETS=linux/amd64", "BINARIES=weft", "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	name := "weft-v0.0.0-test-linux-amd64"
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
	if bytes.Contains(b, []byte(must(t, os.Getwd))) {
		t.Errorf("the release binary holds the build directory's path: -trimpath was not applied")
	}

	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	v, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", name, err)
	}
	got := string(v)
	for _, want := range []string{
		"weft v0.0.0-test\n",
		"commit " + strings.TrimSpace(string(head)),
		"date   2023-11-14T22:13:20Z\n",
		"go     go1.", "linux/amd64\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("weft version printed\n%s\nwant it to contain %q", got, want)
		}
	}
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

func must[T any](t *testing.T, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
