package proxy

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// BenchmarkH2UploadPair measures two uploads at once on one h2c client
// connection to an HTTP/2 cluster, whose streams share one upstream
// connection: 512 KiB each, with a content-length, no retry policy. On
// the loops the two bodies' DATA frames meet in the upstream connection's
// output in one iteration (docs/bench/proxy.md, "Round 37"). An op is the
// pair; B/op is bytes allocated per pair in the whole process (client
// and upstream too).
func BenchmarkH2UploadPair(b *testing.B) {
	for _, p := range []proxyPath{{"goroutines", true, true}, {"loops", false, false}} {
		b.Run(p.name, func(b *testing.B) {
			h := newHarness(b, p.on)
			up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n, _ := io.Copy(io.Discard, r.Body); n != uploadSize {
					w.WriteHeader(http.StatusBadRequest)
				}
			}))
			h.push(
				httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
				edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
				cla("h2", up))
			c := h2cClient(b)
			url := "http://" + h.addr("egress") + "/"
			body := make([]byte, uploadSize)
			post := func() error {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					return err
				}
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d, want 200", resp.StatusCode)
				}
				return nil
			}
			if err := post(); err != nil { // the connections, before the timer
				b.Fatal(err)
			}
			b.SetBytes(2 * uploadSize)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i := range errs {
					wg.Add(1)
					go func() { // ends when its upload's response is read (or failed)
						defer wg.Done()
						errs[i] = post()
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
