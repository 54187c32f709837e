package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

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

// TestEvloopServesPlaintextListeners: on the event loops, a
// plaintext HTTP/1.1 listener is served by the event loops, which forward
// as the goroutine path does (weft's headers, stats); a request whose
// route adds response headers is handed to the goroutine path with its
// connection, and answered as before; a listener with an access log is
// on the loops too.
func TestEvloopServesPlaintextListeners(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	b := newBackend(t, "b")
	rw := routeTo("/rw/", "c")
	rw.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "1"}}}
	rw.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added-response", Value: "1"}}}
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		httpListener("logged", httpManager("logged", "rds", withAccessLog(os.DevNull, nil))),
		routeConfig("rds", vhost("v", []string{"*"}, rw, routeTo("/", "c"))),
		edsCluster("c"), cla("c", b.addr()))
	l := h.listener("egress")
	if !l.OnLoops() {
		t.Fatal("the plaintext listener is not on the event loops")
	}
	if !h.listener("logged").OnLoops() {
		t.Error("a listener with an access log is not on the event loops")
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
	if resp.StatusCode != 200 || e.Path != "/rw/y" || e.Header.Get("X-Added") != "1" {
		t.Fatalf("route adding a header: %d %q", resp.StatusCode, body)
	}
	if n := l.HandedOff(); n != 1 {
		t.Errorf("%d connections handed off, want 1 (the header-adding route's)", n)
	}
	// The handed-off connection stays with the goroutine path.
	if resp, _, _ := get(t, c, h.addr("egress"), "svc.local", "/a"); resp.StatusCode != 200 || l.HandedOff() != 1 {
		t.Errorf("after the hand-off: %d, %d handed off", resp.StatusCode, l.HandedOff())
	}
}

// TestEvloopServesMatchedChain: App Mesh's ingress listener, the
// original_dst listener filter and one filter chain with a match (there
// the app's port; here the destination address, which a test can choose
// without NAT), is on the event loops. A connection the chain matches is
// served by the loops; one it does not match is handed off at accept and
// closed for want of a chain, as the goroutine path closes it.
func TestEvloopServesMatchedChain(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	b := newBackend(t, "b")
	ingress := func(name, dst string) *listenerv3.Listener {
		l := httpListener(name, httpManager(name, "rds"))
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&originaldstv3.OriginalDst{})}}}
		l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{
			PrefixRanges: []*corev3.CidrRange{{AddressPrefix: dst, PrefixLen: wrapperspb.UInt32(32)}}}
		return l
	}
	h.push(ingress("in", "127.0.0.1"), ingress("elsewhere", "127.0.0.2"),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), cla("c", b.addr()))
	in, elsewhere := h.listener("in"), h.listener("elsewhere")
	if !in.OnLoops() || !elsewhere.OnLoops() {
		t.Fatalf("on the loops: %v, %v; want both", in.OnLoops(), elsewhere.OnLoops())
	}
	c := newClient(t)
	for range 3 {
		if resp, _, body := get(t, c, h.addr("in"), "svc.local", "/a"); resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	if n := in.HandedOff(); n != 0 {
		t.Fatalf("%d connections handed off, want the loops to serve them", n)
	}
	if resp, err := c.Get("http://" + h.addr("elsewhere") + "/a"); err == nil {
		resp.Body.Close()
		t.Fatalf("a connection no chain matches was answered %d", resp.StatusCode)
	}
	if n := elsewhere.HandedOff(); n == 0 {
		t.Error("the connection no chain matches was not handed off")
	}
	waitUntil(t, 10*time.Second, "no_filter_chain_match", func() bool {
		return h.stat("listener.127.0.0.1_0.no_filter_chain_match") >= 1
	})
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
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	retry := routeTo("/", "c")
	retry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(3)}
	checkClientErrorsAreDownstreamErrors(t, h, retry, false)
	if n := h.listener("egress").HandedOff(); n != 0 {
		t.Errorf("%d connections handed off: the test is not the loops'", n)
	}
}

// TestEvloopUpdateOffTheLoops: an update that makes a listener on the
// loops PERMISSIVE (two chains told apart by the TLS inspector, which the
// loops do not run) keeps its socket; from then on its connections go to
// the goroutine path as they are accepted, and are served with TLS or
// without.
func TestEvloopUpdateOffTheLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
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
	h.push(permissiveListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}), rc, cl, ep)
	if h.listener("ingress") != l {
		t.Fatal("the update replaced the listener")
	}
	if code, _, err := tlsGet(h.addr("ingress"), clientTLS(ca, "svc.local")); err != nil || code != 200 {
		t.Fatalf("TLS after the update: %d %v", code, err)
	}
	if code, err := plainGet(h.addr("ingress")); err != nil || code != 200 {
		t.Errorf("plaintext after the update: %d %v", code, err)
	}
	if n := l.LoopTLSConns(); n != 0 {
		t.Errorf("%d connections served over TLS on the loops, want none (the inspector's listener is off them)", n)
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
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
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
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
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

// TestEvloopAccessLogSameLines: a listener with access logs goes to the
// loops, and its lines are the goroutine path's for the same requests
// (a proxy without the flag, same configuration, same backends), in
// Envoy's default format and in one with the cluster, response headers
// and addresses; only the times and generated request IDs differ.
func TestEvloopAccessLogSameLines(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	ok, bad := newBackend(t, "ok"), newBackend(t, "bad")
	bad.set(502, -1)
	dead := newBackend(t, "dead")
	deadAddr := dead.addr()
	dead.srv.Close()
	slow := newBackend(t, "slow")
	slow.slow = 10 * time.Second
	perTry := retryRoute("slow", "5xx", 0)
	perTry.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(50 * time.Millisecond)
	perTry.Name = "per-try"
	// A chunked response: its framing is not counted in the bytes sent.
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			_, _ = io.WriteString(w, "part;")
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(chunked.Close)
	custom := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESP(CONTENT-TYPE)% " +
		"%RESP(SERVER)% %REQ(:AUTHORITY)% %PROTOCOL% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% " +
		"%RESPONSE_CODE_DETAILS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %ROUTE_NAME% %CONNECTION_ID% %REQ(CACHE-CONTROL)% " +
		"%REQ(TRANSFER-ENCODING)% %REQ(:SCHEME)% %REQ_WITHOUT_QUERY(:PATH)% %REQ(HOST)% %RESP(TRANSFER-ENCODING)% %REQ(X-REQUEST-ID)%\n"}}
	run := func(loops bool) (string, string) {
		h := newHarness(t, func(c *Config) { c.Goroutines = !loops })
		dir := t.TempDir()
		def, cus := filepath.Join(dir, "default.log"), filepath.Join(dir, "custom.log")
		// The retried route has a virtual host of its own: retryRoute
		// matches every path.
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(def, nil), withAccessLog(cus, custom))),
			routeConfig("rds", vhost("bad", []string{"bad.local"}, retryRoute("bad", "gateway-error", 1)),
				vhost("slow", []string{"slow.local"}, perTry),
				vhost("chunked", []string{"chunked.local"}, routeTo("/", "chunked")),
				vhost("v", []string{"*"}, routeTo("/dead", "dead"), routeTo("/", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("dead"), cla("dead", deadAddr),
			edsCluster("bad"), cla("bad", bad.addr()), edsCluster("slow"), cla("slow", slow.addr()),
			edsCluster("chunked"), cla("chunked", strings.TrimPrefix(chunked.URL, "http://")))
		c := newClient(t)
		addr := h.addr("egress")
		send := func(method, host, path, body string, hdr ...string) {
			t.Helper()
			req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
			if body == "" {
				req.Body = nil
			}
			req.Host = host
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		send("GET", "svc.local", "/a?q=1", "", "User-Agent", "ua-1", "X-Forwarded-For", "10.0.0.1", "X-Request-Id", "id-1")
		send("POST", "svc.local:8080", "/b", "hello", "X-Request-Id", "id-2")
		send("GET", "bad.local", "/retried", "", "X-Request-Id", "id-3")
		send("GET", "svc.local", "/dead", "", "X-Request-Id", "id-4")
		send("GET", "svc.local", "/generated", "")
		send("GET", "slow.local", "/pertry", "", "X-Request-Id", "id-6")
		send("GET", "chunked.local", "/", "", "X-Request-Id", "id-7")
		// As a client may send it: a path net/url escapes again, a
		// Pragma standing in for Cache-Control, a chunked body.
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_, _ = io.WriteString(raw, "POST /raw/{a}|b?q={x} HTTP/1.1\r\nHost: svc.local\r\nPragma: no-cache\r\n"+
			"X-Request-Id: id-8\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(raw), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("raw request: %v %v", resp, err)
		}
		const lines = 8
		var d, u []byte
		waitUntil(t, 5*time.Second, "the access log lines", func() bool {
			d, _ = os.ReadFile(def)
			u, _ = os.ReadFile(cus)
			return bytes.Count(d, []byte("\n")) == lines && bytes.Count(u, []byte("\n")) == lines
		})
		if l := h.listener("egress"); l.OnLoops() != loops || l.HandedOff() != 0 {
			t.Fatalf("on the loops %v (want %v), %d connections handed off", l.OnLoops(), loops, l.HandedOff())
		}
		return string(d), string(u)
	}
	gd, gc := run(false)
	ld, lc := run(true)
	for _, tc := range []struct{ name, goroutines, loops string }{{"default", gd, ld}, {"custom", gc, lc}} {
		// Sorted: the requests' connections are on different loops, and
		// a line is written when its loop is done with the request, which
		// can be after its client sent the next one (the order within a
		// sink is TestSinksCloseWritesEverything's).
		g, l := sortLines(normalizeLog(tc.goroutines)), sortLines(normalizeLog(tc.loops))
		if g != l {
			t.Errorf("%s format:\ngoroutine path:\n%s\nloops:\n%s", tc.name, tc.goroutines, tc.loops)
		}
	}
}

var (
	logTimes = regexp.MustCompile(`(?m)^\[[^]]*\] ("[^"]*" \d+ \S+ \d+ \d+) \d+ (-|\d+) `)
	logUUID  = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`)
)

func sortLines(s string) string {
	l := strings.Split(s, "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

// normalizeLog masks what differs between two runs: the start times and
// durations (the default format's), a generated request ID.
func normalizeLog(s string) string {
	s = logTimes.ReplaceAllStringFunc(s, func(m string) string {
		sub := logTimes.FindStringSubmatch(m)
		st := "-"
		if sub[2] != "-" {
			st = "N"
		}
		return "[T] " + sub[1] + " D " + st + " "
	})
	return logUUID.ReplaceAllString(s, "UUID")
}

// TestEvloopRequestIDMatcher: a route matching on x-request-id sees the
// ID the proxy generates for a request without one, as on the goroutine
// path (the loops hand such requests to it); requests with an ID stay on
// the loops.
func TestEvloopRequestIDMatcher(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	a, b := newBackend(t, "a"), newBackend(t, "b")
	withID := routeTo("/", "a")
	withID.Match.Headers = []*routev3.HeaderMatcher{{Name: "x-request-id",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, withID, routeTo("/", "b"))),
		edsCluster("a"), cla("a", a.addr()), edsCluster("b"), cla("b", b.addr()))
	l := h.listener("egress")
	if _, e, body := get(t, newClient(t), h.addr("egress"), "x", "/", "X-Request-Id", "rid-1"); e.Backend != "a" {
		t.Fatalf("with an ID: %q %s", e.Backend, body)
	}
	if n := l.HandedOff(); n != 0 {
		t.Fatalf("%d connections handed off, want the loops to serve a request with an ID", n)
	}
	if _, e, body := get(t, newClient(t), h.addr("egress"), "x", "/"); e.Backend != "a" {
		t.Fatalf("without an ID: went to %q, want a (the generated ID matches) %s", e.Backend, body)
	}
}

// TestEvloopRetriesGRPCStatus: a route retrying on "unavailable" (App
// Mesh's default HTTP retry policy has it) is the loops' (nothing handed
// off); a response whose head says grpc-status 14 is retried on the
// other host, one saying 13 is not, as on the goroutine path
// (WEFT_PROXY_TEST_EVLOOP=0).
func TestEvloopRetriesGRPCStatus(t *testing.T) {
	h := newHarness(t)
	grpcBackend := func(name string, status *atomic.Value) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Grpc-Status", status.Load().(string))
			_, _ = io.WriteString(w, name)
		}))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	var failing, fine atomic.Value
	failing.Store("14")
	fine.Store("0")
	a, b := grpcBackend("a", &failing), grpcBackend("b", &fine)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "connect-failure,reset,unavailable", 2))),
		edsCluster("c"), cla("c", a, b))
	c := newClient(t)
	for i := range 6 {
		resp, _, body := get(t, c, h.addr("egress"), "x", "/")
		if resp.StatusCode != 200 || body != "b" {
			t.Fatalf("request %d: %d %q, want b's answer (a's grpc-status 14 retried)", i, resp.StatusCode, body)
		}
	}
	if n := h.stat("cluster.c.upstream_rq_retry"); n < 1 {
		t.Errorf("upstream_rq_retry = %d, want a's answers retried", n)
	}
	failing.Store("13")
	before := h.stat("cluster.c.upstream_rq_retry")
	sawA := false
	for range 6 {
		_, _, body := get(t, c, h.addr("egress"), "x", "/")
		sawA = sawA || body == "a"
	}
	if !sawA || h.stat("cluster.c.upstream_rq_retry") != before {
		t.Errorf("grpc-status 13 under 'unavailable': a answered %v, retries %d -> %d; want a's answers, no retry",
			sawA, before, h.stat("cluster.c.upstream_rq_retry"))
	}
	if l := h.listener("egress"); l.OnLoops() && l.HandedOff() != 0 {
		t.Errorf("%d connections handed off: the loops do not serve the gRPC retry conditions", l.HandedOff())
	}
}
