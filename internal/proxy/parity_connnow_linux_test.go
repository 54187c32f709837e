package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// unreachableAddr is a host whose connect fails at once, in connect(2)
// itself: Linux's TCP refuses a multicast destination with ENETUNREACH
// before sending anything (tcp_v4_connect), whatever the routes, as
// Envoy's own tests make an "immediate connect error"
// (ConnectionImplTest, 224.0.0.1). Nothing to set up or clean up.
const unreachableAddr = "224.0.0.1:9"

// TestConnectFailsAtOnceRetriedSamePaths: a connect that fails at once
// (connect(2) itself: Network is unreachable) is retried under
// connect-failure as one that fails later, on every path, to HTTP/1.1
// and HTTP/2 clusters, from HTTP/1.1 and h2c clients, as Envoy reports it
// (a remote close on the dispatcher's next event, a pool failure that
// Filter::maybeRetryReset retries). With the cluster's only host so, the
// request is answered after its three attempts: 503 "retried and the
// latest reset reason: remote connection failure, transport failure
// reason: immediate connect error: Network is unreachable", UF,URX, the
// attempts counted in upstream_rq_retry, upstream_cx_connect_fail and the
// host's cx_connect_fail. With a healthy host beside it, a request whose
// first attempt went to the failing one is served by the healthy one (200
// after two attempts), an HTTP/1.1 request's body with it. Until round 32
// the loops answered the first attempt's failure (503 UF, one attempt).
func TestConnectFailsAtOnceRetriedSamePaths(t *testing.T) {
	echoBody := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	})
	h1up := httptest.NewServer(echoBody)
	t.Cleanup(h1up.Close)
	h2up := h2cUpstream(t, echoBody)
	clusters := []retryCluster{
		// A 1 ms base backs off 0 ms before the first retry: the next
		// attempt starts at once (retryNow's loop); 20 ms mostly waits
		// on the loop's timers.
		{"h1-only", false, []string{unreachableAddr}, time.Millisecond},
		{"h2-only", true, []string{unreachableAddr}, 20 * time.Millisecond},
		{"h1-mixed", false, []string{unreachableAddr, strings.TrimPrefix(h1up.URL, "http://")}, 20 * time.Millisecond},
		{"h2-mixed", true, []string{unreachableAddr, h2up}, time.Millisecond},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}
	const why = "remote connection failure, transport failure reason: immediate connect error: Network is unreachable"
	failed := "503 UF,URX upstream_reset_before_response_started{remote_connection_failure|immediate_connect_error:_Network_is_unreachable} " +
		"immediate_connect_error:_Network_is_unreachable 3"
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_limit_exceeded",
		"upstream_rq_200", "upstream_rq_503", "upstream_cx_connect_fail"}
	hostStat := regexp.MustCompile(`(?m)^[^:]+::` + regexp.QuoteMeta(unreachableAddr) + `::(cx_connect_fail|rq_total|rq_error)::\d+$`)
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := pushConnectRetries(t, h, format, clusters)
			answers := map[string]string{}
			var wantLog []string
			n := 0 // requests to the mixed clusters
			eachClient(t, func(client string, cl *http.Client) {
				for _, c := range clusters {
					// Two to a mixed cluster: its round robin takes the
					// failing host first for one of them at least.
					for i := range 1 + strings.Count(c.name, "mixed") {
						path := fmt.Sprintf("/%s/%d", c.name, i)
						key := client + " GET " + path
						want := "503 " + retriedPrefix + why
						if strings.HasSuffix(c.name, "mixed") {
							want = "200 GET "
							n++
						} else {
							wantLog = append(wantLog, key+" "+failed)
						}
						checkAnswer(t, answers, key, getAnswer(t, cl, "http://"+h.addr("egress")+path), want)
					}
				}
			})
			// An HTTP/1.1 request with a body, head and body in one write:
			// the body goes with every attempt.
			for i := range 2 {
				path := fmt.Sprintf("/h1-mixed/post%d", i)
				checkAnswer(t, answers, "HTTP/1.1 POST "+path, postOnce(t, h.addr("egress"), path, "hello"), "200 POST hello")
				n++
			}
			log := awaitLog(t, logFile, len(wantLog)+n)
			lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
			for _, l := range wantLog {
				if !slices.Contains(lines, l) {
					t.Errorf("access log has no %q:\n%s", l, log)
				}
			}
			retried := 0
			for _, l := range lines {
				if strings.HasSuffix(l, " 200 - via_upstream - 2") {
					retried++
				}
			}
			if retried < 4 {
				t.Errorf("access log: %d requests to a mixed cluster retried to its healthy host, want 4 at least (one per client and cluster, two POSTs):\n%s", retried, log)
			}
			var stats []string
			for _, c := range clusters {
				stats = append(stats, h.counts("cluster."+c.name+".", counters))
			}
			hosts := hostStat.FindAllString(h.admin("/clusters"), -1)
			slices.Sort(hosts)
			stats = append(stats, strings.Join(hosts, "\n"))
			if only := h.counts("cluster.h1-only.", counters[:4]); only != "upstream_rq_total 6\nupstream_rq_retry 4\nupstream_rq_retry_success 0\nupstream_rq_retry_limit_exceeded 2" {
				t.Errorf("h1-only counters\n%s", only)
			}
			// Each connect counts in upstream_cx_total, one that fails at
			// once too (the mixed clusters' healthy connections are not
			// compared: each loop has its own).
			for _, name := range []string{"h1-only", "h2-only"} {
				if got := h.counts("cluster."+name+".", []string{"upstream_cx_connect_fail", "upstream_cx_total"}); got != "upstream_cx_connect_fail 6\nupstream_cx_total 6" {
					t.Errorf("%s: %s, want 6 each (three attempts of two requests)", name, got)
				}
			}
			results[p.name] = pathResult{answers: answers, log: log, stats: strings.Join(stats, "\n")}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// postOnce sends a POST of body to the proxy at addr on a new
// connection, its head and body in one write, and returns the answer's
// status and body.
func postOnce(t *testing.T, addr, path, body string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return answerOf(resp)
}
