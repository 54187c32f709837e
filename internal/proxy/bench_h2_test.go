package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// BenchmarkH2COneHop is BenchmarkHTTPOneHop over h2c on both sides, as
// for a virtual node listener of protocol http2: the client's streams
// share one connection to the proxy, the proxy's one connection to the
// backend (allocations of client and backend included, the same in
// every run).
func BenchmarkH2COneHop(b *testing.B) {
	h := newHarness(b)
	up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "blue")
	}))
	pushH2Egress(h, up)
	getInParallel(b, h2cClient(b).Transport.(*http.Transport), "http://"+h.addr("egress")+"/", 2)
}

// pushH2Egress gives h the benchmarks' egress listener, routed to the
// h2c upstream up (HTTP/2 cluster "h2", retried on gateway-error and
// reset).
func pushH2Egress(h *harness, up string) {
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("h2", "gateway-error,reset", 2))),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up))
}

// BenchmarkH2COneHopLarge is BenchmarkH2COneHop for a 100 KiB response,
// from an HTTP/2 upstream (cluster "h2") and from an HTTP/1.1 one
// (cluster "c"), the latter chunked (Go's server, the body written at
// once without a content-length) and with a content-length: full-size
// DATA frames on the client's connection, and on the upstream's for the
// first. The upstream serves HTTP/1.1 and h2c (h2cUpstream alone answers
// no HTTP/1.1 request, and the rows from cluster "c" measured 503s after
// two retries until round 29).
func BenchmarkH2COneHopLarge(b *testing.B) {
	big := bytes.Repeat([]byte("z"), 100<<10)
	for _, tc := range []struct {
		name      string
		upH2, len bool
	}{{"h2-upstream", true, false}, {"h1-upstream", false, false}, {"h1-upstream-length", false, true}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b)
			up := h1h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				if tc.len {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				_, _ = w.Write(big)
			}))
			if tc.upH2 {
				pushH2Egress(h, up)
			} else {
				h.push(
					httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "gateway-error,reset", 2))),
					edsCluster("c"), cla("c", up))
			}
			getInParallel(b, h2cClient(b).Transport.(*http.Transport), "http://"+h.addr("egress")+"/", 2)
		})
	}
}
