// Package labproxy runs weft proxies as child processes of a test binary,
// each inside a lab host (a network namespace of internal/netns). A
// proxy's sockets belong to the namespace of the thread that opens them,
// and weft proxy opens them from many goroutines: to put one in a
// namespace, the whole process runs there (ip netns exec), as `weft proxy`
// does in test/e2e. The test binary is re-executed as the proxy: its
// TestMain calls RunIfChild first.
package labproxy

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/proxy"
)

// The environment of a test binary re-executed as one weft proxy.
const (
	nodeEnv = "WEFT_TEST_PROXY_NODE"
	xdsEnv  = "WEFT_TEST_PROXY_XDS"
)

// stopWait bounds how long a proxy has to exit after SIGTERM before it is
// killed.
const stopWait = 10 * time.Second

// RunIfChild makes this process weft proxy, until SIGTERM, when Start
// started it as one; otherwise it returns at once. TestMain calls it
// before anything else.
func RunIfChild() {
	if os.Getenv(nodeEnv) == "" {
		return
	}
	os.Exit(run(os.Getenv(nodeEnv), os.Getenv(xdsEnv)))
}

func run(nodeID, xds string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := proxy.New(proxy.Config{ResourceARN: nodeID, XDS: xds,
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

// Start runs this test binary as weft proxy for nodeID (an App Mesh
// resource ARN or node id) inside h, with the xDS server at xds, until the
// test ends; a failed test logs the last lines the proxy wrote.
func Start(t testing.TB, h *netns.Host, nodeID, xds string) {
	t.Helper()
	cmd := h.Command(context.Background(), -1, os.Args[0])
	cmd.Env = append(os.Environ(), nodeEnv+"="+nodeID, xdsEnv+"="+xds)
	var stderr strings.Builder // read after the process has ended
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() // ends when the process does; Cleanup makes sure it does
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopWait):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- weft proxy %s:\n%s", nodeID, tail(stderr.String(), 30))
		}
	})
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
