package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkHTTPOneHop measures one request through one weft proxy to a
// real backend over keep-alive connections (allocations included).
func BenchmarkHTTPOneHop(b *testing.B) {
	h := newHarness(b)
	a := newBackend(b, "a")
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "gateway-error,reset", 2))),
		edsCluster("c"), cla("c", a.addr()))
	url := "http://" + h.addr("egress") + "/"
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
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
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
