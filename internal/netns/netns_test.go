package netns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/netns/netnstest"
)

// TestLab builds two hosts, checks they reach each other and only each
// other's addresses, and that Close and Sweep remove exactly what they
// should.
func TestLab(t *testing.T) {
	netnstest.Require(t)
	ctx := context.Background()
	const family = "wftn"
	Sweep(ctx, family)

	// A leftover of a run whose process is gone, and nothing more.
	dead := deadPID(t)
	stale := Prefix(family, dead) + "-old"
	if err := ip(ctx, "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNamespace(context.Background(), stale) })

	lab, err := New(ctx, family, netip.MustParsePrefix("10.251.201.0/24"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			lab.Close()
		}
	})
	a, err := lab.AddHost(ctx, "a", netip.MustParseAddr("10.251.201.2"), HostOptions{Nameserver: netip.MustParseAddr("10.251.201.3"), Search: []string{"colors.local"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost(ctx, "b", netip.MustParseAddr("10.251.201.3"), HostOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A listener in b, reached from a (in-process, through Do) and from a
	// command in a (ip netns exec, with a's resolv.conf).
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.251.201.3:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from b"))
			c.Close()
		}
	}()
	var conn net.Conn
	if err := a.Do(func() (err error) { conn, err = net.Dial("tcp4", ln.Addr().String()); return err }); err != nil {
		t.Fatalf("dial b from a: %v", err)
	}
	conn.Close()
	if _, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
		t.Error("b's address answered from the root namespace: the lab leaks into the host")
	}
	out, err := a.Command(ctx, -1, "cat", "/etc/resolv.conf").Output()
	if err != nil || !strings.Contains(string(out), "nameserver 10.251.201.3\nsearch colors.local\n") {
		t.Errorf("resolv.conf inside a = %q (%v)", out, err)
	}
	out, err = a.Command(ctx, 1337, "id", "-u").Output()
	if err != nil || strings.TrimSpace(string(out)) != "1337" {
		t.Errorf("id -u as 1337 inside a = %q (%v)", out, err)
	}

	removed, err := Sweep(ctx, family)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{stale}) {
		t.Errorf("Sweep removed %v, want only the dead run's %s", removed, stale)
	}
	if _, err := os.Stat("/run/netns/" + a.Name); err != nil {
		t.Errorf("Sweep removed the live lab's namespace: %v", err)
	}

	// Sockets hold their namespace: close ours first, or the kernel keeps
	// b (and its veth) until they go.
	ln.Close()
	closed = true
	if err := lab.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := Remaining(ctx, lab.Prefix()); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}
}

// deadPID returns a process id that no process has now.
func deadPID(t *testing.T) int {
	t.Helper()
	for pid := 4_000_000; pid > 1_000_000; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}
