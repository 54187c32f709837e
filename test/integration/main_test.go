// Package integration runs weft server and weft proxy together in one
// process, on the loopback of a network namespace of the test's own, and
// drives them as a user would: the AWS SDK for the API, real TLS clients
// for the data plane.
package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/weftmesh/weft/internal/labproxy"
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
	labproxy.RunIfChild()
	switch err := netns.OwnNamespace(context.Background(), nsEnv, labFamily, os.Stderr); {
	case errors.Is(err, netns.ErrNotRoot) && os.Getenv("WEFT_CI") == "":
		// every test skips, saying why
	case err != nil:
		fmt.Fprintln(os.Stderr, "test/integration needs a network namespace of its own:", err)
		os.Exit(1)
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
