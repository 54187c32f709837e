package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// partGap is the pause before each part of a request body sent after its
// head: long enough for the proxy to read the head alone and see its
// first attempt's connect fail (loopback answers a SYN to a closed port
// at once) before the body's first byte.
const partGap = 10 * time.Millisecond

// TestBodyArrivingConnectRetriedSamePaths: a POST whose body comes in
// several writes after its head (an HTTP/1.1 client's, with a length or
// chunked; an h2c client's DATA frames after its HEADERS), its first
// attempt's connect failing, is retried under connect-failure on every
// path, to HTTP/1.1 and HTTP/2 clusters, as Envoy's router retries it
// (Filter::doRetry sends the retry what it buffered, then the rest as it
// comes): nothing went upstream, so the next attempt sends all that came
// and then the rest. A connect refused (a delayed connect error) and one
// that fails at once (Network is unreachable), a healthy host beside
// it: 200, the whole body received upstream exactly once, two attempts
// for the request whose first went to the failing host. The only host
// refusing: 503 "retried and the latest reset reason: ...", UF,URX after
// the policy's three attempts, counted in upstream_rq_retry,
// upstream_rq_retry_limit_exceeded and upstream_cx_connect_fail, as the
// goroutine path counts them. Until round 33 the loops answered such a
// request 503 UF after its first attempt (they retried a request they
// held whole).
func TestBodyArrivingConnectRetriedSamePaths(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // the bodies received whole, by path
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[r.URL.Path]++
		mu.Unlock()
		fmt.Fprintf(w, "%s %d %x", r.Method, len(b), sha256.Sum256(b))
	})
	h1up := httptest.NewServer(echo)
	t.Cleanup(h1up.Close)
	h2up := h2cUpstream(t, echo)
	dead := deadAddr(t)
	clusters := []retryCluster{
		// A 1 ms base backs off 0 ms before the first retry (the next
		// attempt starts at once); 30 ms waits while parts arrive.
		{"h1-refused", false, []string{dead, strings.TrimPrefix(h1up.URL, "http://")}, 30 * time.Millisecond},
		{"h1-unreachable", false, []string{unreachableAddr, strings.TrimPrefix(h1up.URL, "http://")}, time.Millisecond},
		{"h2-refused", true, []string{dead, h2up}, time.Millisecond},
		{"h2-unreachable", true, []string{unreachableAddr, h2up}, 30 * time.Millisecond},
		{"h1-only", false, []string{dead}, time.Millisecond},
		{"h2-only", true, []string{dead}, time.Millisecond},
	}
	parts := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 70000), bytes.Repeat([]byte("c"), 3000)}
	whole := bytes.Join(parts, nil)
	served := fmt.Sprintf("200 POST %d %x", len(whole), sha256.Sum256(whole))
	const why = "remote connection failure, transport failure reason: delayed connect error: Connection refused"
	failed := "503 UF,URX upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused} " +
		"delayed_connect_error:_Connection_refused 3"
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_limit_exceeded",
		"upstream_rq_200", "upstream_rq_503", "upstream_cx_connect_fail"}
	clients := []string{"length", "chunked", "h2c"}
	results := map[string]pathResult{}
	var all []string
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			mu.Lock()
			clear(seen)
			mu.Unlock()
			h := newHarness(t, p.logged)
			logFile := pushConnectRetries(t, h, format, clusters)
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			lines := 0
			for _, client := range clients {
				for _, c := range clusters {
					only := strings.HasSuffix(c.name, "-only")
					// Two to a cluster with a healthy host: its round robin
					// takes the failing host first for one of them at least.
					n := 2
					if only {
						n = 1
					}
					for i := range n {
						path := fmt.Sprintf("/%s/%s/%d", c.name, client, i)
						var got string
						if client == "h2c" {
							got = postPartsH2(t, h2c, h.addr("egress"), path, parts)
						} else {
							got = postParts(t, h.addr("egress"), path, parts, client == "chunked")
						}
						answers[client+" "+path] = got
						lines++
						want := served
						if only {
							want = "503 " + retriedPrefix + why
							wantLog = append(wantLog, fmt.Sprintf("%s POST %s %s", clientProto(client == "h2c"), path, failed))
						}
						if got != want {
							t.Errorf("%s %s: answered\n%.200q\nwant\n%.200q", client, path, got, want)
						}
						mu.Lock()
						times := seen[path]
						mu.Unlock()
						if wantTimes := map[bool]int{false: 1, true: 0}[only]; times != wantTimes {
							t.Errorf("%s %s: the upstream received the body whole %d times, want %d", client, path, times, wantTimes)
						}
					}
				}
			}
			log := awaitLog(t, logFile, lines)
			logLines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
			for _, w := range wantLog {
				if !strings.Contains(log, w+"\n") {
					t.Errorf("access log has no %q:\n%s", w, log)
				}
			}
			for _, client := range clients {
				for _, c := range clusters {
					if strings.HasSuffix(c.name, "-only") {
						continue
					}
					retried := 0
					prefix := fmt.Sprintf("%s POST /%s/%s/", clientProto(client == "h2c"), c.name, client)
					for _, l := range logLines {
						if strings.HasPrefix(l, prefix) && strings.HasSuffix(l, " 200 - via_upstream - 2") {
							retried++
						}
					}
					if retried == 0 {
						t.Errorf("%s to %s: no request retried to the healthy host (200 after two attempts):\n%s", client, c.name, log)
					}
				}
			}
			for _, name := range []string{"h1-only", "h2-only"} {
				want := "upstream_rq_total 9\nupstream_rq_retry 6\nupstream_rq_retry_success 0\nupstream_rq_retry_limit_exceeded 3\n" +
					"upstream_rq_200 0\nupstream_rq_503 3\nupstream_cx_connect_fail 9"
				if got := h.counts("cluster."+name+".", counters); got != want {
					t.Errorf("%s counters\n%s\nwant\n%s", name, got, want)
				}
			}
			var stats []string
			for _, c := range clusters {
				stats = append(stats, c.name+"\n"+h.counts("cluster."+c.name+".", counters))
			}
			results[p.name] = pathResult{answers: answers, log: log, stats: strings.Join(stats, "\n")}
			all = all[:0]
			for k := range answers {
				all = append(all, k)
			}
		})
	}
	sameAsGoroutinePath(t, results, all)
}

// postParts sends a POST to the proxy at addr on a new HTTP/1.1
// connection: its head, then each of parts after partGap (with a
// content-length, or each part a chunk), and returns the answer
// (postPartsGated).
func postParts(t *testing.T, addr, path string, parts [][]byte, chunked bool) string {
	t.Helper()
	return postPartsGated(t, addr, path, parts, chunked, func(int) { time.Sleep(partGap) })
}

// postPartsH2 sends a POST through the h2c client cl to the proxy at
// addr: its HEADERS, then each of parts in DATA after partGap, and
// returns the answer (postPartsH2Gated).
func postPartsH2(t *testing.T, cl *http.Client, addr, path string, parts [][]byte) string {
	t.Helper()
	return postPartsH2Gated(t, cl, addr, path, parts, func(int) { time.Sleep(partGap) })
}
