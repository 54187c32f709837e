package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRefusedStreamRetriedSamePaths: an HTTP/2 upstream that refuses
// every stream (RST_STREAM REFUSED_STREAM before the response head) is
// answered 503 UR at once with no retry policy, and sent again only as
// often as retry_on refused-stream allows (num_retries 2: three streams),
// with the same counters and load on every path, as Envoy's router
// retries the reset (RetryStateImpl::wouldRetryFromReset). The goroutine
// path's x/net transport sent a refused stream again itself, up to six
// times with 1 s, 2 s, 4 s ... of back-off, whatever the policy, so that
// the request was answered 504 at the route timeout.
func TestRefusedStreamRetriedSamePaths(t *testing.T) {
	var streams [2]atomic.Int32 // what each upstream saw: without a policy, with one
	refusing := func(n *atomic.Int32) string {
		return rawH2Upstream(t, func(w *rawH2Writer, id uint32, _ *rawH2Request) {
			n.Add(1)
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		})
	}
	plain, retried := refusing(&streams[0]), refusing(&streams[1])
	// The route timeout is long: an answer before it is the refusal's,
	// never the timeout's (504).
	const routeTimeout = 10 * time.Second
	timed := func(r *routev3.Route) *routev3.Route {
		r.GetRoute().Timeout = durationpb.New(routeTimeout)
		return r
	}
	retry := timed(routeTo("/retry/", "retried"))
	retry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "refused-stream", NumRetries: u32(2),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	// The retried request's answer says so (route.RetriedBody).
	bodies := []string{"upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
		"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote refused stream reset"}
	names := []string{"upstream_rq_total", "upstream_rq_completed", "upstream_rq_503", "upstream_rq_5xx",
		"upstream_rq_rx_reset", "upstream_rq_tx_reset", "upstream_rq_retry", "upstream_rq_retry_success",
		"upstream_rq_retry_limit_exceeded", "upstream_rq_retry_overflow", "upstream_rq_timeout"}
	var first string
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			streams[0].Store(0)
			streams[1].Store(0)
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, timed(routeTo("/plain/", "plain")), retry)),
				edsCluster("plain", h2Upstream), cla("plain", plain), edsCluster("retried", h2Upstream), cla("retried", retried))
			cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for i, path := range []string{"/plain/", "/retry/"} {
				start := time.Now()
				resp, err := cl.Get("http://" + h.addr("egress") + path)
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				got := resp.Status[:3] + " " + string(b)
				if took := time.Since(start); took >= routeTimeout {
					t.Errorf("%s: answered after %v, the route timeout", path, took)
				}
				if want := "503 " + bodies[i]; got != want {
					t.Errorf("%s: answered %q; want %q", path, got, want)
				}
				if want := int32(1 + 2*i); streams[i].Load() != want {
					t.Errorf("%s: the upstream saw %d streams; want %d", path, streams[i].Load(), want)
				}
			}
			waitStats(t, h, map[string]int64{"cluster.plain.upstream_rq_503": 1, "cluster.plain.upstream_rq_total": 1,
				"cluster.retried.upstream_rq_503": 1, "cluster.retried.upstream_rq_total": 3,
				"cluster.retried.upstream_rq_retry": 2, "cluster.retried.upstream_rq_retry_limit_exceeded": 1})
			var got []string
			for _, c := range []string{"plain", "retried"} {
				got = append(got, c+":\n"+h.counts("cluster."+c+".", names))
				for _, l := range (loadSource{h.p.clusters, h.p.Stats}).LoadClusters() {
					for _, hs := range l.Hosts {
						if l.Name == c {
							got = append(got, fmt.Sprintf("host load: %d sent, %d ok, %d errors", hs.RqTotal, hs.RqSuccess, hs.RqError))
						}
					}
				}
			}
			if all := strings.Join(got, "\n"); first == "" {
				first = all
			} else if all != first {
				t.Errorf("counters and load\n%s\nthe first path's\n%s", all, first)
			}
		})
	}
}
