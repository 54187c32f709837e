// Package releasetest checks a binary as scripts/release.sh ships it: the
// one test both commands (weft, weft-proxy) run on their own release build.
package releasetest

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

// Check builds binary (release.sh's BINARIES name) with scripts/release.sh
// for linux/amd64 only, to keep it short, from a test in cmd/<binary>; then
// checks that the checksum file names it, that the build directory is not
// in it (-trimpath), and that `<binary> version` and `--version` print the
// version, commit and date release.sh stamped at link time.
func Check(t *testing.T, binary string) {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/release.sh", "v0.0.0-test")
	cmd.Env = append(os.Environ(), "OUT="+out, "TARGETS=linux/amd64", "BINARIES="+binary, "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	name := binary + "-v0.0.0-test-linux-amd64"
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
	head, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	for _, arg := range []string{"version", "--version"} {
		v, err := exec.CommandContext(ctx, bin, arg).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", name, arg, err)
		}
		for _, want := range []string{
			binary + " v0.0.0-test\n",
			"commit " + strings.TrimSpace(string(head)),
			"date   2023-11-14T22:13:20Z\n",
			"go     go1.", "linux/amd64\n",
		} {
			if !strings.Contains(string(v), want) {
				t.Errorf("%s %s printed\n%s\nwant it to contain %q", binary, arg, v, want)
			}
		}
	}
}
