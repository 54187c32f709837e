package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestEarlyHeadKeptTailThenRestSamePaths: under a retry policy, the
// upstream answers its head before it reads the body, on the first
// attempt, while the client still streams it: the kept chain's unsent
// tail (dropKept / h2uCutReplay) then what comes after (u.out / pending)
// must arrive whole and in order, on every path (round 36's re-read: the
// early-answer tests send a repeating pattern, which a reorder keeps).
// Position-dependent bytes; the second size also outgrows the retry
// buffer while it streams.
func TestEarlyHeadKeptTailThenRestSamePaths(t *testing.T) {
	for _, size := range []int{40<<14 + 333, 1<<20 + 70<<10 + 5} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i*13 + i>>12)
		}
		want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			_ = rc.EnableFullDuplex()
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
			b, err := io.ReadAll(r.Body)
			if err != nil {
				fmt.Fprintf(w, "read: %v", err)
				return
			}
			fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
		})
		up := slowReadingUpstream(t, handler)
		policy := func(prefix, cluster string) *routev3.Route {
			r := routeTo(prefix, cluster)
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset", NumRetries: u32(2),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
			return r
		}
		for _, p := range proxyPaths() {
			t.Run(fmt.Sprintf("%d/%s", size, p.name), func(t *testing.T) {
				h := newHarness(t, p.on)
				h.push(
					httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, policy("/h1/", "c"), policy("/h2/", "h2"))),
					edsCluster("c"), cla("c", up),
					edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
					cla("h2", up))
				h1 := &http.Transport{}
				t.Cleanup(h1.CloseIdleConnections)
				clients := map[string]*http.Client{"chunked": {Transport: h1}, "length": {Transport: h1}, "h2c": h2cClient(t)}
				tag := strings.ReplaceAll(p.name, " ", "-")
				for _, cluster := range []string{"h1", "h2"} {
					for _, client := range []string{"chunked", "length", "h2c"} {
						path := fmt.Sprintf("/%s/%s/%s", cluster, client, tag)
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.addr("egress")+path, &writesOf{body: body})
						if err != nil {
							t.Fatal(err)
						}
						if client == "length" {
							req.ContentLength = int64(size)
						}
						resp, err := clients[client].Do(req)
						if err != nil {
							cancel()
							t.Errorf("%s: %v", path, err)
							continue
						}
						got, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						cancel()
						if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
							t.Errorf("%s: %d %q (%v), want 200 %q", path, resp.StatusCode, got, err, want)
						}
					}
				}
			})
		}
	}
}
