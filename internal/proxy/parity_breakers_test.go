package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// overflowBody is the local reply to a request the circuit breakers
// refuse, as Envoy's router words it.
const overflowBody = "upstream connect error or disconnect/reset before headers. reset reason: overflow"

// holdUpstream is an HTTP/1.1 upstream that holds the requests to /hold
// until told: each arrival is sent on arrived (its path and query), and
// each value sent on release lets one held request answer 200 "ok". Other
// paths: /partial answers a head and part of its body and the rest once
// rest is closed; /reset closes the connection unanswered;
// /pertry holds the first request it gets until the proxy gives up on it
// and answers the others at once; anything else is answered at once.
type holdUpstream struct {
	addr    string
	arrived chan string
	release chan struct{}
	rest    chan struct{} // closed: /partial writes the rest of its body
	tries   atomic.Int32
}

func newHoldUpstream(t *testing.T) *holdUpstream {
	t.Helper()
	u, h, done := holdHandler()
	srv := httptest.NewServer(h)
	t.Cleanup(func() { close(done); srv.Close() })
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	return u
}

// newH2CHoldUpstream is holdUpstream over h2c (prior knowledge): /reset
// resets its stream.
func newH2CHoldUpstream(t *testing.T) *holdUpstream {
	t.Helper()
	u, h, done := holdHandler()
	u.addr = h2cUpstream(t, h)
	t.Cleanup(func() { close(done) }) // before the server's Close (Cleanup is LIFO)
	return u
}

// holdHandler is holdUpstream's handler; closing done lets what it holds
// go.
func holdHandler() (*holdUpstream, http.Handler, chan struct{}) {
	u := &holdUpstream{arrived: make(chan string, 64), release: make(chan struct{}), rest: make(chan struct{})}
	done := make(chan struct{})
	return u, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hold := func() bool {
			select {
			case <-u.release:
				return true
			case <-r.Context().Done():
			case <-done:
			}
			return false
		}
		switch r.URL.Path {
		case "/hold", "/timeout/hold":
			u.arrived <- r.URL.RequestURI()
			if hold() {
				_, _ = io.WriteString(w, "ok")
			}
		case "/partial":
			u.arrived <- r.URL.RequestURI()
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			select {
			case <-u.rest:
				_, _ = io.WriteString(w, strings.Repeat("x", 93))
			case <-r.Context().Done():
			case <-done:
			}
		case "/reset":
			hj, ok := w.(http.Hijacker)
			if !ok {
				panic(http.ErrAbortHandler) // HTTP/2: RST_STREAM
			}
			c, _, err := hj.Hijack()
			if err == nil {
				_ = c.Close()
			}
		case "/pertry":
			if u.tries.Add(1) == 1 {
				hold()
				return
			}
			_, _ = io.WriteString(w, "ok")
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}), done
}

// await returns the next n arrivals, in order.
func (u *holdUpstream) await(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	for range n {
		select {
		case a := <-u.arrived:
			got = append(got, a)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d requests reached the upstream (%v)", len(got), n, got)
		}
	}
	return got
}

// answer is a response's status and body, or the error.
func answer(cl *http.Client, url string) string {
	resp, err := cl.Get(url)
	if err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// breakersCluster is cluster "c" at addr with the given default-priority
// thresholds (0: App Mesh's wide open, 2147483647, for that one).
func breakersCluster(addr string, maxConns, maxPending, maxRequests uint32) []types.Resource {
	open := func(v uint32) uint32 {
		if v == 0 {
			return 2147483647
		}
		return v
	}
	return []types.Resource{edsCluster("c", func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: u32(open(maxConns)), MaxPendingRequests: u32(open(maxPending)), MaxRequests: u32(open(maxRequests))}}}
	}), cla("c", addr)}
}

// breakerLog is the access log format the tests read: status, flags,
// details, upstream host and attempts.
var breakerLog = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
	TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
		InlineString: "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}}}

// countLines counts the lines of log that are line.
func countLines(log, line string) int {
	n := 0
	for l := range strings.Lines(log) {
		if strings.TrimSuffix(l, "\n") == line {
			n++
		}
	}
	return n
}

// TestCircuitBreakersSamePaths: a cluster's max_requests (2) holds on
// every path, over HTTP/1.1 and h2c: with two requests in flight a third
// is answered 503 UO with Envoy's overflow body and details, counted in
// upstream_rq_pending_overflow, upstream_rq_503 and the host's rq_error,
// while upstream_rq_active says 2, then 0. The loops apply it themselves
// (nothing handed off; the h2c connection on the loops): they sent every
// request to a cluster with a threshold below 1,024 to the goroutine
// path, and above it did not apply max_requests at all.
func TestCircuitBreakersSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			up := newHoldUpstream(t)
			h, logPath := loggedEgress(t, p, breakerLog, append([]types.Resource{
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))}, breakersCluster(up.addr, 0, 0, 2)...)...)
			url := "http://" + h.addr("egress")
			clients := []struct {
				name string
				cl   *http.Client
			}{{"HTTP/1.1", newClient(t)}, {"h2c", h2cClient(t)}}
			for _, c := range clients {
				answers := make(chan string, 2)
				for range 2 {
					go func() { answers <- answer(c.cl, url+"/hold") }() // ends once released below
				}
				up.await(t, 2)
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 2})
				if got := answer(c.cl, url+"/third"); got != "503 "+overflowBody {
					t.Errorf("%s: the third request answered %q, want 503 %q", c.name, got, overflowBody)
				}
				up.release <- struct{}{}
				up.release <- struct{}{}
				for range 2 {
					if got := <-answers; got != "200 ok" {
						t.Errorf("%s: a held request answered %q", c.name, got)
					}
				}
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 0})
			}
			waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_pending_overflow": 2, "cluster.c.upstream_rq_503": 2,
				"cluster.c.upstream_rq_200": 4, "cluster.c.upstream_rq_total": 4, "cluster.c.upstream_cx_overflow": 0})
			if want := "c::" + up.addr + "::rq_error::2"; !strings.Contains(h.admin("/clusters"), want) {
				t.Errorf("/clusters has no %s:\n%s", want, h.admin("/clusters"))
			}
			// Envoy's pool refuses an overflow of max_requests with the
			// host it picked (attachStreamToClient), which the router
			// records (UpstreamRequest::onPoolFailure), on its first
			// attempt (decodeHeaders counted it).
			if log, want := awaitLog(t, logPath, 6), "503 UO upstream_reset_before_response_started{overflow} "+up.addr+" 1"; countLines(log, want) != 2 {
				t.Errorf("access log:\n%s\nwant two overflows, %q", log, want)
			}
			if l := h.listener("egress"); !p.goroutines {
				want := int64(0)
				if p.h2Goroutines {
					want = 1 // the h2c connection
				}
				if l.HandedOff() != want || !p.h2Goroutines && l.LoopH2Conns() != 1 {
					t.Errorf("%d connections handed off (want %d), %d h2c on the loops", l.HandedOff(), want, l.LoopH2Conns())
				}
			}
		})
	}
}

// TestCircuitBreakersQueueSamePaths: max_connections (2) with
// max_pending_requests (2) on every path, over HTTP/1.1 and h2c: two
// requests in flight, the next two wait (upstream_rq_pending_active),
// the fifth is answered 503 UO; the waiting ones reach the upstream in
// the order they came as slots free. Counted once each:
// upstream_cx_overflow 3, upstream_rq_pending_total 2,
// upstream_rq_pending_overflow 1. The loops serve what gets a slot at
// once and hand the requests that would wait to the goroutine path,
// which queues them on the same counters (an h2c connection, whose
// streams cannot be handed over, is the goroutine path's from its
// preface). The overflow's access log names no upstream host: Envoy's
// pool refuses it before attaching one (ConnPoolImplBase::newStream).
func TestCircuitBreakersQueueSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		for _, client := range []string{"HTTP/1.1", "h2c"} {
			t.Run(p.name+"/"+client, func(t *testing.T) {
				up := newHoldUpstream(t)
				h, logPath := loggedEgress(t, p, breakerLog, append([]types.Resource{
					routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))}, breakersCluster(up.addr, 2, 2, 0)...)...)
				url := "http://" + h.addr("egress")
				cl := newClient(t)
				if client == "h2c" {
					cl = h2cClient(t)
				}
				answers := make(chan string, 4)
				send := func(path string) {
					go func() { answers <- answer(cl, url+path) }() // ends once released below
				}
				send("/hold?in=1")
				send("/hold?in=2")
				up.await(t, 2)
				send("/hold?queued=1")
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_pending_active": 1})
				send("/hold?queued=2")
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_pending_active": 2})
				if got := answer(cl, url+"/hold?fifth"); got != "503 "+overflowBody {
					t.Errorf("the fifth request answered %q, want 503 %q", got, overflowBody)
				}
				var order []string
				for range 2 {
					up.release <- struct{}{}
					order = append(order, up.await(t, 1)...)
				}
				if got := strings.Join(order, " "); got != "/hold?queued=1 /hold?queued=2" {
					t.Errorf("the queued requests reached the upstream as %s, want in the order they came", got)
				}
				up.release <- struct{}{}
				up.release <- struct{}{}
				for range 4 {
					if got := <-answers; got != "200 ok" {
						t.Errorf("a request answered %q", got)
					}
				}
				waitStats(t, h, map[string]int64{"cluster.c.upstream_cx_overflow": 3, "cluster.c.upstream_rq_pending_total": 2,
					"cluster.c.upstream_rq_pending_overflow": 1, "cluster.c.upstream_rq_pending_active": 0,
					"cluster.c.upstream_rq_active": 0, "cluster.c.upstream_rq_503": 1, "cluster.c.upstream_rq_200": 4})
				if log, want := awaitLog(t, logPath, 5), "503 UO upstream_reset_before_response_started{overflow} - 1"; countLines(log, want) != 1 {
					t.Errorf("access log:\n%s\nwant one overflow, %q", log, want)
				}
			})
		}
	}
}

// TestCircuitBreakerSlotsReleasedSamePaths: a request gives its
// max_requests slot back however its exchange ends, on every path: the
// client gone mid-response, the upstream's reset, the route timeout, a
// per-try timeout and its retry (which takes a slot of its own). After
// each, upstream_rq_active is 0 and two new requests (max_requests 2)
// are in flight together.
func TestCircuitBreakerSlotsReleasedSamePaths(t *testing.T) {
	timeout := routeTo("/timeout/", "c")
	timeout.GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
	pertry := routeTo("/pertry", "c")
	pertry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), PerTryTimeout: durationpb.New(200 * time.Millisecond),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			up := newHoldUpstream(t)
			h := newHarness(t, p.on)
			h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, timeout, pertry, routeTo("/", "c")))}, breakersCluster(up.addr, 0, 0, 2)...)...)
			addr := h.addr("egress")
			cl := newClient(t)
			twoInFlight := func(after string) {
				t.Helper()
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 0})
				answers := make(chan string, 2)
				for range 2 {
					go func() { answers <- answer(cl, "http://"+addr+"/hold") }() // ends once released below
				}
				up.await(t, 2)
				up.release <- struct{}{}
				up.release <- struct{}{}
				for range 2 {
					if got := <-answers; got != "200 ok" {
						t.Errorf("after %s: a request answered %q", after, got)
					}
				}
			}
			// The client leaves once the response's first bytes came.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("the cut response: %v", err)
				}
				if line == "\r\n" {
					break
				}
			}
			up.await(t, 1)
			c.Close()
			// The goroutine path notices the client gone when it writes
			// to it (the loops at once).
			close(up.rest)
			twoInFlight("the client left")
			if got := answer(cl, "http://"+addr+"/reset"); !strings.HasPrefix(got, "503 ") {
				t.Errorf("the upstream's reset answered %q", got)
			}
			twoInFlight("the upstream's reset")
			if got := answer(cl, "http://"+addr+"/timeout/hold"); got != "504 upstream request timeout" {
				t.Errorf("the route timeout answered %q", got)
			}
			up.await(t, 1)
			twoInFlight("the route timeout")
			if got := answer(cl, "http://"+addr+"/pertry"); got != "200 ok" {
				t.Errorf("the per-try timeout's retry answered %q", got)
			}
			twoInFlight("the per-try timeout and its retry")
			waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_per_try_timeout": 1, "cluster.c.upstream_rq_retry": 1,
				"cluster.c.upstream_rq_pending_overflow": 0})
			if l := h.listener("egress"); !p.goroutines && l.HandedOff() != 0 {
				t.Errorf("%d connections handed off, want the loops to serve them", l.HandedOff())
			}
		})
	}
}

// TestCircuitBreakerSlotsReleasedH2SamePaths: HTTP/2 on either side of
// the proxy gives back its max_requests slot however the exchange ends,
// on every path (TestCircuitBreakerSlotsReleasedSamePaths has HTTP/1.1 on
// both): h2c and HTTP/1.1 clients to HTTP/1.1 and h2c upstreams; the
// client cancels mid-response (RST_STREAM CANCEL, or its connection
// closed), the upstream resets (RST_STREAM, or its connection closed).
// After each, upstream_rq_active is 0 and two new requests (max_requests
// 2) are in flight together.
func TestCircuitBreakerSlotsReleasedH2SamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		for _, upstream := range []string{"HTTP/1.1", "h2c"} {
			for _, client := range []string{"HTTP/1.1", "h2c"} {
				if upstream == "HTTP/1.1" && client == "HTTP/1.1" {
					continue
				}
				t.Run(p.name+"/"+client+" to "+upstream, func(t *testing.T) {
					up := newHoldUpstream
					if upstream == "h2c" {
						up = newH2CHoldUpstream
					}
					u := up(t)
					res := breakersCluster(u.addr, 0, 0, 2)
					if upstream == "h2c" {
						res[0].(*clusterv3.Cluster).Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
					}
					h := newHarness(t, p.on)
					h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds")),
						routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))}, res...)...)
					url := "http://" + h.addr("egress")
					cl := newClient(t)
					if client == "h2c" {
						cl = h2cClient(t)
					}
					twoInFlight := func(after string) {
						t.Helper()
						waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 0})
						answers := make(chan string, 2)
						for range 2 {
							go func() { answers <- answer(cl, url+"/hold") }() // ends once released below
						}
						u.await(t, 2)
						u.release <- struct{}{}
						u.release <- struct{}{}
						for range 2 {
							if got := <-answers; got != "200 ok" {
								t.Errorf("after %s: a request answered %q", after, got)
							}
						}
					}
					ctx, cancel := context.WithCancel(context.Background())
					req, err := http.NewRequestWithContext(ctx, "GET", url+"/partial", nil)
					if err != nil {
						t.Fatal(err)
					}
					resp, err := cl.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					u.await(t, 1)
					cancel()
					resp.Body.Close()
					close(u.rest) // the goroutine path notices the client gone when it writes to it
					twoInFlight("the client cancelled")
					if got := answer(cl, url+"/reset"); !strings.HasPrefix(got, "503 ") {
						t.Errorf("the upstream's reset answered %q", got)
					}
					twoInFlight("the upstream's reset")
					// HTTP/2 upstreams are the loops' with the h2c ones.
					if l := h.listener("egress"); !p.goroutines && client == "HTTP/1.1" && (upstream == "HTTP/1.1" || !p.h2Goroutines) && l.HandedOff() != 0 {
						t.Errorf("%d connections handed off, want the loops to serve them", l.HandedOff())
					}
					if l := h.listener("egress"); !p.h2Goroutines && client == "h2c" && l.LoopH2Conns() == 0 {
						t.Error("no h2c connection on the loops")
					}
				})
			}
		}
	}
}

// TestCircuitBreakerSlotsAcrossUpdateSamePaths: a request gives its slot
// back to the cluster it took it from when an update replaced that
// cluster while it was in flight, on every path: the new cluster
// (max_requests 3) starts with its own counts, as Envoy's new cluster
// info has its own resource manager, and once everything ended it again
// takes exactly 3 (a slot given back to it would let a fourth in), while
// upstream_rq_active, one gauge for both, returns to 0.
func TestCircuitBreakerSlotsAcrossUpdateSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		for _, client := range []string{"HTTP/1.1", "h2c"} {
			t.Run(p.name+"/"+client, func(t *testing.T) {
				u := newHoldUpstream(t)
				h := newHarness(t, p.on)
				lds := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))}
				h.push(append(lds, breakersCluster(u.addr, 0, 0, 2)...)...)
				url := "http://" + h.addr("egress")
				cl := newClient(t)
				if client == "h2c" {
					cl = h2cClient(t)
				}
				answers := make(chan string, 8)
				hold := func(n int) {
					t.Helper()
					for range n {
						go func() { answers <- answer(cl, url+"/hold") }() // ends once released below
					}
					u.await(t, n)
				}
				releaseAll := func(n int) {
					t.Helper()
					for range n {
						u.release <- struct{}{}
					}
					for range n {
						if got := <-answers; got != "200 ok" {
							t.Errorf("a held request answered %q", got)
						}
					}
				}
				hold(2)
				h.push(append(lds, breakersCluster(u.addr, 0, 0, 3)...)...)
				waitUntil(t, 5*time.Second, "the update", func() bool {
					return strings.Contains(h.admin("/clusters"), "c::default_priority::max_requests::3")
				})
				hold(3)
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 5})
				releaseAll(5)
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 0})
				hold(3)
				if got := answer(cl, url+"/fourth"); got != "503 "+overflowBody {
					t.Errorf("a fourth request under the new cluster's 3 answered %q, want 503 %q", got, overflowBody)
				}
				releaseAll(3)
				waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_active": 0})
			})
		}
	}
}

// TestCircuitBreakersNodeOnLoops: the translator's resources for a
// virtual node whose listener has a connection pool (App Mesh's
// howto-circuit-breakers, colorteller-white: http maxConnections 10,
// maxPendingRequests 5) put its ingress listener on the loops, which
// serve its HTTP/1.1 requests to the local app under those limits
// without handing any off (they handed every one off: a threshold below
// 1,024).
func TestCircuitBreakersNodeOnLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "white") }))
	t.Cleanup(app.Close)
	port := netip.MustParseAddrPort(app.Listener.Addr().String()).Port()
	mesh, node := "circuit-breaker-mesh", "colorteller-white-vn"
	v := meshView(mesh, nil)
	spec := &appmesh.VirtualNodeSpec{}
	if err := json.Unmarshal([]byte(fmt.Sprintf(`{"listeners":[{"portMapping":{"port":%d,"protocol":"http"},`+
		`"connectionPool":{"http":{"maxConnections":10,"maxPendingRequests":5}}}],`+
		`"serviceDiscovery":{"dns":{"hostname":"colorteller-white.default.svc.cluster.local"}}}`, port)), spec); err != nil {
		t.Fatal(err)
	}
	v.VirtualNodes[node] = &appmesh.VirtualNodeData{MeshName: &mesh, VirtualNodeName: &node, Spec: spec}
	push := translatedResources(t, v, translate.Identity{MeshOwner: "111122223333", Mesh: mesh, Kind: appmesh.KindVirtualNode, Name: node},
		func(l *listenerv3.Listener) {
			l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
			// No REDIRECT here: the chains match the port dialled.
			for _, fc := range l.FilterChains {
				fc.FilterChainMatch = nil
			}
		})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(push...)
			name := "lds_ingress_0.0.0.0_15000"
			l := h.listener(name)
			if l.OnLoops() == p.goroutines {
				t.Fatalf("the node's ingress listener on the loops: %v", l.OnLoops())
			}
			want := fmt.Sprintf("cds_ingress_%s_%s_http_%d::default_priority::max_connections::10", mesh, node, port)
			if !strings.Contains(h.admin("/clusters"), want) {
				t.Fatalf("/clusters has no %s:\n%s", want, h.admin("/clusters"))
			}
			cl := newClient(t)
			answers := make(chan string, 8)
			for range 8 {
				go func() { answers <- answer(cl, "http://"+h.addr(name)+"/") }() // ends with its answer
			}
			for range 8 {
				if got := <-answers; got != "200 white" {
					t.Errorf("answered %q", got)
				}
			}
			if !p.goroutines && l.HandedOff() != 0 {
				t.Errorf("%d connections handed off, want the loops to serve them", l.HandedOff())
			}
		})
	}
}
