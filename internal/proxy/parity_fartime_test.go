package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryCenturiesSamePaths: a retry policy's durations of centuries
// are served as Envoy serves them, on every path, from HTTP/1.1 and h2c
// clients, to an HTTP/1.1 upstream and an HTTP/2 one: a per_try_timeout
// of 200 years (/try200/) or of the largest Duration there is (10,000
// years, past time.Duration's range: AsDuration saturates; /trymax/)
// lets an answer that takes 100 ms through; a retry_back_off whose
// base_interval and max_interval are that largest Duration (/backmax/),
// or whose base_interval is 100 years without a max_interval (Envoy's
// is then ten times the base: /back100/), makes a retried 503 wait,
// and the route timeout (1 s there) answers 504. The loops added a saturated
// per-try timeout, and a back-off past a loop time's range, to a loop
// time and wrapped: the attempt timed out at once (504), the retry came
// at once (503); the goroutine path's back-off drew a random duration
// below MaxInt64+1, which wraps, and panicked; and a base_interval of
// 100 years alone NACKed the route configuration (ten times it
// overflowed, below the base).
func TestRetryCenturiesSamePaths(t *testing.T) {
	const most = 315_576_000_000 // seconds: Duration's maximum (10,000 years)
	years := func(n int64) *durationpb.Duration { return &durationpb.Duration{Seconds: n * 365 * 24 * 3600} }
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/back") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(100 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	})
	// Up to four requests of a cluster wait for a back-off at once: past
	// max_retries' default (3) one would overflow (UO), whichever came
	// last.
	retries := func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: u32(64)}}}
	}
	h1 := httptest.NewServer(handler)
	t.Cleanup(h1.Close)
	h2, _ := xnetH2CUpstream(t, handler)
	clusters := []types.Resource{edsCluster("h1", retries), cla("h1", h1.Listener.Addr().String()),
		edsCluster("h2", h2Upstream, retries), cla("h2", h2)}
	var routes []*routev3.Route
	var names []string
	want := map[string]string{}
	for _, up := range []string{"h1", "h2"} {
		for _, c := range []struct {
			name   string
			policy *routev3.RetryPolicy
			answer string
		}{
			{"try200", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), PerTryTimeout: years(200)}, "200 ok"},
			{"trymax", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), PerTryTimeout: &durationpb.Duration{Seconds: most}}, "200 ok"},
			{"backmax", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: &durationpb.Duration{Seconds: most}, MaxInterval: &durationpb.Duration{Seconds: most}}}, "504 upstream request timeout"},
			{"back100", &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1), RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: years(100)}}, "504 upstream request timeout"},
		} {
			r := routeTo("/"+c.name+"/"+up+"/", up)
			// 1 s ends the back-offs; an answer of 100 ms gets 10 s,
			// which a loaded machine's (load average 20) 1 s was not.
			timeout := time.Second
			if strings.HasPrefix(c.name, "try") {
				timeout = 10 * time.Second
			}
			r.GetRoute().Timeout = durationpb.New(timeout)
			r.GetRoute().RetryPolicy = c.policy
			routes = append(routes, r)
			for _, client := range []string{"h1", "h2"} {
				name := client + " /" + c.name + "/" + up + "/x"
				names = append(names, name)
				want[name] = c.answer
			}
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		logFile := pushCutLog(t, h, nil, routes, clusters...)
		res := exchangeAll(t, p, h, names, func(name string) string { return want[name] })
		res.log = awaitLog(t, logFile, len(names))
		waitStats(t, h, map[string]int64{"http.egress.downstream_rq_active": 0})
		res.stats = h.counts("cluster.h1.", []string{"upstream_rq_per_try_timeout", "upstream_rq_retry", "upstream_rq_timeout"}) + "\n" +
			h.counts("cluster.h2.", []string{"upstream_rq_per_try_timeout", "upstream_rq_retry", "upstream_rq_timeout"})
		if l := h.listener("egress"); p.name == "loops" && l.HandedOff() != 0 {
			t.Errorf("loops: %d connections handed off; want 0", l.HandedOff())
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}
