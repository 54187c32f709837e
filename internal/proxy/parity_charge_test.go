package proxy

import (
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The counts of requests the proxy answers itself that round 23's
// TestUpstreamAbortChargedSamePaths left out: no healthy host, a route
// timeout with no attempt in flight (a retry's back-off) or with one
// still waiting for a connection, and a retry the cluster's max_retries
// refuses.

// chargeRoute is a route to cluster with a route timeout and a policy
// retrying on on once, after a back-off of at most backoff.
func chargeRoute(prefix, cluster string, timeout time.Duration, on string, backoff time.Duration) *routev3.Route {
	r := routeTo(prefix, cluster)
	r.GetRoute().Timeout = durationpb.New(timeout)
	if on != "" {
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: on, NumRetries: u32(1),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(backoff)}}
	}
	return r
}

// TestNoHealthyUpstreamChargedSamePaths: a 503 for no healthy upstream
// (UH) counts as the cluster's 503 (upstream_rq_503, upstream_rq_5xx,
// upstream_rq_completed) on every path, as Envoy's router charges it
// (Filter::sendNoHealthyUpstreamResponse calls chargeUpstreamCode), over
// HTTP/1.1 and over h2c (which the loops answer themselves), and when a
// retry finds the cluster empty (Filter::doRetry answers it so too).
// Every path counted nothing for the cluster. The goroutine path also
// kept the retry's reservation of max_retries after such a retry, so
// that the cluster's next retry overflowed; and the loops counted an
// HTTP/1.1 request's upstream_cx_none_healthy twice, at their pick and
// at the goroutine path's they hand it to.
func TestNoHealthyUpstreamChargedSamePaths(t *testing.T) {
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			// vanish holds its first request until released, then
			// closes the connection; afterwards it closes a
			// connection at its first request and answers the next.
			var served atomic.Int32
			got, release := make(chan struct{}, 1), make(chan struct{})
			vanish := h1UpstreamWithin(t, 10*time.Second, func(c net.Conn, _ *http.Request, _ []byte) bool {
				switch served.Add(1) {
				case 1:
					got <- struct{}{}
					<-release
					return false
				case 2:
					return false
				}
				_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return err == nil
			})
			// The whole configuration, with vanish's endpoints (a
			// snapshot replaces every resource).
			push := func(h *harness, vanishAt ...string) {
				h.push(httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, routeTo("/empty/", "empty"),
						chargeRoute("/vanish/", "vanish", 10*time.Second, "reset", time.Millisecond))),
					edsCluster("empty"), cla("empty"),
					edsCluster("vanish", func(c *clusterv3.Cluster) {
						c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: u32(1)}}}
					}), cla("vanish", vanishAt...))
			}
			h := newHarness(t, p.on)
			push(h, vanish)
			h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for _, cl := range []*http.Client{h1, h2cClient(t)} {
				if got := abortAnswer(t, cl, "http://"+h.addr("egress")+"/empty/", "x"); got != "503" {
					t.Errorf("no healthy upstream: answered %s; want 503", got)
				}
			}
			// One pick each: the loops hand the HTTP/1.1 request to the
			// goroutine path, whose pick counts it (the loops' counted it
			// too, so that it counted twice).
			waitStats(t, h, map[string]int64{"cluster.empty.upstream_rq_503": 2, "cluster.empty.upstream_rq_5xx": 2,
				"cluster.empty.upstream_rq_completed": 2, "cluster.empty.upstream_cx_none_healthy": 2})

			// The retry's pick: the host is gone when the first attempt
			// fails.
			answer := make(chan string, 1)
			go func() { answer <- abortAnswer(t, h1, "http://"+h.addr("egress")+"/vanish/", "x") }() // ends within the route timeout
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the first attempt did not come")
			}
			push(h)
			close(release)
			if got := <-answer; got != "503" {
				t.Errorf("a retry with no healthy host: answered %s; want 503", got)
			}
			waitStats(t, h, map[string]int64{"cluster.vanish.upstream_rq_503": 1, "cluster.vanish.upstream_rq_5xx": 1,
				"cluster.vanish.upstream_rq_completed": 1, "cluster.vanish.upstream_rq_retry": 1, "cluster.vanish.upstream_cx_none_healthy": 1})
			// The retry's reservation of max_retries (1) was given back:
			// the next request's retry is not an overflow.
			push(h, vanish)
			if got := abortAnswer(t, h1, "http://"+h.addr("egress")+"/vanish/", "x"); got != "200" {
				t.Errorf("a retry after: answered %s; want 200", got)
			}
			waitStats(t, h, map[string]int64{"cluster.vanish.upstream_rq_retry": 2, "cluster.vanish.upstream_rq_retry_overflow": 0,
				"cluster.vanish.upstream_rq_200": 1})
		})
	}
}

// TestTimeoutChargedSamePaths: the route timeout counts
// upstream_rq_timeout, and its 504 as the cluster's response, only when
// it ends an attempt in flight, as Envoy's Filter::onResponseTimeout
// counts and charges only the upstream requests it resets: during a
// retry's back-off nothing is counted (every path counted
// upstream_rq_timeout), and a request waiting for one of the cluster's
// max_connections counts both (the goroutine path, to which the loops
// hand such a cluster, counted no 504). A retry the cluster's
// max_retries refuses is flagged UO, as Envoy flags RetryStatus::
// NoOverflow, beside the answer's own flags (no path flagged it).
func TestTimeoutChargedSamePaths(t *testing.T) {
	dead := deadAddr(t)
	fails := rawHTTP1Upstream(t, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
	slow := newBackend(t, "slow")
	slow.slow = 10 * time.Second
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}
	// A back-off of up to 1000 h: the route timeout (100 ms) comes first.
	const backoff = 1000 * time.Hour
	noRetries := func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: u32(0)}}}
	}
	results := map[string]pathResult{}
	paths := []string{"/backoff/ HTTP/1.1", "/backoff/ HTTP/2", "/h2backoff HTTP/2", "/overflow/5xx", "/overflow/reset", "/pending"}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format,
				routeConfig("rds", vhost("h2", []string{"h2"}, chargeRoute("/", "h2backoff", 100*time.Millisecond, "connect-failure", backoff)),
					vhost("v", []string{"*"}, chargeRoute("/backoff/", "backoff", 100*time.Millisecond, "connect-failure", backoff),
						chargeRoute("/overflow/5xx", "overflow5xx", time.Second, "5xx", time.Millisecond),
						chargeRoute("/overflow/reset", "overflowreset", time.Second, "connect-failure", time.Millisecond))),
				edsCluster("backoff"), cla("backoff", dead), edsCluster("h2backoff", h2Upstream), cla("h2backoff", dead),
				edsCluster("overflow5xx", noRetries), cla("overflow5xx", fails),
				edsCluster("overflowreset", noRetries), cla("overflowreset", dead),
				// Its circuit breakers keep the listener's h2c off the
				// loops: a listener of its own.
				httpListener("pending", httpManager("pending", "rds-pending")),
				routeConfig("rds-pending", vhost("v", []string{"*"}, chargeRoute("/short", "pending", 100*time.Millisecond, "", 0),
					chargeRoute("/", "pending", time.Second, "", 0))),
				edsCluster("pending", func(c *clusterv3.Cluster) {
					c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(1)}}}
				}), cla("pending", slow.addr()))
			h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			h2 := h2cClient(t)
			res := pathResult{answers: map[string]string{}}
			res.answers["/backoff/ HTTP/1.1"] = abortAnswer(t, h1, "http://"+h.addr("egress")+"/backoff/", "x")
			res.answers["/backoff/ HTTP/2"] = abortAnswer(t, h2, "http://"+h.addr("egress")+"/backoff/", "x")
			res.answers["/h2backoff HTTP/2"] = abortAnswer(t, h2, "http://"+h.addr("egress")+"/h2backoff", "h2")
			res.answers["/overflow/5xx"] = abortAnswer(t, h1, "http://"+h.addr("egress")+"/overflow/5xx", "x")
			res.answers["/overflow/reset"] = abortAnswer(t, h1, "http://"+h.addr("egress")+"/overflow/reset", "x")
			// One request takes the one connection (for 1 s), the next
			// waits for it and times out first (100 ms); then the first.
			first := make(chan string, 1)
			go func() { first <- abortAnswer(t, h1, "http://"+h.addr("pending")+"/", "x") }() // ends within its timeout
			waitStats(t, h, map[string]int64{"cluster.pending.upstream_rq_total": 1})
			res.answers["/pending"] = abortAnswer(t, h1, "http://"+h.addr("pending")+"/short", "x") + ", " + <-first
			for n, want := range map[string]string{"/backoff/ HTTP/1.1": "504", "/backoff/ HTTP/2": "504", "/h2backoff HTTP/2": "504",
				"/overflow/5xx": "503", "/overflow/reset": "503", "/pending": "504, 504"} {
				if res.answers[n] != want {
					t.Errorf("%s: answered %s; want %s", n, res.answers[n], want)
				}
			}
			want := map[string]int64{
				"cluster.backoff.upstream_rq_timeout": 0, "cluster.backoff.upstream_rq_retry": 2, "cluster.backoff.upstream_rq_5xx": 0,
				"cluster.backoff.upstream_rq_completed": 0,
				"cluster.h2backoff.upstream_rq_timeout": 0, "cluster.h2backoff.upstream_rq_retry": 1, "cluster.h2backoff.upstream_rq_5xx": 0,
				"cluster.h2backoff.upstream_rq_completed":        0,
				"cluster.overflow5xx.upstream_rq_retry_overflow": 1, "cluster.overflow5xx.upstream_rq_503": 1,
				"cluster.overflowreset.upstream_rq_retry_overflow": 1, "cluster.overflowreset.upstream_rq_503": 1,
				"cluster.pending.upstream_rq_timeout": 2, "cluster.pending.upstream_rq_504": 2, "cluster.pending.upstream_rq_5xx": 2,
				"cluster.pending.upstream_rq_completed": 2,
			}
			waitStats(t, h, want)
			var names []string
			for n := range want {
				names = append(names, strings.TrimPrefix(n, "cluster."))
			}
			sort.Strings(names)
			res.stats = h.counts("cluster.", names)
			res.log = awaitLog(t, logFile, len(paths)-1)
			for _, line := range []string{"/backoff/ HTTP/1.1 504 UT backoff", "/backoff/ HTTP/2 504 UT backoff", "/h2backoff HTTP/2 504 UT h2backoff",
				"/overflow/5xx HTTP/1.1 503 UO overflow5xx", "/overflow/reset HTTP/1.1 503 UF,UO overflowreset"} {
				if !strings.Contains(res.log+"\n", line+"\n") {
					t.Errorf("the access log\n%s\nhas no line %q", res.log, line)
				}
			}
			results[p.name] = res
		})
	}
	sameAsGoroutinePath(t, results, paths)
}

// TestRetriedResponseChargedSamePaths: a response the router retries
// counts in the cluster's retry.upstream_rq_<code>,
// retry.upstream_rq_<class>xx and retry.upstream_rq_completed, not in its
// upstream_rq_* which count the request's answer only, as Envoy's router
// charges it (Filter::onUpstreamHeaders: chargeBasicResponseStat with the
// prefix retry); a response not retried, the retries spent, counts as the
// answer. Over an HTTP/1.1 upstream and, from h2c, an HTTP/2 one. Every
// path counted a retried 503 in upstream_rq_503, upstream_rq_5xx and
// upstream_rq_completed.
func TestRetriedResponseChargedSamePaths(t *testing.T) {
	var h1n, h2n atomic.Int32 // each upstream answers 503, then 200, and so on
	h1 := h1UpstreamWithin(t, 10*time.Second, func(c net.Conn, req *http.Request, _ []byte) bool {
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		if h1n.Add(1)%2 == 1 || req.URL.Path == "/always/" {
			resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
		}
		_, err := io.WriteString(c, resp)
		return err == nil
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		status := "200"
		if h2n.Add(1)%2 == 1 {
			status = "503"
		}
		w.headers(id, true, 0, ":status", status)
	})
	retried := func(prefix, cluster string) *routev3.Route {
		return chargeRoute(prefix, cluster, 10*time.Second, "5xx", time.Millisecond)
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h1n.Store(0)
			h2n.Store(0)
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("h2", []string{"h2"}, retried("/", "h2")),
					vhost("v", []string{"*"}, retried("/always/", "always"), retried("/", "h1"))),
				edsCluster("h1"), cla("h1", h1), edsCluster("always"), cla("always", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
			cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for _, q := range []struct {
				client           *http.Client
				path, host, want string
			}{
				{cl, "/", "x", "200"}, {cl, "/always/", "x", "503"}, {h2cClient(t), "/", "h2", "200"},
			} {
				if got := abortAnswer(t, q.client, "http://"+h.addr("egress")+q.path, q.host); got != q.want {
					t.Errorf("%s %s: answered %s; want %s", q.host, q.path, got, q.want)
				}
			}
			want := map[string]int64{}
			for _, c := range []string{"h1", "h2"} {
				for n, v := range map[string]int64{"upstream_rq_200": 1, "upstream_rq_2xx": 1, "upstream_rq_503": 0, "upstream_rq_5xx": 0,
					"upstream_rq_completed": 1, "upstream_rq_retry": 1, "retry.upstream_rq_503": 1, "retry.upstream_rq_5xx": 1,
					"retry.upstream_rq_completed": 1} {
					want["cluster."+c+"."+n] = v
				}
			}
			for n, v := range map[string]int64{"upstream_rq_503": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1,
				"retry.upstream_rq_503": 1, "retry.upstream_rq_5xx": 1, "retry.upstream_rq_completed": 1} {
				want["cluster.always."+n] = v
			}
			waitStats(t, h, want)
			if !p.goroutines {
				if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 && !p.h2Goroutines {
					t.Errorf("on the loops %v, %d connections handed off; want true, 0", l.OnLoops(), l.HandedOff())
				}
			}
		})
	}
}
