package proxy

import (
	"os"
	"runtime"
	"testing"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

func (h *harness) listener(name string) *listener.Listener {
	h.t.Helper()
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	l := h.p.listeners[name]
	if l == nil {
		h.t.Fatalf("no listener %s", name)
	}
	return l
}

// TestEvloopServesPlaintextListeners: with --experimental-evloop, a
// plaintext HTTP/1.1 listener is served by the event loops, which forward
// as the goroutine path does (weft's headers, stats); a request whose
// route rewrites the path is handed to the goroutine path with its
// connection, and answered as before; a listener with an access log stays
// off the loops.
func TestEvloopServesPlaintextListeners(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.ExperimentalEvloop = true })
	b := newBackend(t, "b")
	rw := routeTo("/rw/", "c")
	rw.GetRoute().PrefixRewrite = "/x/"
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		httpListener("logged", httpManager("logged", "rds", withAccessLog(os.DevNull, nil))),
		routeConfig("rds", vhost("v", []string{"*"}, rw, routeTo("/", "c"))),
		edsCluster("c"), cla("c", b.addr()))
	l := h.listener("egress")
	if !l.OnLoops() {
		t.Fatal("the plaintext listener is not on the event loops")
	}
	if h.listener("logged").OnLoops() {
		t.Error("a listener with an access log is on the event loops")
	}
	c := newClient(t)
	for range 3 {
		resp, e, body := get(t, c, h.addr("egress"), "svc.local", "/a?q=1")
		if resp.StatusCode != 200 || e.Path != "/a?q=1" || e.Header.Get("X-Request-Id") == "" ||
			e.Header.Get("X-Forwarded-Proto") != "http" || resp.Header.Get("Server") != "envoy" {
			t.Fatalf("%d %q %+v", resp.StatusCode, body, e)
		}
	}
	if n := l.HandedOff(); n != 0 {
		t.Fatalf("%d connections handed off, want the loops to serve them", n)
	}
	for name, want := range map[string]int64{"http.egress.downstream_rq_2xx": 3, "cluster.c.upstream_rq_2xx": 3,
		"listener.127.0.0.1_0.downstream_cx_total": 1} {
		if got := h.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	resp, e, body := get(t, c, h.addr("egress"), "svc.local", "/rw/y")
	if resp.StatusCode != 200 || e.Path != "/x/y" || e.Header.Get("X-Envoy-Original-Path") != "/rw/y" {
		t.Fatalf("rewritten route: %d %q", resp.StatusCode, body)
	}
	if n := l.HandedOff(); n != 1 {
		t.Errorf("%d connections handed off, want 1 (the rewritten route's)", n)
	}
	// The handed-off connection stays with the goroutine path.
	if resp, _, _ := get(t, c, h.addr("egress"), "svc.local", "/a"); resp.StatusCode != 200 || l.HandedOff() != 1 {
		t.Errorf("after the hand-off: %d, %d handed off", resp.StatusCode, l.HandedOff())
	}
}
