package proxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestParkedConnections: with --park-idle-after=1ns every keep-alive
// connection parks between its requests (Linux; elsewhere it waits on
// its goroutine, and the test checks the same behaviour). Parked
// connections are served again, a client's close ends one, and an LDS
// update that changes the chain closes the rest at once, counted as
// drain closes; the HCM's and the listener's active-connection gauges
// follow.
func TestParkedConnections(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ParkIdleAfter = time.Nanosecond })
	b := newBackend(t, "b")
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(httpListener("l", httpManager("old", "rds")), rc, staticCluster("c", b.addr()))
	addr := h.addr("l")

	const n, closed = 20, 5
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	cs := make([]client, n)
	for round := range 3 {
		for i := range cs {
			if round == 0 {
				cs[i].c = dialRaw(t, addr)
				cs[i].br = bufio.NewReader(cs[i].c)
			}
			path := fmt.Sprintf("/%d/%d", i, round)
			resp, err := rawGet(t, cs[i].c, cs[i].br, path)
			if err != nil || resp.StatusCode != 200 || resp.Close {
				t.Fatalf("GET %s: %v %v", path, resp, err)
			}
		}
	}
	if got := h.stat("http.old.downstream_cx_active"); got != n {
		t.Fatalf("http.old.downstream_cx_active = %d, want %d", got, n)
	}
	for _, c := range cs[:closed] {
		_ = c.c.Close()
	}
	waitUntil(t, 10*time.Second, "the closed connections to end", func() bool {
		return h.stat("http.old.downstream_cx_active") == n-closed
	})

	h.push(httpListener("l", httpManager("new", "rds")), rc, staticCluster("c", b.addr()))
	for i, c := range cs[closed:] {
		waitClosed(t, c.c, c.br, fmt.Sprintf("idle connection %d of the changed chain", closed+i))
	}
	waitUntil(t, 10*time.Second, "the drained connections to end", func() bool {
		return h.stat("http.old.downstream_cx_active") == 0
	})
	if got := h.stat("http.old.downstream_cx_drain_close"); got != n-closed {
		t.Errorf("http.old.downstream_cx_drain_close = %d, want %d", got, n-closed)
	}
	if got := h.stat("http.old.downstream_cx_idle_timeout"); got != 0 {
		t.Errorf("http.old.downstream_cx_idle_timeout = %d, want 0", got)
	}
	if got := h.stat("http.old.downstream_rq_total"); got != 3*n {
		t.Errorf("http.old.downstream_rq_total = %d, want %d", got, 3*n)
	}
}

// TestParkedConnectionsHoldCapSlots: a parked connection still holds its
// slot of the listener's connection cap (as a waiting one does), and its
// slot comes back when its client closes it.
func TestParkedConnectionsHoldCapSlots(t *testing.T) {
	const maxConns = 3
	h := newHarness(t, func(c *Config) {
		c.ParkIdleAfter = time.Nanosecond
		c.ListenerMaxConnections = maxConns
	})
	b := newBackend(t, "b")
	h.push(httpListener("l", httpManager("l", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", b.addr()))
	addr := h.addr("l")
	var held []net.Conn
	for i := range maxConns {
		c := dialRaw(t, addr)
		if resp, err := rawGet(t, c, bufio.NewReader(c), "/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", i, resp, err)
		}
		held = append(held, c)
	}
	over := dialRaw(t, addr)
	_, _ = fmt.Fprint(over, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if out := readUntilClosed(t, over); out != "" {
		t.Errorf("a connection over the cap was answered %q; want it closed", out)
	}
	if got := h.stat("listener.127.0.0.1_0.downstream_cx_overflow"); got != 1 {
		t.Errorf("downstream_cx_overflow = %d, want 1", got)
	}
	_ = held[0].Close()
	waitUntil(t, 10*time.Second, "a slot to free up", func() bool {
		return h.stat("listener.127.0.0.1_0.downstream_cx_active") < maxConns
	})
	c := dialRaw(t, addr)
	if resp, err := rawGet(t, c, bufio.NewReader(c), "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a connection after a parked one closed: %v %v", resp, err)
	}
}
