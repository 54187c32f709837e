// Package console tests weft's web console in a real browser (Debian's
// chromium, driven by chromedp) against a real weft server, with real weft
// proxies ACKing the configuration the console's writes produce.
//
// The test binary re-executes itself in a network namespace of its own
// (netns.OwnNamespace, as test/integration does): the proxies bind the ports the
// translator gives them (15000, 15001, listener ports) in namespaces on a
// bridge that exists only there. It needs root; without it the tests skip,
// and fail under WEFT_CI=1.
package console

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/weftmesh/weft/internal/labproxy"
	"github.com/weftmesh/weft/internal/netns"
)

const (
	nsEnv     = "WEFT_CONSOLE_NETNS" // set in the re-executed test binary
	labFamily = "wfcs"               // names of this package's network namespaces
)

func TestMain(m *testing.M) {
	labproxy.RunIfChild()
	switch err := netns.OwnNamespace(context.Background(), nsEnv, labFamily, os.Stderr); {
	case errors.Is(err, netns.ErrNotRoot) && os.Getenv("WEFT_CI") == "":
		// every test skips, saying why
	case err != nil:
		fmt.Fprintln(os.Stderr, "test/console needs a network namespace of its own:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// needNamespace skips a test outside the namespace TestMain made.
func needNamespace(t *testing.T) {
	t.Helper()
	if os.Getenv(nsEnv) == "" {
		t.Skip("needs root: runs in a network namespace of its own (WEFT_CI=1 makes this a failure)")
	}
}
