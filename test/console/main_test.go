// Package console tests weft's web console in a real browser (Debian's
// chromium, driven by chromedp) against a real weft server, with real weft
// proxies ACKing the configuration the console's writes produce.
//
// The test binary re-executes itself in a network namespace of its own
// (unshare --net), as test/integration does: the proxies bind the ports the
// translator gives them (15000, 15001, listener ports) in namespaces on a
// bridge that exists only there. It needs root; without it the tests skip,
// and fail under WEFT_CI=1.
package console

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/proxy"
)

const (
	nsEnv        = "WEFT_CONSOLE_NETNS"      // set in the re-executed test binary
	proxyNodeEnv = "WEFT_CONSOLE_PROXY_NODE" // run as weft proxy for this node id
	proxyXDSEnv  = "WEFT_CONSOLE_PROXY_XDS"
	labFamily    = "wfcs" // names of this package's network namespaces
)

func TestMain(m *testing.M) {
	if os.Getenv(proxyNodeEnv) != "" {
		os.Exit(runProxy())
	}
	if os.Getenv(nsEnv) == "" {
		if os.Geteuid() != 0 {
			if os.Getenv("WEFT_CI") != "" {
				fmt.Fprintln(os.Stderr, "test/console needs root (a network namespace of its own)")
				os.Exit(1)
			}
			os.Exit(m.Run()) // every test skips, saying why
		}
		cmd := exec.Command("unshare", append([]string{"--net", "--", os.Args[0]}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), nsEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with go test
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
	if gone, err := netns.Sweep(context.Background(), labFamily); err != nil {
		fmt.Fprintln(os.Stderr, "sweep:", err)
	} else if len(gone) > 0 {
		fmt.Fprintln(os.Stderr, "removed what dead runs left:", gone)
	}
	os.Exit(m.Run())
}

// runProxy is the test binary run as weft proxy inside a lab host.
func runProxy() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := proxy.New(proxy.Config{ResourceARN: os.Getenv(proxyNodeEnv), XDS: os.Getenv(proxyXDSEnv),
		AdminAddr: "127.0.0.1:9901", XDSBackoffBase: 20 * time.Millisecond}, log)
	if err != nil {
		log.Error("proxy", "err", err)
		return 1
	}
	if err := p.Run(ctx); err != nil {
		log.Error("proxy", "err", err)
		return 1
	}
	return 0
}

// needNamespace skips a test outside the namespace TestMain made.
func needNamespace(t *testing.T) {
	t.Helper()
	if os.Getenv(nsEnv) == "" {
		t.Skip("needs root: runs in a network namespace of its own (WEFT_CI=1 makes this a failure)")
	}
}
