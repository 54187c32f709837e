// Package integration runs weft server and weft proxy together in one
// process, on the loopback of a network namespace of the test's own, and
// drives them as a user would: the AWS SDK for the API, real TLS clients
// for the data plane.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/weftmesh/weft/internal/netns"
)

// nsEnv marks the test binary re-executed inside its own network
// namespace.
const nsEnv = "WEFT_INTEGRATION_NETNS"

// labFamily starts the names of the network namespaces this package
// creates (followed by the test process's id).
const labFamily = "wfit"

// TestMain re-executes the test binary in a new network namespace
// (unshare --net, anonymous: it disappears with the process) and brings
// its loopback up. The proxies bind the addresses the translator gives
// them (0.0.0.0:15000, 15001, listener ports): in a namespace of its own
// the test owns those ports and cannot collide with anything else on the
// machine. It needs root, as test/e2e does: without it the tests skip,
// and fail under WEFT_CI=1.
func TestMain(m *testing.M) {
	if os.Getenv(proxyNodeEnv) != "" {
		os.Exit(runProxy())
	}
	if os.Getenv(nsEnv) == "" {
		if os.Geteuid() != 0 {
			if os.Getenv("WEFT_CI") != "" {
				fmt.Fprintln(os.Stderr, "test/integration needs root (a network namespace of its own)")
				os.Exit(1)
			}
			os.Exit(m.Run()) // every test skips, saying why
		}
		cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), nsEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		// The child dies with this process (go test's timeout kills it).
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "unshare:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "ip link set lo up: %v: %s\n", err, out)
		os.Exit(1)
	}
	// Namespaces a killed run of this test left behind (named with its
	// pid, which is gone).
	if gone, err := netns.Sweep(context.Background(), labFamily); err != nil {
		fmt.Fprintln(os.Stderr, "sweep:", err)
	} else if len(gone) > 0 {
		fmt.Fprintln(os.Stderr, "removed what dead runs left:", gone)
	}
	os.Exit(m.Run())
}

// needNamespace skips a test outside the namespace TestMain made (not
// root, and not under CI).
func needNamespace(t *testing.T) {
	t.Helper()
	if os.Getenv(nsEnv) == "" {
		t.Skip("needs root: runs in a network namespace of its own (WEFT_CI=1 makes this a failure)")
	}
}
