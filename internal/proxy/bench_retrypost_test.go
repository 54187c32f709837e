package proxy

import (
	"net/http"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// BenchmarkHTTPOneHopPostGoroutines measures a small POST (5 bytes with
// a content-length) through one weft proxy on the goroutine path to an
// HTTP/1.1 backend (its fallback Transport, which reads a body ahead
// during a slow connect: readahead.go), from HTTP/1.1 and h2c clients,
// under a route with no retry policy and under one with a retry policy
// (whose body the proxy keeps to replay: replayBody), over keep-alive
// connections, allocations included.
func BenchmarkHTTPOneHopPostGoroutines(b *testing.B) {
	for _, client := range []string{"h1", "h2c"} {
		for _, rt := range []struct {
			name  string
			route *routev3.Route
		}{{"noretry", routeTo("/", "c")}, {"retry", retryRoute("c", "gateway-error,reset", 2)}} {
			b.Run(client+"/"+rt.name, func(b *testing.B) {
				h := newHarness(b, proxyPath{"goroutines", true, true}.on)
				a := newBackend(b, "a")
				h.push(
					httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, rt.route)),
					edsCluster("c"), cla("c", a.addr()))
				c := h2cClient(b)
				if client == "h1" {
					tr := &http.Transport{MaxIdleConnsPerHost: 64}
					b.Cleanup(tr.CloseIdleConnections)
					c = &http.Client{Transport: tr}
				}
				url := "http://" + h.addr("egress") + "/"
				postsInParallel(b, c, url, "")
			})
		}
	}
}
