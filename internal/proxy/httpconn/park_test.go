//go:build linux

package httpconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// parked is how many connections the server's poller holds, and how many
// times a connection parked since it started.
func (s *h1Server) parked() (now int, total uint64) {
	p := s.srv.poll.Load()
	if p == nil {
		return 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns), p.next
}

func (s *h1Server) tracked() int {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	return len(s.srv.h1conns)
}

// parkCounters are a connection's counters the tests look at.
type parkCounters struct{ idleTimeout, drainClose atomic.Int64 }

// parkServer starts a server that parks connections at once, over mutual
// TLS when ca is set, with idle timeout idle (0: none).
func parkServer(t *testing.T, ca *tlstest.CA, idle time.Duration, cnt *parkCounters) *h1Server {
	t.Helper()
	var cfg *tls.Config
	if ca != nil {
		cfg = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"server"}).TLS(t)},
			ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	}
	return startH1With(t, echo, Options{ParkIdleAfter: time.Nanosecond}, func(hc *h1Conn) *h1Conn {
		if cfg != nil {
			ts := tls.Server(hc.c.Conn, cfg)
			_ = ts.SetDeadline(time.Now().Add(10 * time.Second))
			if err := ts.Handshake(); err != nil {
				t.Errorf("server handshake: %v", err)
			}
			_ = ts.SetDeadline(time.Time{})
			hc = newH1Conn(&listener.Conn{Conn: ts})
		}
		hc.idleTimeout = idle
		hc.onIdleTimeout = func() { cnt.idleTimeout.Add(1) }
		hc.onDrainClose = func() { cnt.drainClose.Add(1) }
		return hc
	})
}

// parkClient is one keep-alive client connection.
type parkClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialPark(t *testing.T, s *h1Server, ca *tlstest.CA) *parkClient {
	t.Helper()
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if ca != nil {
		tc := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "server",
			Certificates: []tls.Certificate{ca.Issue(t, []string{"client"}).TLS(t)}})
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c = tc
	}
	t.Cleanup(func() { _ = c.Close() })
	return &parkClient{c: c, br: bufio.NewReader(c)}
}

// get sends a GET for path and checks the echoed answer.
func (pc *parkClient) get(t *testing.T, path string) {
	t.Helper()
	_ = pc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(pc.c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	pc.expect(t, path)
}

func (pc *parkClient) expect(t *testing.T, path string) {
	t.Helper()
	resp, err := http.ReadResponse(pc.br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if got := body(resp); got != "GET "+path+" " || resp.Close {
		t.Fatalf("GET %s: %q, close %v", path, got, resp.Close)
	}
}

// expectClosed checks that the server closed the connection.
func (pc *parkClient) expectClosed(t *testing.T) {
	t.Helper()
	_ = pc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := pc.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("reading a connection the server should have closed: %v, want EOF", err)
	}
}

// TestParkIdleConns: keep-alive connections idle between requests hold no
// goroutine, and each is served again when its next request comes, then
// parks again; a client closing a parked connection ends it.
func TestParkIdleConns(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) {
			var ca *tlstest.CA
			if mtls {
				ca = tlstest.NewCA(t, "park")
			}
			var cnt parkCounters
			s := parkServer(t, ca, 0, &cnt)
			const n = 100
			base := runtime.NumGoroutine()
			clients := make([]*parkClient, n)
			for i := range clients {
				clients[i] = dialPark(t, s, ca)
				clients[i].get(t, fmt.Sprintf("/%d/1", i))
			}
			waitFor(t, "every connection to park", func() bool { now, _ := s.parked(); return now == n })
			// Each connection's goroutine ended: far fewer than one per
			// connection are left.
			waitFor(t, "the connections' goroutines to end", func() bool { return runtime.NumGoroutine() < base+n/4 })
			for i, pc := range clients {
				pc.get(t, fmt.Sprintf("/%d/2", i))
			}
			waitFor(t, "every connection to park again", func() bool { now, _ := s.parked(); return now == n })
			if _, total := s.parked(); total != 2*n {
				t.Errorf("%d parks, want %d", total, 2*n)
			}
			for _, pc := range clients {
				_ = pc.c.Close()
			}
			waitFor(t, "the closed connections to end", func() bool { now, _ := s.parked(); return now == 0 && s.tracked() == 0 })
			if cnt.idleTimeout.Load() != 0 || cnt.drainClose.Load() != 0 {
				t.Errorf("idle timeouts %d, drain closes %d: want none", cnt.idleTimeout.Load(), cnt.drainClose.Load())
			}
		})
	}
}

// TestParkIdleTimeout: a parked connection is closed at its idle timeout,
// and counted, as one waiting on its goroutine is.
func TestParkIdleTimeout(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) {
			var ca *tlstest.CA
			if mtls {
				ca = tlstest.NewCA(t, "park")
			}
			var cnt parkCounters
			s := parkServer(t, ca, time.Second, &cnt) // long enough that the connection parks first on a loaded machine
			pc := dialPark(t, s, ca)
			pc.get(t, "/a")
			pc.expectClosed(t)
			waitFor(t, "the connection to end", func() bool { return s.tracked() == 0 })
			if _, total := s.parked(); total != 1 {
				t.Errorf("%d parks, want 1", total)
			}
			if got := cnt.idleTimeout.Load(); got != 1 {
				t.Errorf("%d idle timeouts counted, want 1", got)
			}
		})
	}
}

// TestParkDrain: draining (shutdown, or a listener update) closes parked
// connections at once, and counts them.
func TestParkDrain(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) {
			var ca *tlstest.CA
			if mtls {
				ca = tlstest.NewCA(t, "park")
			}
			var cnt parkCounters
			s := parkServer(t, ca, 0, &cnt)
			const n = 5
			clients := make([]*parkClient, n)
			for i := range clients {
				clients[i] = dialPark(t, s, ca)
				clients[i].get(t, "/a")
			}
			waitFor(t, "the connections to park", func() bool { now, _ := s.parked(); return now == n })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.srv.drain(ctx)
			for _, pc := range clients {
				pc.expectClosed(t)
			}
			if s.tracked() != 0 {
				t.Errorf("%d connections left after the drain", s.tracked())
			}
			if got := cnt.drainClose.Load(); got != n {
				t.Errorf("%d drain closes counted, want %d", got, n)
			}
		})
	}
}

// holdConn collects what is written to it until release, which sends it
// in one write: several TLS records reach the server in one segment.
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  bytes.Buffer
}

func (c *holdConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *holdConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	_, err := c.Conn.Write(c.buf.Bytes())
	return err
}

// TestParkPipelined: a request that arrived with the previous one is
// served at once, without parking: bytes in the connection's read buffer,
// and over TLS a whole record crypto/tls read along with the previous one
// (the socket has nothing more to announce). A wrong park would leave the
// request unanswered until the test's deadline.
func TestParkPipelined(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) {
		var cnt parkCounters
		s := parkServer(t, nil, 0, &cnt)
		pc := dialPark(t, s, nil)
		pc.get(t, "/first")
		waitFor(t, "the connection to park", func() bool { now, _ := s.parked(); return now == 1 })
		_ = pc.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(pc.c, "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/a", "/b", "/c"} {
			pc.expect(t, p)
		}
		waitFor(t, "the connection to park again", func() bool { now, _ := s.parked(); return now == 1 })
		if _, total := s.parked(); total != 2 {
			t.Errorf("%d parks, want 2 (none between pipelined requests)", total)
		}
	})
	t.Run("tls records", func(t *testing.T) {
		ca := tlstest.NewCA(t, "park")
		var cnt parkCounters
		s := parkServer(t, ca, 0, &cnt)
		raw, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		hold := &holdConn{Conn: raw}
		tc := tls.Client(hold, &tls.Config{RootCAs: ca.Pool(), ServerName: "server",
			Certificates: []tls.Certificate{ca.Issue(t, []string{"client"}).TLS(t)}})
		t.Cleanup(func() { _ = tc.Close() })
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		pc := &parkClient{c: tc, br: bufio.NewReader(tc)}
		pc.get(t, "/first")
		waitFor(t, "the connection to park", func() bool { now, _ := s.parked(); return now == 1 })
		hold.mu.Lock()
		hold.hold = true
		hold.mu.Unlock()
		for _, p := range []string{"/a", "/b", "/c"} {
			if _, err := fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", p); err != nil { // one record each
				t.Fatal(err)
			}
		}
		if err := hold.release(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/a", "/b", "/c"} {
			pc.expect(t, p)
		}
		waitFor(t, "the connection to park again", func() bool { now, _ := s.parked(); return now == 1 })
		if _, total := s.parked(); total != 2 {
			t.Errorf("%d parks, want 2 (none between pipelined requests)", total)
		}
	})
}
