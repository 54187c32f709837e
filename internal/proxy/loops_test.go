package proxy

import (
	"os"
	"runtime"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
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

// TestEvloopClientErrorsAreDownstreamErrors is TestClientErrorsAreDownstreamErrors
// on the event loops themselves: a retry policy they implement (no
// per-try timeout), so that nothing is handed off. Bad chunking is a 400
// and a protocol error, a client gone mid-body is a reset, neither is
// retried nor held against the hosts.
func TestEvloopClientErrorsAreDownstreamErrors(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.ExperimentalEvloop = true })
	retry := routeTo("/", "c")
	retry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(3)}
	checkClientErrorsAreDownstreamErrors(t, h, retry, false)
	if n := h.listener("egress").HandedOff(); n != 0 {
		t.Errorf("%d connections handed off: the test is not the loops'", n)
	}
}

// TestEvloopUpdateOffTheLoops: an update that makes a listener on the
// loops TLS-only keeps its socket; from then on its connections go to the
// goroutine path as they are accepted, and are served with TLS.
func TestEvloopUpdateOffTheLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.ExperimentalEvloop = true })
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	rc, cl, ep := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), cla("c", a.addr())
	h.push(httpListener("ingress", httpManager("ingress", "rds")), rc, cl, ep)
	l := h.listener("ingress")
	if !l.OnLoops() {
		t.Fatal("the plaintext listener is not on the loops")
	}
	if code, err := plainGet(h.addr("ingress")); err != nil || code != 200 {
		t.Fatalf("plaintext on the loops: %d %v", code, err)
	}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}), rc, cl, ep)
	if h.listener("ingress") != l {
		t.Fatal("the update replaced the listener")
	}
	if code, _, err := tlsGet(h.addr("ingress"), clientTLS(ca, "svc.local")); err != nil || code != 200 {
		t.Fatalf("TLS after the update: %d %v", code, err)
	}
	if code, err := plainGet(h.addr("ingress")); err == nil && code == 200 {
		t.Error("plaintext still served after the listener became TLS-only")
	}
	if l.HandedOff() < 2 {
		t.Errorf("%d connections handed off, want the two after the update", l.HandedOff())
	}
}

// TestEvloopRetries is TestRetries on the event loops (no access log, so
// that the listener is theirs): retries on another host after the
// policy's back-off, the cluster's retry budget and the retry stats, as
// the goroutine path does; nothing handed off.
func TestEvloopRetries(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.ExperimentalEvloop = true })
	checkRetries(t, h, "")
	l := h.listener("egress")
	if !l.OnLoops() {
		t.Fatal("the listener is not on the event loops")
	}
	if n := l.HandedOff(); n != 0 {
		t.Errorf("%d connections handed off: the test is not the loops'", n)
	}
}

// TestEvloopPerTryTimeout: on the loops, an attempt that outlives the
// route's per-try timeout is counted and retried on the other host.
func TestEvloopPerTryTimeout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.ExperimentalEvloop = true })
	slow, fast := newBackend(t, "slow"), newBackend(t, "fast")
	slow.slow = 10 * time.Second
	perTry := retryRoute("mixed", "5xx", 1)
	perTry.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(50 * time.Millisecond)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, perTry)),
		edsCluster("mixed"), cla("mixed", slow.addr(), fast.addr()))
	c := newClient(t)
	for range 4 {
		resp, e, body := get(t, c, h.addr("egress"), "x", "/pertry")
		if resp.StatusCode != 200 || e.Backend != "fast" {
			t.Fatalf("status %d %s", resp.StatusCode, body)
		}
	}
	if got := h.stat("cluster.mixed.upstream_rq_per_try_timeout"); got < 1 {
		t.Errorf("upstream_rq_per_try_timeout = %d", got)
	}
	if n := h.listener("egress").HandedOff(); n != 0 {
		t.Errorf("%d connections handed off: the test is not the loops'", n)
	}
}
