package proxy

import (
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The tail most parity tests share, in four steps: send each exchange
// and check its answer (eachClient, getAnswer, roundTripAnswer,
// checkAnswer), await the access log's lines and check them
// (awaitWantLog), then compare what every path saw with the goroutine
// path's (sameAnswersAsGoroutinePath).

// answerOf reads and closes resp's body and returns the answer as the
// parity tests compare answers: the status code, a space and the body.
func answerOf(resp *http.Response) string {
	a, _ := readAnswer(resp)
	return a
}

// readAnswer is answerOf with the error of the body's read, for a test
// that checks it.
func readAnswer(resp *http.Response) (string, error) {
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp.Status[:3] + " " + string(b), err
}

// roundTripAnswer sends req with send (a Client's Do, a RoundTripper's
// RoundTrip) and returns its answer as answerOf gives it; an error ends
// the test, naming key.
func roundTripAnswer(t testing.TB, send func(*http.Request) (*http.Response, error), req *http.Request, key string) string {
	t.Helper()
	resp, err := send(req)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return answerOf(resp)
}

// getAnswer GETs url with c and returns its answer as answerOf gives it;
// an error ends the test.
func getAnswer(t testing.TB, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return answerOf(resp)
}

// checkAnswer records got as key's answer in answers and fails the test
// unless it is want.
func checkAnswer(t testing.TB, answers map[string]string, key, got, want string) {
	t.Helper()
	answers[key] = got
	if got != want {
		t.Errorf("%s: answered\n%q\nwant\n%q", key, got, want)
	}
}

// eachClient runs f with an HTTP/1.1 client, then with an h2c one, each
// with its protocol as the access log's %PROTOCOL% names it, and closes
// each client's idle connections after its turn.
func eachClient(t testing.TB, f func(proto string, c *http.Client)) {
	t.Helper()
	for _, h2 := range []bool{false, true} {
		c := &http.Client{Transport: &http.Transport{}}
		if h2 {
			c = h2cClient(t)
		}
		f(clientProto(h2), c)
		c.CloseIdleConnections()
	}
}

// awaitWantLog waits until the access log file holds as many lines as
// want and fails the test unless they are want's, in any order. It
// returns the log sorted, as awaitLog does.
func awaitWantLog(t *testing.T, file string, want []string) string {
	t.Helper()
	log := awaitLog(t, file, len(want))
	if w := sortLines(strings.Join(want, "\n") + "\n"); log != w {
		t.Errorf("access log %s\n%s\nwant\n%s", filepath.Base(file), log, w)
	}
	return log
}

// sameAnswersAsGoroutinePath is sameAsGoroutinePath comparing every
// answer that any path gave, so that a path's missing or extra exchange
// fails too.
func sameAnswersAsGoroutinePath(t *testing.T, results map[string]pathResult) {
	t.Helper()
	keys := map[string]bool{}
	for _, r := range results {
		for k := range r.answers {
			keys[k] = true
		}
	}
	sameAsGoroutinePath(t, results, slices.Sorted(maps.Keys(keys)))
}

// sameUntaggedAnswersAsGoroutinePath is sameAnswersAsGoroutinePath for
// tests whose requests on each path have their own paths, ending in the
// path's tag (its name, spaces as dashes): compared without it.
func sameUntaggedAnswersAsGoroutinePath(t *testing.T, results map[string]pathResult) {
	t.Helper()
	for name, r := range results {
		untagged := map[string]string{}
		for k, v := range r.answers {
			untagged[strings.TrimSuffix(k, "/"+strings.ReplaceAll(name, " ", "-"))] = v
		}
		r.answers = untagged
		results[name] = r
	}
	sameAnswersAsGoroutinePath(t, results)
}

// loggedEgress starts a harness on path p, its access logs flushed every
// millisecond (proxyPath.logged), and pushes it an egress listener whose
// connection manager routes on rds and logs each stream in format to a
// new file, with rs (the route configuration rds and its clusters); it
// returns the harness and the log's file.
func loggedEgress(t testing.TB, p proxyPath, format *corev3.SubstitutionFormatString, rs ...types.Resource) (*harness, string) {
	t.Helper()
	h := newHarness(t, p.logged)
	logFile := filepath.Join(t.TempDir(), "access.log")
	h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format)))}, rs...)...)
	return h, logFile
}

// retryCluster is a cluster of a connect-failure retry test: its hosts,
// HTTP/2 or not, and its routes' back-off base interval.
type retryCluster struct {
	name  string
	h2    bool
	hosts []string
	base  time.Duration // the back-off's base interval
}

// pushConnectRetries gives h an egress listener logging format to a new
// file, whose route /<name>/ for each of clusters retries connect
// failures twice with the cluster's back-off, and returns the log's path.
func pushConnectRetries(t *testing.T, h *harness, format *corev3.SubstitutionFormatString, clusters []retryCluster) string {
	t.Helper()
	return pushRetries(t, h, format, clusters, &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: u32(2)})
}

// pushRetries gives h an egress listener logging format to a new file,
// whose route /<name>/ for each of clusters retries by policy with the
// cluster's back-off, and returns the log's path.
func pushRetries(t *testing.T, h *harness, format *corev3.SubstitutionFormatString, clusters []retryCluster, policy *routev3.RetryPolicy) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "access.log")
	var routes []*routev3.Route
	res := []types.Resource{httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format)))}
	for _, c := range clusters {
		r := routeTo("/"+c.name+"/", c.name)
		rp := proto.Clone(policy).(*routev3.RetryPolicy)
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(c.base)}
		r.GetRoute().RetryPolicy = rp
		routes = append(routes, r)
		var mods []func(*clusterv3.Cluster)
		if c.h2 {
			mods = append(mods, h2Upstream)
		}
		res = append(res, edsCluster(c.name, mods...), cla(c.name, c.hosts...))
	}
	h.push(append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)))...)
	return logFile
}

// gatedUpstream keeps, by request path, what the gated upstreams of the
// retry parity tests (overflowUpstream, partialUpstream) need: how many
// attempts came, the length of the body's first part, the gate the first
// attempt opens once it read that part (the client sends on), and what
// closes when the second attempt begins.
type gatedUpstream struct {
	mu       sync.Mutex
	attempts map[string]int
	gates    map[string]chan struct{}
	retried  map[string]chan struct{}
	first    map[string]int
}

func newGatedUpstream() *gatedUpstream {
	return &gatedUpstream{attempts: map[string]int{}, gates: map[string]chan struct{}{}, retried: map[string]chan struct{}{},
		first: map[string]int{}}
}

// expect sets up path's exchange: its first part's length, the gate its
// first attempt opens once it read that part, and what closes when its
// second attempt begins.
func (g *gatedUpstream) expect(path string, first int) (gate, retried <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gc, rc := make(chan struct{}), make(chan struct{})
	g.gates[path], g.retried[path], g.first[path] = gc, rc, first
	return gc, rc
}

// times is how many attempts of path the upstream saw.
func (g *gatedUpstream) times(path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.attempts[path]
}

// attempt counts an attempt of path and returns its number, 1 for the
// first; the second closes path's retried.
func (g *gatedUpstream) attempt(path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.attempts[path]++
	n := g.attempts[path]
	if n == 2 {
		close(g.retried[path])
	}
	return n
}

// openGate reads the first part of r's body and opens its path's gate;
// false when that read failed (answered 400).
func (g *gatedUpstream) openGate(w http.ResponseWriter, r *http.Request) bool {
	g.mu.Lock()
	gate, first := g.gates[r.URL.Path], g.first[r.URL.Path]
	g.mu.Unlock()
	if _, err := io.ReadFull(r.Body, make([]byte, first)); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	close(gate) // the client sends the rest
	return true
}

// h1h2RetryClusters serves up on an HTTP/1.1 upstream and on an h2c one
// and returns them as the retry clusters h1 and h2 (a 25 ms back-off
// base), on which most retry parity tests run each case.
func h1h2RetryClusters(t *testing.T, up http.Handler) []retryCluster {
	t.Helper()
	h1up := httptest.NewServer(up)
	t.Cleanup(h1up.Close)
	return []retryCluster{
		{"h1", false, []string{strings.TrimPrefix(h1up.URL, "http://")}, 25 * time.Millisecond},
		{"h2", true, []string{h2cUpstream(t, up)}, 25 * time.Millisecond},
	}
}

// attemptLog is the access log format of the retry parity tests: the
// client's protocol, method and path, then the status, the flags and the
// attempts made.
func attemptLog() *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"}}
}

// postPartsAs sends parts as a POST's body to the proxy at addr as client
// does: "h2c" through h2c (postPartsH2Gated), "chunked" as an HTTP/1.1
// chunked body, else with a content-length (postPartsGated); it returns
// the answer.
func postPartsAs(t *testing.T, h2c *http.Client, addr, path, client string, parts [][]byte, before func(i int)) string {
	t.Helper()
	if client == "h2c" {
		return postPartsH2Gated(t, h2c, addr, path, parts, before)
	}
	return postPartsGated(t, addr, path, parts, client == "chunked", before)
}

// checkClusterCounts checks counters of each of clusters on h against
// want's and returns them, each cluster's under its name, for the
// comparison of the paths.
func checkClusterCounts(t *testing.T, h *harness, clusters []retryCluster, counters []string, want func(retryCluster) string) string {
	t.Helper()
	var stats []string
	for _, c := range clusters {
		got := h.counts("cluster."+c.name+".", counters)
		if w := want(c); got != w {
			t.Errorf("%s counters\n%s\nwant\n%s", c.name, got, w)
		}
		stats = append(stats, c.name+"\n"+got)
	}
	return strings.Join(stats, "\n")
}

// untagLog is an access log of requests whose paths end in a path's tag
// (sameUntaggedAnswersAsGoroutinePath), without it.
func untagLog(log, tag string) string { return strings.ReplaceAll(log, "/"+tag+" ", "/ ") }

// pacedParts paces an outgrowing body's parts for postPartsAs: the
// second once the first attempt read the first (the goroutine path starts
// the retry when the client sends more), the third once the second
// attempt began, each after partGap.
func pacedParts(t *testing.T, path string, gate, retried <-chan struct{}) func(i int) {
	return func(i int) {
		wait, what := gate, "the first attempt did not read the first part"
		if i == 2 {
			wait, what = retried, "no second attempt began"
		}
		if i > 0 {
			select {
			case <-wait:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: %s", path, what)
			}
		}
		time.Sleep(partGap)
	}
}
