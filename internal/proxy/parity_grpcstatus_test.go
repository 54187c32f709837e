package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// grpcMessage is a gRPC message frame: uncompressed, 3 bytes.
var grpcMessage = []byte{0, 0, 0, 0, 3, 'a', 'b', 'c'}

// grpcStatusUpstream serves gRPC answers over h2c and HTTP/1.1, as a
// gRPC server whose handler returns (Go's server, whose HTTP/2 answer
// without a body is one HEADERS with END_STREAM) until the test ends,
// and returns its address. mode says how it answers every request:
//   - "unavailable": trailers only, grpc-status 14;
//   - "flaky": trailers only, grpc-status 14, 14, 0, over again;
//   - "ok": a message, then trailers with grpc-status 0;
//   - "path": by the request's path: /trailers/<n> a message, then
//     trailers with grpc-status n; /bare a message and no trailers;
//     /reset a message, then the stream reset (over HTTP/1.1, the
//     connection closed mid-body); /stall a message, then nothing until
//     the proxy gives the request up.
func grpcStatusUpstream(t *testing.T, mode string) string {
	t.Helper()
	var n atomic.Int32
	return h1h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		only := func(status string) {
			w.Header().Set("Grpc-Status", status)
			w.WriteHeader(200)
		}
		trailers := func(status string) {
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			_, _ = w.Write(grpcMessage)
			w.Header().Set("Grpc-Status", status)
		}
		switch p := r.URL.Path; {
		case mode == "unavailable":
			only("14")
		case mode == "flaky":
			if n.Add(1)%3 == 0 {
				only("0")
			} else {
				only("14")
			}
		case mode == "ok":
			trailers("0")
		case strings.HasPrefix(p, "/trailers/"):
			trailers(strings.TrimPrefix(p, "/trailers/"))
		case p == "/bare":
			w.WriteHeader(200)
			_, _ = w.Write(grpcMessage)
		case p == "/reset":
			w.WriteHeader(200)
			_, _ = w.Write(grpcMessage)
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case p == "/stall":
			w.WriteHeader(200)
			_, _ = w.Write(grpcMessage)
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			w.WriteHeader(404)
		}
	}))
}

// h1h2cUpstream serves h on loopback over HTTP/1.1 and h2c until the
// test ends, and returns its address.
func h1h2cUpstream(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close in Cleanup
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// grpcCall sends a gRPC request (grpcRequest) for host and path on c,
// reads its answer to its end, and returns its grpc-status, from its
// head or trailers ("-" for none), or "reset" when it broke.
func grpcCall(t *testing.T, c *http.Client, addr, host, path string) string {
	t.Helper()
	resp, err := c.Do(grpcRequest(t, context.Background(), addr, host, path))
	if err != nil {
		return "reset"
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "reset"
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return s
	}
	if s := resp.Trailer.Get("Grpc-Status"); s != "" {
		return s
	}
	return "-"
}

// grpcRequest is a gRPC request (POST, application/grpc, a message) to
// the proxy at addr for host and path.
func grpcRequest(t *testing.T, ctx context.Context, addr, host, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+path, bytes.NewReader(grpcMessage))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	return req
}

// hostCounts reads counters of a cluster's host from /clusters, "name=value"
// each, in the order of names.
func hostCounts(h *harness, cluster, addr string, names ...string) string {
	page := h.admin("/clusters")
	var out []string
	for _, n := range names {
		v := "?"
		for _, line := range strings.Split(page, "\n") {
			if rest, ok := strings.CutPrefix(line, cluster+"::"+addr+"::"+n+"::"); ok {
				v = rest
			}
		}
		out = append(out, n+"="+v)
	}
	return strings.Join(out, " ")
}

// waitHostCounts waits until hostCounts says want, and fails the test
// with what it says if it does not within 5 s (the goroutine path counts
// after the response went out).
func waitHostCounts(t *testing.T, h *harness, cluster, addr, want string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := hostCounts(h, cluster, addr, names...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s's host %s: %s; want %s", cluster, addr, got, want)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestGRPCStatusOutlierSamePaths: a gRPC request's answer with a
// grpc-status in its head (a trailers-only answer: grpc-go's when its
// handler returns an error) is seen by outlier detection, and counted in
// its host's rq_success or rq_error, as the HTTP status that grpc-status
// maps to (UNAVAILABLE a 503; OK a 200), as Envoy's router takes it
// (Filter::onUpstreamHeaders, Grpc::Utility::grpcToHttpStatus,
// handleNon5xxResponseHeaders): App Mesh's outlierDetection
// (consecutive_5xx) ejects a gRPC host that answers UNAVAILABLE, where
// every path took its 200 as a success. Each cluster has three hosts: one
// always UNAVAILABLE, ejected after 3 and sent nothing more; one
// UNAVAILABLE twice then OK, over again, never 3 in a row, kept; one that
// answers a message and trailers with OK, kept (an error for its host
// from an HTTP/1.1 upstream, whose trailers do not count). On every pair of client and
// upstream protocols: h2c to HTTP/2 (the loops' streams), HTTP/1.1 to
// HTTP/2 (the loops' HTTP/1.1-to-HTTP/2 streams), h2c to HTTP/1.1 and
// HTTP/1.1 to HTTP/1.1 (whose trailers-only answer has a content-length
// of 0).
func TestGRPCStatusOutlierSamePaths(t *testing.T) {
	type combo struct {
		name    string // the cluster, and the request's host
		h2c, h2 bool   // the client's protocol, the upstream's
	}
	combos := []combo{{"h2", true, true}, {"h1h2", false, true}, {"h2h1", true, false}, {"h1", false, false}}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			var vhs []*routev3.VirtualHost
			rs := []types.Resource{httpListener("egress", httpManager("egress", "rds"))}
			hosts := map[string][3]string{}
			for _, c := range combos {
				bad, flaky, ok := grpcStatusUpstream(t, "unavailable"), grpcStatusUpstream(t, "flaky"), grpcStatusUpstream(t, "ok")
				hosts[c.name] = [3]string{bad, flaky, ok}
				vhs = append(vhs, vhost(c.name, []string{c.name}, routeTo("/", c.name)))
				mods := []func(*clusterv3.Cluster){ejectAfter(3)}
				if c.h2 {
					mods = append(mods, h2Upstream)
				}
				rs = append(rs, edsCluster(c.name, mods...), cla(c.name, bad, flaky, ok))
			}
			h.push(append(rs, routeConfig("rds", vhs...))...)
			h1, h2 := &http.Client{Timeout: 10 * time.Second}, h2cClient(t)
			for _, c := range combos {
				t.Run(c.name, func(t *testing.T) {
					cl := h1
					if c.h2c {
						cl = h2
					}
					answers := map[string]int{}
					for range 30 {
						answers[grpcCall(t, cl, h.addr("egress"), c.name, "/grpc.testing.TestService/UnaryCall")]++
					}
					// The bad host's 3, and the flaky one's 2 of every 3
					// of the rest's half.
					if answers["14"] < 3 || answers["reset"] > 0 {
						t.Errorf("answers by grpc-status: %v", answers)
					}
					hs := hosts[c.name]
					counters := []string{"rq_total", "rq_success", "rq_error"}
					waitHostCounts(t, h, c.name, hs[0], "rq_total=3 rq_success=0 rq_error=3", counters...)
					flaky := hostCounts(h, c.name, hs[1], "rq_total")
					var n int
					_, _ = fmt.Sscanf(flaky, "rq_total=%d", &n)
					waitHostCounts(t, h, c.name, hs[1], fmt.Sprintf("rq_total=%d rq_success=%d rq_error=%d", n, n/3, n-n/3), counters...)
					ok := fmt.Sprintf("rq_total=%d rq_success=%d rq_error=0", 27-n, 27-n)
					if !c.h2 {
						// Its trailers do not count: an error (TestGRPCStatusTrailersSamePaths).
						ok = fmt.Sprintf("rq_total=%d rq_success=0 rq_error=%d", 27-n, 27-n)
					}
					waitHostCounts(t, h, c.name, hs[2], ok, counters...)
					if got := h.stat("cluster." + c.name + ".outlier_detection.ejections_enforced_consecutive_5xx"); got != 1 {
						t.Errorf("ejections_enforced_consecutive_5xx = %d, want 1", got)
					}
					page := h.admin("/clusters")
					for i, want := range []string{"/failed_outlier_check", "healthy", "healthy"} {
						if line := c.name + "::" + hs[i] + "::health_flags::" + want; !strings.Contains(page, line+"\n") {
							t.Errorf("/clusters has no %s", line)
						}
					}
				})
			}
		})
	}
}

// TestGRPCStatusTrailersSamePaths: a gRPC answer whose head has no
// grpc-status and does not end it is counted in its host's rq_success or
// rq_error by its end, as Envoy's router defers it
// (handleNon5xxResponseHeaders, grpcRqSuccessDeferred): trailers whose
// grpc-status maps below 500 are a success, others (INTERNAL) an error
// (onUpstreamTrailers), and so is an end without trailers
// (onUpstreamData) and a reset after the head (chargeUpstreamAbort),
// where every path counted the 200 head a success. The trailers are not
// seen by outlier detection (consecutive_5xx 1 ejects nothing). An
// HTTP/1.1 upstream's trailers do not count (Envoy's HTTP/1.1 codec
// drops them, the loops too): each of its answers with a body is an
// error. From an h2c client and an HTTP/1.1 one.
func TestGRPCStatusTrailersSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			ends2, ends1 := grpcStatusUpstream(t, "path"), grpcStatusUpstream(t, "path")
			cut2, cut1 := grpcStatusUpstream(t, "path"), grpcStatusUpstream(t, "path")
			od := ejectAfter(1)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("ends2", []string{"ends2"}, routeTo("/", "ends2")), vhost("ends1", []string{"ends1"}, routeTo("/", "ends1")),
					vhost("cut2", []string{"cut2"}, routeTo("/", "cut2")), vhost("cut1", []string{"cut1"}, routeTo("/", "cut1"))),
				edsCluster("ends2", od, h2Upstream), cla("ends2", ends2), edsCluster("ends1", od), cla("ends1", ends1),
				edsCluster("cut2", h2Upstream), cla("cut2", cut2), edsCluster("cut1"), cla("cut1", cut1))
			addr := h.addr("egress")
			for _, cl := range []*http.Client{h2cClient(t), {Timeout: 10 * time.Second}} {
				for _, host := range []string{"ends2", "ends1"} {
					for _, path := range []string{"/trailers/13", "/trailers/0", "/bare"} {
						if got := grpcCall(t, cl, addr, host, path); got == "reset" {
							t.Errorf("%s%s: reset", host, path)
						}
					}
				}
				for _, host := range []string{"cut2", "cut1"} {
					if got := grpcCall(t, cl, addr, host, "/reset"); got != "reset" {
						t.Errorf("%s/reset: answered %s, want a reset", host, got)
					}
				}
			}
			counters := []string{"rq_total", "rq_success", "rq_error"}
			waitHostCounts(t, h, "ends2", ends2, "rq_total=6 rq_success=2 rq_error=4", counters...)
			waitHostCounts(t, h, "ends1", ends1, "rq_total=6 rq_success=0 rq_error=6", counters...)
			waitHostCounts(t, h, "cut2", cut2, "rq_total=2 rq_success=0 rq_error=2", counters...)
			waitHostCounts(t, h, "cut1", cut1, "rq_total=2 rq_success=0 rq_error=2", counters...)
			for _, c := range []string{"ends2", "ends1"} {
				if got := h.stat("cluster." + c + ".outlier_detection.ejections_enforced_total"); got != 0 {
					t.Errorf("%s: ejections_enforced_total = %d, want 0", c, got)
				}
			}
		})
	}
}

// TestRetriedResponseHostErrorSamePaths: a response the router retries
// counts in its host's rq_error whatever its status, as Envoy's router
// counts it (Filter::onUpstreamHeaders when it retries), a 409 under
// retriable-4xx, where every path counted it a success; the answer after
// it is a success. From an h2c client and an HTTP/1.1 one.
func TestRetriedResponseHostErrorSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			var n atomic.Int32
			up := h1h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if n.Add(1)%2 == 1 {
					w.WriteHeader(409)
					return
				}
				_, _ = io.WriteString(w, "{}")
			}))
			rt := routeTo("/", "c")
			rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "retriable-4xx", NumRetries: u32(1)}
			h.push(httpListener("egress", httpManager("egress", "rds")), routeConfig("rds", vhost("v", []string{"*"}, rt)),
				edsCluster("c"), cla("c", up))
			for _, cl := range []*http.Client{h2cClient(t), {Timeout: 10 * time.Second}} {
				if code, _ := getOn(t, cl, "http://"+h.addr("egress")+"/"); code != 200 {
					t.Errorf("answered %d, want 200", code)
				}
			}
			waitHostCounts(t, h, "c", up, "rq_total=4 rq_success=2 rq_error=2", "rq_total", "rq_success", "rq_error")
			waitStats(t, h, map[string]int64{"cluster.c.upstream_rq_retry": 2, "cluster.c.retry.upstream_rq_409": 2})
		})
	}
}

// grpcCallCut sends a gRPC request as grpcCall does, reads its head and
// first message, then gives it up (an h2c client resets its stream, an
// HTTP/1.1 one closes its connection); false when no head came.
func grpcCallCut(t *testing.T, c *http.Client, addr, host, path string) bool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := c.Do(grpcRequest(t, ctx, addr, host, path))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.ReadFull(resp.Body, make([]byte, len(grpcMessage)))
	return err == nil
}

// TestGRPCStatusUncountedSamePaths: a gRPC answer whose count waits for
// its end (a 200 head without grpc-status) counts neither rq_success nor
// rq_error when the route timeout or the client ends it after its head,
// as Envoy's router counts nothing then (Filter::onResponseTimeout
// charges only an upstream request awaiting its head; onDestroy), and
// rq_error when its HTTP/2 upstream's connection closes after the head
// (onUpstreamReset, chargeUpstreamAbort); rq_active is back to 0 each
// time. From an h2c client and an HTTP/1.1 one, to HTTP/2 and HTTP/1.1
// upstreams.
func TestGRPCStatusUncountedSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			up2, up1 := grpcStatusUpstream(t, "path"), grpcStatusUpstream(t, "path")
			gone := rawH2Upstream(t, func(w *rawH2Writer, id uint32, _ *rawH2Request) {
				w.headers(id, false, 0, ":status", "200", "content-type", "application/grpc")
				_ = w.fr.WriteData(id, false, grpcMessage)
				_ = w.bw.Flush()
				_ = w.c.Close()
			})
			timed := func(host, cluster string) *routev3.VirtualHost {
				rt := routeTo("/", cluster)
				rt.GetRoute().Timeout = durationpb.New(300 * time.Millisecond)
				return vhost(host, []string{host}, rt)
			}
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", timed("timeout2", "up2"), timed("timeout1", "up1"),
					vhost("cut2", []string{"cut2"}, routeTo("/", "cut2")), vhost("cut1", []string{"cut1"}, routeTo("/", "cut1")),
					vhost("gone", []string{"gone"}, routeTo("/", "gone"))),
				edsCluster("up2", h2Upstream), cla("up2", up2), edsCluster("up1"), cla("up1", up1),
				edsCluster("cut2", h2Upstream), cla("cut2", up2), edsCluster("cut1"), cla("cut1", up1),
				edsCluster("gone", h2Upstream), cla("gone", gone))
			addr := h.addr("egress")
			for _, cl := range []*http.Client{h2cClient(t), {Timeout: 10 * time.Second}} {
				for _, host := range []string{"timeout2", "timeout1", "gone"} {
					if got := grpcCall(t, cl, addr, host, "/stall"); got != "reset" {
						t.Errorf("%s/stall: answered %s, want a reset", host, got)
					}
				}
				for _, host := range []string{"cut2", "cut1"} {
					if !grpcCallCut(t, cl, addr, host, "/stall") {
						t.Errorf("%s/stall: no head and message", host)
					}
				}
			}
			counters := []string{"rq_total", "rq_success", "rq_error", "rq_active"}
			waitHostCounts(t, h, "up2", up2, "rq_total=2 rq_success=0 rq_error=0 rq_active=0", counters...)
			waitHostCounts(t, h, "up1", up1, "rq_total=2 rq_success=0 rq_error=0 rq_active=0", counters...)
			waitHostCounts(t, h, "cut2", up2, "rq_total=2 rq_success=0 rq_error=0 rq_active=0", counters...)
			waitHostCounts(t, h, "cut1", up1, "rq_total=2 rq_success=0 rq_error=0 rq_active=0", counters...)
			waitHostCounts(t, h, "gone", gone, "rq_total=2 rq_success=0 rq_error=2 rq_active=0", counters...)
			time.Sleep(50 * time.Millisecond) // a count that came late counted after all
			for _, c := range []struct{ cluster, addr string }{{"up2", up2}, {"up1", up1}, {"cut2", up2}, {"cut1", up1}} {
				if got := hostCounts(h, c.cluster, c.addr, counters...); got != "rq_total=2 rq_success=0 rq_error=0 rq_active=0" {
					t.Errorf("%s's host %s then: %s", c.cluster, c.addr, got)
				}
			}
		})
	}
}
