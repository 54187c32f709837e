package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestRetryZeroBodyOutgrownSamePaths: under retry_on 5xx with
// num_retries 0, a 503 to a request whose body outgrew
// route.MaxRetryBuffer (Envoy's default buffer limit, 1 MiB) before the
// response is not flagged URX nor counted in
// upstream_rq_retry_limit_exceeded, on every path, HTTP/1.1 and h2c
// clients, HTTP/1.1 and HTTP/2 clusters: Envoy's retry state exists with
// num_retries 0 too (RetryStateImpl::create needs only retry_on), so its
// Filter::decodeData drops it once the body outgrows its buffer, and
// onUpstreamHeaders then sees none. A 503 to a body within the bound is
// flagged and counted (RetryStatus::NoRetryLimitExceeded). Until round
// 35's review the goroutine path, which keeps no copy of the body when
// no retry can come, flagged the outgrown one URX and counted it, where
// the loops, which tally the body read whatever num_retries, did not.
func TestRetryZeroBodyOutgrownSamePaths(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	clusters := h1h2RetryClusters(t, up)
	bodies := map[string][][]byte{
		"outgrown": {bytes.Repeat([]byte("o"), 64<<10), bytes.Repeat([]byte("O"), proxyroute.MaxRetryBuffer)},
		"within":   {bytes.Repeat([]byte("w"), 64<<10)},
	}
	format := attemptLog()
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_limit_exceeded", "upstream_rq_503"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			tag := strings.ReplaceAll(p.name, " ", "-")
			h := newHarness(t, p.logged)
			logFile := pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(0)})
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			for _, c := range clusters {
				for _, cs := range []string{"outgrown", "within"} {
					for _, client := range []string{"length", "h2c"} {
						path := fmt.Sprintf("/%s/%s/%s/%s", c.name, cs, client, tag)
						before := func(int) { time.Sleep(partGap) }
						got := postPartsAs(t, h2c, h.addr("egress"), path, client, bodies[cs], before)
						checkAnswer(t, answers, path, got, "503 ")
						line := "503 URX 1"
						if cs == "outgrown" {
							line = "503 - 1"
						}
						wantLog = append(wantLog, fmt.Sprintf("%s POST %s %s", clientProto(client == "h2c"), path, line))
					}
				}
			}
			log := awaitWantLog(t, logFile, wantLog)
			stats := checkClusterCounts(t, h, clusters, counters, func(retryCluster) string {
				// Two requests within the bound, over their retry limit;
				// two outgrown, not.
				return "upstream_rq_total 4\nupstream_rq_retry 0\nupstream_rq_retry_limit_exceeded 2\nupstream_rq_503 4"
			})
			results[p.name] = pathResult{answers: answers, log: untagLog(log, tag), stats: stats}
		})
	}
	sameUntaggedAnswersAsGoroutinePath(t, results)
}
