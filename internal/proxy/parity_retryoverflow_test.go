package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// overflowUpstream is the upstream of the retry buffer's parity tests.
// By path, /<cluster>/<case>/<client>/<tag>: (last-503, last-reset) the
// first attempt reads the body's first part, tells the client to send
// more (its gate) and answers 503; the second tells the client to send
// the rest (retried), reads the whole body, then answers 503 (last-503)
// or closes its connection, resets its stream (last-reset). (whole)
// Every attempt reads the whole body; the first answers 503, the next
// 200 with the body's length, digest and attempt number.
type overflowUpstream struct{ *gatedUpstream }

func (ou overflowUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := ou.attempt(r.URL.Path)
	cs := strings.Split(r.URL.Path, "/")[2]
	if cs == "whole" || n > 1 {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch {
		case cs == "whole" && n > 1:
			fmt.Fprintf(w, "%s %d %x attempt %d", r.Method, len(b), sha256.Sum256(b), n)
		case cs == "last-reset":
			panic(http.ErrAbortHandler) // the HTTP/1.1 connection closed, the HTTP/2 stream reset
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	if ou.openGate(w, r) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

// TestRetryBufferOutgrownSamePaths: what a body outgrowing
// route.MaxRetryBuffer (Envoy's default buffer limit, 1 MiB) does to a
// request's retries, the same on every path, HTTP/1.1 clients (a length,
// chunked) and h2c ones, HTTP/1.1 and HTTP/2 clusters, under retry_on
// 5xx with num_retries 1:
//
// (last-503, last-reset) The first attempt fails (503) after the body's
// first 1,000 bytes and is retried; the client sends 1,000 more, then,
// once the second attempt began, 1 MiB and 64 KiB more, which outgrow
// the buffer during the last attempt, which then fails too (503, or a
// reset). Envoy's Filter::decodeData drops its
// retry state when the body outgrows its buffer, so neither its
// onUpstreamHeaders nor its maybeRetryReset sees one: nothing is flagged
// URX nor counted in upstream_rq_retry_limit_exceeded. Until round 35
// every path flagged and counted these (they looked at num_retries
// before the body), and the loops kept no copy of the last attempt's
// body to an HTTP/1.1 cluster to see it outgrow.
//
// (whole) A body of exactly 1 MiB, whose first attempt reads it all
// and answers 503, is retried and answered 200 by the second: the bound
// counts the body alone, as Envoy's decodeData and the goroutine path
// count it. Until round 35 the loops counted an HTTP/1.1 cluster's
// request as written (its head, and chunk framing with its body), and
// did not retry it.
//
// Each request whose body outgrew the buffer while a retry could come
// counts once in the cluster's retry_or_shadow_abandoned, as decodeData
// counts it (cluster.<name>.retry_or_shadow_abandoned); the whole one
// does not.
func TestRetryBufferOutgrownSamePaths(t *testing.T) {
	ou := overflowUpstream{newGatedUpstream()}
	clusters := h1h2RetryClusters(t, ou)
	outgrown := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), bytes.Repeat([]byte("C"), proxyroute.MaxRetryBuffer+64<<10)}
	whole := [][]byte{bytes.Repeat([]byte("w"), proxyroute.MaxRetryBuffer)}
	cases := []string{"last-503", "last-reset", "whole"}
	clients := []string{"length", "chunked", "h2c"}
	format := attemptLog()
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_limit_exceeded",
		"retry_or_shadow_abandoned", "upstream_rq_200", "upstream_rq_503"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			tag := strings.ReplaceAll(p.name, " ", "-")
			h := newHarness(t, p.logged)
			logFile := pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1)})
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			for _, c := range clusters {
				for _, cs := range cases {
					for _, client := range clients {
						if !c.h2 && cs != "whole" && client != "length" {
							// The goroutine path starts the retry of a body of
							// no length to an HTTP/1.1 cluster only when the
							// client sends more (docs/proxy.md, Known
							// differences): no second attempt to wait for.
							continue
						}
						path := fmt.Sprintf("/%s/%s/%s/%s", c.name, cs, client, tag)
						parts := outgrown
						if cs == "whole" {
							parts = whole
						}
						gate, retried := ou.expect(path, len(parts[0]))
						before := pacedParts(t, path, gate, retried) // as TestBodyArrivingPartSentRetriedSamePaths sends its parts
						got := postPartsAs(t, h2c, h.addr("egress"), path, client, parts, before)
						body := bytes.Join(parts, nil)
						var want, line string
						switch cs {
						case "last-503":
							want, line = "503 ", "503 - 2"
						case "last-reset":
							want = "503 " + strings.Replace(resetReplyOf(c.h2), "reset reason", "retried and the latest reset reason", 1)
							line = resetFlagOf(c.h2) + " 2"
						default:
							want, line = fmt.Sprintf("200 POST %d %x attempt 2", len(body), sha256.Sum256(body)), "200 - 2"
						}
						checkAnswer(t, answers, path, got, want)
						wantLog = append(wantLog, fmt.Sprintf("%s POST %s %s", clientProto(client == "h2c"), path, line))
						if n := ou.times(path); n != 2 {
							t.Errorf("%s: the upstream saw %d attempts, want 2", path, n)
						}
					}
				}
			}
			log := awaitWantLog(t, logFile, wantLog)
			stats := checkClusterCounts(t, h, clusters, counters, func(c retryCluster) string {
				// Requests of two attempts each, all retried once; those
				// whose body outgrew the buffer are abandoned and not
				// counted as over their retry limit.
				if !c.h2 { // two outgrown requests, a length client's
					return "upstream_rq_total 10\nupstream_rq_retry 5\nupstream_rq_retry_success 3\nupstream_rq_retry_limit_exceeded 0\n" +
						"retry_or_shadow_abandoned 2\nupstream_rq_200 3\nupstream_rq_503 2"
				}
				return "upstream_rq_total 18\nupstream_rq_retry 9\nupstream_rq_retry_success 3\nupstream_rq_retry_limit_exceeded 0\n" +
					"retry_or_shadow_abandoned 6\nupstream_rq_200 3\nupstream_rq_503 6"
			})
			results[p.name] = pathResult{answers: answers, log: untagLog(log, tag), stats: stats}
		})
	}
	sameUntaggedAnswersAsGoroutinePath(t, results)
}
