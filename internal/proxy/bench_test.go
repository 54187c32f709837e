package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/otlptest"
	"github.com/weftmesh/weft/internal/proxy/tracing"
)

// BenchmarkHTTPOneHop measures one request through one weft proxy to a
// real backend over keep-alive connections (allocations included).
func BenchmarkHTTPOneHop(b *testing.B) {
	benchOneRoute(b, retryRoute("c", "gateway-error,reset", 2), "/")
}

// benchOneRoute GETs path through one weft proxy whose egress listener
// has the one route r to a real backend (cluster "c"), over keep-alive
// connections; on the loops, a connection handed off to the goroutine
// path fails the benchmark (it would measure the other path).
func benchOneRoute(b *testing.B, r *routev3.Route, path string) {
	h := newHarness(b)
	a := newBackend(b, "a")
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, r)),
		edsCluster("c"), cla("c", a.addr()))
	if l := h.listener("egress"); l.OnLoops() {
		defer func() {
			if n := l.HandedOff(); n != 0 {
				b.Errorf("%d connections handed off: not the loops' benchmark", n)
			}
		}()
	}
	getInParallel(b, &http.Transport{MaxIdleConnsPerHost: 64}, "http://"+h.addr("egress")+path, 1)
}

// BenchmarkHTTPOneHopIdleRoute is BenchmarkHTTPOneHop through a route
// with no timeout and an idle_timeout (App Mesh's perRequest 0 with
// idle 30 s): the stream idle timeout is kept on the whole stream, its
// activity noted on every read (on the loops since they keep it; run
// with WEFT_PROXY_TEST_EVLOOP=0 for the goroutine path).
func BenchmarkHTTPOneHopIdleRoute(b *testing.B) {
	benchOneRoute(b, idleRoute("/", "c", 0, 30*time.Second), "/")
}

// getInParallel GETs url through tr from the benchmark's parallel
// goroutines, b.N times in all, timing only those requests; every answer
// must be a 200 of HTTP major version proto whose body reads to its end
// (an error answer, a local reply after retries, is not what a benchmark
// measures).
func getInParallel(b *testing.B, tr *http.Transport, url string, proto int) {
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case resp.ProtoMajor != proto:
				b.Errorf("HTTP/%d, want HTTP/%d", resp.ProtoMajor, proto)
				return
			case resp.StatusCode != http.StatusOK || err != nil:
				b.Errorf("%d after %d bytes of body (%v), want 200 and the whole body", resp.StatusCode, n, err)
				return
			}
		}
	})
}

// BenchmarkHTTPOneHopTracing is BenchmarkHTTPOneHop with the HCM's
// tracing block and the proxy's tracer off, at 1 % and at 100 %
// (exported over OTLP gRPC to a receiver in the test process).
func BenchmarkHTTPOneHopTracing(b *testing.B) {
	for _, tc := range []struct {
		name string
		rate float64
	}{{"off", -1}, {"1pct", 0.01}, {"100pct", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			rx := otlptest.StartDiscard(b).Addr
			h := newHarness(b, func(c *Config) {
				if tc.rate >= 0 {
					c.Observability.Tracing = &tracing.Config{Exporter: tracing.ExporterOTLPGRPC, Endpoint: rx, Insecure: true,
						SampleRate: tc.rate, ServiceName: "bench"}
				}
			})
			a := newBackend(b, "a")
			h.push(
				httpListener("egress", httpManager("egress", "rds", tracingOn)),
				routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "gateway-error,reset", 2))),
				edsCluster("c"), cla("c", a.addr()))
			getInParallel(b, &http.Transport{MaxIdleConnsPerHost: 64}, "http://"+h.addr("egress")+"/", 1)
		})
	}
}

// BenchmarkHTTPOneHopGatewayRoute is BenchmarkHTTPOneHop through a route
// shaped as App Mesh's gateway routes are: a prefix match rewritten to
// "/" and the Host rewritten to the target service.
func BenchmarkHTTPOneHopGatewayRoute(b *testing.B) {
	r := retryRoute("c", "gateway-error,reset", 2)
	r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/gw/"}
	r.GetRoute().PrefixRewrite = "/"
	r.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "svc.local"}
	benchOneRoute(b, r, "/gw/a?q=1")
}

// BenchmarkHTTPOneHopHeaderAdd is BenchmarkHTTPOneHop through a route
// that adds a request header as App Mesh's gateway routes whose hostname
// rewrite is DISABLED do (x-app-mesh-virtual-service, overwritten): on
// the loops since they apply request header mutations (run with
// WEFT_PROXY_TEST_EVLOOP=0 for the goroutine path).
func BenchmarkHTTPOneHopHeaderAdd(b *testing.B) {
	r := retryRoute("c", "gateway-error,reset", 2)
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-app-mesh-virtual-service", Value: "svc.local"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	benchOneRoute(b, r, "/")
}
