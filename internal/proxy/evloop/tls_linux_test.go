package evloop

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// tlsLoops runs one loop terminating TLS with a certificate for
// "proxy.local" in front of a backend, and returns its address, the
// client's configuration (TLS 1.2: its alerts are readable on the wire)
// and the listener's stats.
func tlsLoops(t *testing.T, cfg Config, timeout time.Duration) (string, *tls.Config, *ListenerStats, *stats.Store) {
	t.Helper()
	ca := tlstest.NewCA(t, "mesh")
	b := backend(t, "a")
	st := stats.NewStore()
	sc := st.Scope("listener.", "listener_")
	ls := &ListenerStats{CxTotal: sc.Counter("cx_total"), CxDestroy: sc.Counter("cx_destroy"), CxOverflow: sc.Counter("cx_overflow"),
		CxActive: sc.Gauge("cx_active")}
	cfg.Loops, cfg.Stats, cfg.Listener = 1, st, ls
	cfg.Routes, cfg.Clusters = []Route{{Domain: "*", Prefix: "/", Cluster: "a"}}, map[string][]string{"a": {hostOf(b)}}
	cfg.TLS = &TLS{Handshake: tlsrec.Server(&tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"proxy.local"}).TLS(t)}}),
		Timeout: timeout}
	srv, _ := start(t, cfg)
	return srv.Addr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "proxy.local", MaxVersion: tls.VersionTLS12}, ls, st
}

// recordTypes is a connection that notes the type of every TLS record it
// reads (records not split across reads, as on loopback).
type recordTypes struct {
	net.Conn
	mu    sync.Mutex
	types []byte
	buf   []byte
}

func (r *recordTypes) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		l := int(r.buf[3])<<8 | int(r.buf[4])
		if len(r.buf) < 5+l {
			break
		}
		r.types = append(r.types, r.buf[0])
		r.buf = r.buf[5+l:]
	}
	return n, err
}

func (r *recordTypes) last() byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.types) == 0 {
		return 0
	}
	return r.types[len(r.types)-1]
}

// TestTLSServedAndClosedWithCloseNotify: over TLS on a loop, keep-alive
// requests are forwarded (X-Forwarded-Proto https), and a connection the
// loop ends (its idle timeout) gets close_notify before the FIN, as a
// tls.Conn's Close sends it on the goroutine path.
func TestTLSServedAndClosedWithCloseNotify(t *testing.T) {
	addr, ccfg, ls, _ := tlsLoops(t, Config{IdleTimeout: 10 * time.Millisecond}, 0)
	raw := dial(t, addr)
	rt := &recordTypes{Conn: raw}
	c := tls.Client(rt, ccfg)
	br := bufio.NewReader(c)
	for i := range 2 {
		if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if p := resp.Header.Get("X-Seen-Proto"); resp.StatusCode != 200 || p != "https" {
			t.Fatalf("request %d: %d, upstream saw X-Forwarded-Proto %q", i, resp.StatusCode, p)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the sweep runs every second
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if typ := rt.last(); typ != 21 {
		t.Errorf("last record before the close: type %d, want 21 (an alert: close_notify)", typ)
	}
	waitCounted(t, ls.CxDestroy, 1) // counted on the loop after the close
	if ls.CxActive.Value() != 0 {
		t.Errorf("listener cx_active %d, want 0", ls.CxActive.Value())
	}
}

// waitCounted waits up to 5 s for c to reach want.
func waitCounted(t *testing.T, c *stats.Counter, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Value() != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Value() != want {
		t.Fatalf("counter %d, want %d", c.Value(), want)
	}
}

// TestTLSHandshakeTimeout: a client that connects and never sends its
// ClientHello is closed when the handshake's timeout ends; it counted
// against the listener while it lasted, never as the connection
// manager's.
func TestTLSHandshakeTimeout(t *testing.T) {
	addr, _, ls, st := tlsLoops(t, Config{}, 100*time.Millisecond)
	c := dial(t, addr)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent client: %v, want EOF", err)
	}
	waitCounted(t, ls.CxDestroy, 1) // counted on the loop after the close
	if ls.CxTotal.Value() != 1 || ls.CxDestroy.Value() != 1 || ls.CxActive.Value() != 0 {
		t.Errorf("listener cx_total %d, cx_destroy %d, cx_active %d; want 1, 1, 0", ls.CxTotal.Value(), ls.CxDestroy.Value(), ls.CxActive.Value())
	}
	var sb strings.Builder
	_ = st.WriteText(&sb, nil, false)
	if !strings.Contains(sb.String(), "http.ingress.downstream_cx_total: 0\n") {
		t.Errorf("the connection manager counted a connection that never finished its handshake:\n%s", sb.String())
	}
}
