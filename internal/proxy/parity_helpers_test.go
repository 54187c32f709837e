package proxy

import (
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
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
