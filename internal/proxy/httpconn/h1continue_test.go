package httpconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

func TestH1ExpectContinue(t *testing.T) {
	var sawExpect string
	srv := startH1(t, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		sawExpect = r.Header.Get("Expect")
		echo(ctx, w, r)
	})
	c, err := net.Dial("tcp", srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("before the body: %v %v, want 100 Continue", resp, err)
	}
	_, _ = io.WriteString(c, "data")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || body(resp) != "POST /up data" {
		t.Fatalf("%v %v", resp, err)
	}
	if sawExpect != "" {
		t.Errorf("the handler saw Expect: %q; the proxy answers it and does not forward it", sawExpect)
	}
}

// TestH1ContinueWriteBounded: a client that asks for 100-continue and
// reads nothing, its connection's send buffer full (net.Pipe: every write
// waits for the reader), holds the connection no longer than the idle
// timeout: the 100 Continue's write gives up, the connection closes,
// counted as an idle timeout, and the request goes no further. The write
// had no deadline: the connection's goroutine waited for good.
func TestH1ContinueWriteBounded(t *testing.T) {
	pipes := make(chan net.Conn, 1)
	var ran, idle atomic.Int32
	srv := startH1With(t, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
	}, Options{}, func(hc *h1Conn) *h1Conn {
		server, client := net.Pipe()
		pipes <- client
		hc = newH1Conn(&listener.Conn{Conn: server})
		hc.idleTimeout = 100 * time.Millisecond
		hc.onIdleTimeout = func() { idle.Add(1) }
		return hc
	})
	raw, err := net.Dial("tcp", srv.ln.Addr().String()) // accepted, then served over the pipe
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := <-pipes
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Not read: the server's end is closed once its write gave up, and a
	// write to the pipe then fails at once (else it waits for its
	// deadline, the server reading nothing while it writes).
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := c.Write([]byte("d"))
		if errors.Is(err, io.ErrClosedPipe) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the connection still open after 5 s (last write: %v), want it closed after the idle timeout (100 ms)", err)
		}
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("the handler ran %d times, want none", n)
	}
	if n := idle.Load(); n != 1 {
		t.Errorf("%d idle timeouts counted, want 1", n)
	}
}

// TestH1ExpectContinueBeforeHandler: 100 Continue goes out as soon as the
// head is read, as Envoy's connection manager sends it, before the handler
// runs; a handler that answers without reading the body leaves it to be
// drained, and the next request on the connection is served.
func TestH1ExpectContinueBeforeHandler(t *testing.T) {
	var requests atomic.Int32
	srv := startH1(t, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		echo(ctx, w, r)
	})
	c, err := net.Dial("tcp", srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("%v %v, want 100 Continue before the handler's answer", resp, err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusNotFound || resp.Close {
		t.Fatalf("%v %v, want the handler's 404, the connection kept", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_, _ = io.WriteString(c, "dataGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || body(resp) != "GET /next " {
		t.Fatalf("after the drained body: %v %v, want the next request served", resp, err)
	}
}
