package cluster

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// okHandler answers "ok".
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

// h2Upstream serves h with h2c on a loopback port and counts its open
// connections; it returns the address and the count.
func h2Upstream(t *testing.T, h http.Handler) (string, *atomic.Int32) {
	t.Helper()
	var open atomic.Int32
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }() // ends when the test closes the server
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), &open
}

// waitH2Closed waits until the upstream and the cluster count no open
// connection, for a few seconds.
func waitH2Closed(t *testing.T, c *Cluster, open *atomic.Int32, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if open.Load() == 0 && c.cxActive.Load() == 0 {
			return
		}
	}
	t.Errorf("%s: upstream sees %d open, cx_active %d, 5 s on", what, open.Load(), c.cxActive.Load())
}

// TestH2DrainReserved: a request has reserved a stream on a connection
// (x/net's transport does so before it sends) when an update removes the
// host. The connection takes no stream after the drain: the request is
// sent again on another, and the drained one closes, though no stream of
// its own ended to close it.
func TestH2DrainReserved(t *testing.T) {
	addr, open := h2Upstream(t, okHandler)
	c := h2Cluster(t, addr, 1024, 1024)
	req, _ := http.NewRequestWithContext(WithHost(context.Background(), c.Hosts()[0]), "GET", "http://"+addr+"/", nil)
	cc, err := c.h2pool.GetClientConn(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.setHosts(nil)
	if _, err := cc.RoundTrip(req); err == nil {
		t.Error("a drained connection took a stream")
	}
	waitH2Closed(t, c, open, "the drained connection")
}

// TestH2DialAfterDrain: a request that chose its host before an update
// removed it (or before the cluster was removed) dials after the drain.
// It is served, and its connection is not kept: it closes after its
// stream, as the HTTP/1.1 pool closes such a connection.
func TestH2DialAfterDrain(t *testing.T) {
	for _, halt := range []bool{false, true} {
		addr, open := h2Upstream(t, okHandler)
		c := h2Cluster(t, addr, 1024, 1024)
		rt, _ := c.Transport(2)
		h := c.Hosts()[0]
		if halt {
			c.halt()
		} else {
			c.setHosts(nil)
		}
		req, _ := http.NewRequestWithContext(WithHost(context.Background(), h), "GET", "http://"+addr+"/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("halt %v: %v", halt, err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("halt %v: %d", halt, resp.StatusCode)
		}
		if n := len(c.h2pool.conns); n != 0 {
			t.Errorf("halt %v: %d addresses pooled after the drain", halt, n)
		}
		waitH2Closed(t, c, open, "a connection dialled after the drain")
	}
}
