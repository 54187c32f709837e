//go:build linux

package listener

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/stats"

	"github.com/weftmesh/weft/internal/netns/netnstest"
)

// TestOriginalDstWithoutNAT: a connection nobody redirected has no
// original destination, or the one it was sent to; never an error.
func TestOriginalDstWithoutNAT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	od, ok, err := OriginalDst(s)
	if err != nil {
		t.Fatal(err)
	}
	if ok && od.String() != ln.Addr().String() {
		t.Fatalf("original destination %v of a direct connection to %v", od, ln.Addr())
	}
}

type recordHandler struct {
	name string
	got  chan string
}

func (h recordHandler) ServeConn(_ context.Context, c *Conn) {
	defer c.Close()
	h.got <- fmt.Sprintf("%s %s", h.name, c.Dst)
	_, _ = io.WriteString(c, "ok")
}

// TestOriginalDstAfterREDIRECT runs a listener in a fresh network
// namespace behind a real iptables REDIRECT, as ECS's APPMESH
// proxyConfiguration sets up, and checks that the original destination
// port picks the filter chain.
func TestOriginalDstAfterREDIRECT(t *testing.T) {
	netnstest.Require(t, "iptables")
	ns := fmt.Sprintf("weftpx-%d", os.Getpid())
	run := func(args ...string) error {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Fatalf("create a network namespace: %v", err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", ns) })
	if err := run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	if err := run("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.2",
		"-j", "REDIRECT", "--to-ports", "15001"); err != nil {
		t.Fatalf("iptables nat: %v", err)
	}

	got := make(chan string, 4)
	cfg := &Config{Name: "lds_egress", Addr: "127.0.0.1:15001", OriginalDst: true,
		Chains: []Chain{
			{Name: "port 8080", Match: Match{DstPort: 8080}, Handler: recordHandler{"8080", got}},
			{Name: "port 9090", Match: Match{DstPort: 9090}, Handler: recordHandler{"9090", got}},
		},
		Default: &Chain{Name: "default", Handler: recordHandler{"default", got}}}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	var ids atomic.Uint64
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type result struct {
		l   *Listener
		out []string
		err error
	}
	done := make(chan result, 1)
	go func() { // runs in the namespace; its thread dies with it (locked, never unlocked)
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		l, err := Listen(cfg, stats.NewStore(), &ids, log)
		if err != nil {
			done <- result{err: err}
			return
		}
		l.Serve(context.Background())
		var out []string
		for _, dst := range []string{"127.0.0.2:8080", "127.0.0.2:9090", "127.0.0.2:7070"} {
			// Sockets belong to the namespace of the thread that creates them.
			c, err := net.DialTimeout("tcp", dst, 5*time.Second)
			if err != nil {
				done <- result{l: l, err: err}
				return
			}
			b, _ := io.ReadAll(c)
			c.Close()
			out = append(out, string(b))
		}
		done <- result{l: l, out: out}
	}()
	r := <-done
	if r.l != nil {
		defer func() { r.l.Stop(); r.l.Wait() }()
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := []string{"8080 127.0.0.2:8080", "9090 127.0.0.2:9090", "default 127.0.0.2:7070"}
	for i, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Errorf("connection %d: chain and destination %q, want %q", i, g, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d never reached a chain", i)
		}
	}
	for i, o := range r.out {
		if o != "ok" {
			t.Errorf("connection %d read %q", i, o)
		}
	}
	_ = netip.AddrPort{}
}
