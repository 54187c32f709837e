// Package netnstest decides whether a test that needs network namespaces can
// run here: outside CI it skips loudly when it cannot; in CI (WEFT_CI=1,
// set by .ci/run) it fails, because CI runs as root and must run it.
package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Require skips or fails t unless this process is root and every tool in
// tools (plus ip) is on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	err := check(tools)
	if err == nil {
		return
	}
	if os.Getenv("WEFT_CI") != "" {
		t.Fatalf("network-namespace test cannot run in CI: %v", err)
	}
	t.Skipf("SKIPPING %s: it needs network namespaces: %v (run as root, e.g. ./scripts/test.sh, which also installs the tools)", t.Name(), err)
}

func check(tools []string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	var missing []string
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v", missing)
	}
	return nil
}
