package evloop

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestIdleTimeoutClosesClient(t *testing.T) {
	b := backend(t, "a")
	srv, _ := start(t, Config{Loops: 1, IdleTimeout: 10 * time.Millisecond, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	c := dial(t, srv.Addr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the sweep runs every second
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
}

func TestHeadersTimeout(t *testing.T) {
	b := backend(t, "a")
	srv, st := start(t, Config{Loops: 1, HeadersTimeout: 10 * time.Millisecond, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	c := dial(t, srv.Addr())
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHo")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the sweep runs every second
	out, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408 ") {
		t.Errorf("answered %q, want a 408", out)
	}
	if v, _ := st.Value("http.ingress.downstream_rq_header_timeout"); v != 1 {
		t.Errorf("downstream_rq_header_timeout %d", v)
	}
}

// Connections over MaxConns are closed as they are accepted; the ones
// within it are served.
func TestConnectionCap(t *testing.T) {
	b := backend(t, "a")
	srv, _ := start(t, Config{Loops: 1, MaxConns: 2, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	var kept []net.Conn
	for range 2 {
		rs, _, c := raw(t, srv.Addr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
		if rs[0].StatusCode != 200 {
			t.Fatalf("within the cap: %d", rs[0].StatusCode)
		}
		kept = append(kept, c)
	}
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("over the cap: read %d bytes, want the connection closed", n)
	}
	// One closes: a new connection fits again.
	kept[0].Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c2, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
		c2.Close()
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection served after one closed")
		}
	}
}
