package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestConcurrentH2UploadsSamePaths: large uploads at once to an HTTP/2
// cluster (h2c to Go's server, which allows DATA frames of 1 MiB), from
// HTTP/1.1 connections and as streams of one h2c connection: four without
// a retry policy, and three under one whose first attempt reads each body
// and answers 503, the retry sending the body again from what was kept
// for it (three: the cluster's default max_retries circuit breaker lets
// three retries run at once). Each upload's body, different from the
// others', reaches the upstream whole and in order on every path. On the
// loops their streams share an upstream connection, whose output holds
// the frames of several streams at once, past one buffer (round 37's
// chain of pooled buffers, h2Out).
func TestConcurrentH2UploadsSamePaths(t *testing.T) {
	const size = 512<<10 + 1234 // not a whole number of frames or buffers
	up := h2cUpstream(t, digestHandler())
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			retry := routeTo("/retry/", "h2")
			retry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2)}
			h.push(
				httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, retry, routeTo("/", "h2"))),
				edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
				cla("h2", up))
			h1 := &http.Transport{}
			t.Cleanup(h1.CloseIdleConnections)
			clients := map[string]*http.Client{"h1": {Transport: h1}, "h2c": h2cClient(t)}
			for _, client := range []string{"h1", "h2c"} {
				for _, route := range []string{"plain", "retry"} {
					n := 4
					if route == "retry" {
						n = 3
					}
					var wg sync.WaitGroup
					for i := range n {
						body := make([]byte, size)
						for j := range body {
							body[j] = byte(j*7 + j>>10 + i*31) // bytes out of place change the digest
						}
						want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
						path := fmt.Sprintf("/%s/%s/%s/%d?fail=1", route, client, p.name, i)
						if route == "plain" {
							path = fmt.Sprintf("/%s/%s/%d", client, p.name, i)
						}
						wg.Add(1)
						go func() { // ends when its answer is read, or after a minute without one
							defer wg.Done()
							ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
							defer cancel()
							req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.addr("egress")+path, bytes.NewReader(body))
							if err != nil {
								t.Error(err)
								return
							}
							resp, err := clients[client].Do(req)
							if err != nil {
								t.Errorf("%s: %v", path, err)
								return
							}
							got, err := io.ReadAll(resp.Body)
							resp.Body.Close()
							if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
								t.Errorf("%s: %d %q (%v), want 200 %q", path, resp.StatusCode, got, err, want)
							}
						}()
					}
					wg.Wait()
				}
			}
		})
	}
}
