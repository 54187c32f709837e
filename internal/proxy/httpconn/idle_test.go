//go:build linux

package httpconn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return server, client
}

// waitAndRead waits for a request on hc as its connection loop does
// between requests, sends raw from the client end and reads the request
// from hc's read buffer. Reads are bounded by a deadline, so bytes lost
// while waiting fail the test instead of hanging it.
func waitAndRead(t *testing.T, hc *h1Conn, client io.Writer, raw string) *http.Request {
	t.Helper()
	_ = hc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	done := make(chan error, 1)
	go func() { done <- hc.waitRequest() }() // ends when the request's first bytes arrive, or at the deadline
	if _, err := io.WriteString(client, raw); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	req, err := http.ReadRequest(hc.br)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestIdleReader: a keep-alive connection waiting for its next request
// without its read buffer gets the request's bytes, its read deadline and
// the client's close as it would with the buffer.
func TestIdleReader(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		srv, cl := tcpPair(t)
		hc := newH1Conn(&listener.Conn{Conn: srv})
		if hc.idle == nil {
			t.Fatal("a TCP connection has no idle reader")
		}
		req := waitAndRead(t, hc, cl, "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-One: 1\r\n\r\n")
		if req.Method != http.MethodGet || req.URL.RequestURI() != "/a?b=c" || req.Host != "x" || req.Header.Get("X-One") != "1" {
			t.Fatalf("read %s %s host %q headers %v", req.Method, req.URL, req.Host, req.Header)
		}
	})
	t.Run("tls", func(t *testing.T) {
		srv, cl := tcpPair(t)
		ts, tc := tlsPair(t, srv, cl)
		hc := newH1Conn(&listener.Conn{Conn: ts})
		if !hc.tls || hc.idle != nil {
			t.Fatalf("a TLS connection waits with tls %v, idle reader %v", hc.tls, hc.idle != nil)
		}
		for i := range 2 {
			big := strings.Repeat("v", 2*h1BufSize)
			req := waitAndRead(t, hc, tc, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", i, big))
			if req.Method != http.MethodGet || req.URL.Path != "/"+strconv.Itoa(i) || req.Header.Get("X-Big") != big {
				t.Fatalf("request %d read as %s %s with X-Big of %d bytes", i, req.Method, req.URL, len(req.Header.Get("X-Big")))
			}
		}
		_ = tc.Close()
		if err := hc.waitRequest(); err == nil {
			t.Fatal("waiting on a TLS connection the client closed: no error")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		srv, _ := tcpPair(t)
		hc := newH1Conn(&listener.Conn{Conn: srv})
		_ = srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		err := hc.waitRequest()
		if !isTimeout(err) {
			t.Fatalf("waiting past the read deadline: %v, want a timeout", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		srv, cl := tcpPair(t)
		hc := newH1Conn(&listener.Conn{Conn: srv})
		_ = cl.Close()
		if err := hc.waitRequest(); err != io.EOF {
			t.Fatalf("waiting on a connection the client closed: %v, want EOF", err)
		}
	})
}

// TestH1IdleKeepAlive: requests sent one at a time on one connection, so
// that it waits idle between them (without its buffers), are served as
// those sent at once: bodies longer than the read buffer, a head that
// arrives in pieces, and a head over the limit after an idle wait.
func TestH1IdleKeepAlive(t *testing.T) {
	s := startH1(t, func(_ context.Context, w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s %s %d", r.Method, r.URL.Path, r.Header.Get("X-N"), n)
	})
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(pieces ...string) *http.Response {
		t.Helper()
		for _, p := range pieces {
			if _, err := io.WriteString(c, p); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		return resp
	}
	body := func(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }
	for i := range 3 {
		r := roundTrip("GET /g HTTP/1.1\r\nHo", "st: x\r\nX-N: "+strconv.Itoa(i)+"\r\n\r\n")
		if got, want := body(r), "GET /g "+strconv.Itoa(i)+" 0"; got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
	}
	big := strings.Repeat("b", 3*h1BufSize+17)
	r := roundTrip("POST /p HTTP/1.1\r\nHost: x\r\nX-N: big\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big[:100], big[100:])
	if got, want := body(r), "POST /p big "+strconv.Itoa(len(big)); got != want {
		t.Fatalf("long body: %q, want %q", got, want)
	}
	r = roundTrip("GET /h HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("l", maxHeaderBytes) + "\r\n\r\n")
	if r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a head over the limit after an idle wait: %d, want 431", r.StatusCode)
	}
}
