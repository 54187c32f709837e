// Package weftbin builds the weft binary for tests that run it as a
// separate process (the end-to-end tutorial, the demo, the crash test),
// and starts `weft server` processes on loopback for the HA tests and
// benchmark.
package weftbin

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Build builds cmd/weft into a directory every UID can read (the proxy
// runs as UID 1337 in the namespace tests), removed when t ends, and
// returns the binary's path.
func Build(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weft-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "weft")
	// Bounded: a cold module cache on a slow network must fail the test,
	// not hang it until go test's own timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/weftmesh/weft/cmd/weft").CombinedOutput()
	if err != nil {
		t.Fatalf("go build weft: %v\n%s", err, out)
	}
	return bin
}
