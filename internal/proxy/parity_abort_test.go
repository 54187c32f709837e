package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestUpstreamAbortChargedSamePaths: a request the router gives up on
// before its response started (a refused connection, a connection closed
// or a stream reset before the response, a malformed response, the
// route timeout, the per-try timeout with no retry left) counts its
// local reply's status as the cluster's response on every path, as
// Envoy's router charges it (Filter::chargeUpstreamAbort,
// chargeUpstreamCode): upstream_rq_<code>, upstream_rq_5xx,
// upstream_rq_completed. A retried attempt counts nothing (a request
// retried and then answered counts its answer only), and neither does a
// reset once the response started (the response's head counted). Every
// path counted no status for these, so that a cluster's
// upstream_rq_xx{envoy_response_code_class="5"} missed its timeouts and
// resets. An overflow of the cluster's circuit breakers is charged as
// its 503 too.
func TestUpstreamAbortChargedSamePaths(t *testing.T) {
	dead := deadAddr(t)
	closing := tcpUpstream(t, func(c net.Conn) { // the request read, the connection closed
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = http.ReadRequest(bufio.NewReader(c))
	})
	malformed := rawHTTP1Upstream(t, "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
	slow := newBackend(t, "slow")
	slow.slow = 10 * time.Second
	var flakyConns atomic.Int32 // the first connection of each path's run is closed at its request
	flaky := tcpUpstream(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		first := flakyConns.Add(1) == 1
		for {
			req, err := http.ReadRequest(br)
			if err != nil || first {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	cut := cutHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
	h2up := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		switch path := strings.Join(r.values(":path"), ""); path {
		case "/reset":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/malformed":
			w.headers(id, false, 0, ":status", "2x0")
		case "/cut":
			w.headers(id, false, 0, ":status", "200")
			_ = w.fr.WriteData(id, false, []byte("partial"))
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		}
		// "/slow": never answered.
	})
	timeout := func(r *routev3.Route, d time.Duration) *routev3.Route {
		r.GetRoute().Timeout = durationpb.New(d)
		return r
	}
	retry := func(r *routev3.Route, on string, perTry time.Duration) *routev3.Route {
		rp := &routev3.RetryPolicy{RetryOn: on, NumRetries: u32(1),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
		if perTry > 0 {
			rp.PerTryTimeout = durationpb.New(perTry)
		}
		r.GetRoute().RetryPolicy = rp
		return r
	}
	cases := []struct {
		name, cluster string
		h2            bool // over h2c to an HTTP/2 upstream
		path          string
		answer        string           // status, and "cut" when the body did not end
		want          map[string]int64 // the cluster's counters
	}{
		{"connection refused (UF)", "refused", false, "/refused/", "503",
			map[string]int64{"upstream_rq_503": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"reset before the response (UC)", "closing", false, "/closing/", "503",
			map[string]int64{"upstream_rq_503": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"protocol error (UPE)", "malformed", false, "/malformed/", "502",
			map[string]int64{"upstream_rq_502": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"route timeout (UT)", "slow", false, "/slow/", "504",
			map[string]int64{"upstream_rq_504": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1, "upstream_rq_timeout": 1}},
		{"per-try timeout, retries exhausted", "pertry", false, "/pertry/", "504",
			map[string]int64{"upstream_rq_504": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1,
				"upstream_rq_per_try_timeout": 2, "upstream_rq_retry": 1, "upstream_rq_total": 2}},
		{"retried, then answered", "flaky", false, "/flaky/", "200",
			map[string]int64{"upstream_rq_200": 1, "upstream_rq_2xx": 1, "upstream_rq_503": 0, "upstream_rq_5xx": 0,
				"upstream_rq_completed": 1, "upstream_rq_retry": 1, "upstream_rq_total": 2}},
		{"reset after the response started", "cut", false, "/cut/", "200 cut",
			map[string]int64{"upstream_rq_200": 1, "upstream_rq_2xx": 1, "upstream_rq_5xx": 0, "upstream_rq_completed": 1}},
		{"HTTP/2 remote reset (UR)", "h2reset", true, "/reset", "503",
			map[string]int64{"upstream_rq_503": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"HTTP/2 protocol error (UPE)", "h2malformed", true, "/malformed", "502",
			map[string]int64{"upstream_rq_502": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"HTTP/2 route timeout (UT)", "h2slow", true, "/slow", "504",
			map[string]int64{"upstream_rq_504": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1}},
		{"HTTP/2 per-try timeout, retries exhausted", "h2pertry", true, "/slow", "504",
			map[string]int64{"upstream_rq_504": 1, "upstream_rq_5xx": 1, "upstream_rq_completed": 1, "upstream_rq_per_try_timeout": 2}},
		{"HTTP/2 reset after the response started", "h2cut", true, "/cut", "200 cut",
			map[string]int64{"upstream_rq_200": 1, "upstream_rq_2xx": 1, "upstream_rq_5xx": 0, "upstream_rq_completed": 1}},
	}
	// HTTP/2 cases are told apart by their :authority (the upstream sees
	// the path as is).
	routes := []*routev3.VirtualHost{
		vhost("h2reset", []string{"h2reset"}, routeTo("/", "h2reset")),
		vhost("h2malformed", []string{"h2malformed"}, routeTo("/", "h2malformed")),
		vhost("h2slow", []string{"h2slow"}, timeout(routeTo("/", "h2slow"), 100*time.Millisecond)),
		vhost("h2pertry", []string{"h2pertry"}, retry(routeTo("/", "h2pertry"), "5xx", 100*time.Millisecond)),
		vhost("h2cut", []string{"h2cut"}, routeTo("/", "h2cut")),
		vhost("v", []string{"*"}, routeTo("/refused/", "refused"), routeTo("/closing/", "closing"),
			routeTo("/malformed/", "malformed"), timeout(routeTo("/slow/", "slow"), 100*time.Millisecond),
			retry(routeTo("/pertry/", "pertry"), "5xx", 100*time.Millisecond), retry(routeTo("/flaky/", "flaky"), "reset", 0),
			routeTo("/cut/", "cut")),
	}
	// The overflow's cluster has its own listener: its circuit breakers
	// keep a listener's h2c off the loops.
	resources := []types.Resource{routeConfig("rds", routes...), httpListener("overflow", httpManager("overflow", "rds-overflow")),
		routeConfig("rds-overflow", vhost("v", []string{"*"}, timeout(routeTo("/", "overflow"), time.Second)))}
	for c, addr := range map[string]string{"refused": dead, "closing": closing, "malformed": malformed, "slow": slow.addr(),
		"pertry": slow.addr(), "flaky": flaky, "cut": cut} {
		resources = append(resources, edsCluster(c), cla(c, addr))
	}
	resources = append(resources, edsCluster("overflow", func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: u32(1)}}}
	}), cla("overflow", slow.addr()))
	for _, c := range []string{"h2reset", "h2malformed", "h2slow", "h2pertry", "h2cut"} {
		resources = append(resources, edsCluster(c, h2Upstream), cla(c, h2up))
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			flakyConns.Store(0)
			h := newHarness(t, p.on)
			h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds"))}, resources...)...)
			h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			h2 := h2cClient(t)
			for _, tc := range cases {
				cl, host := h1, "x"
				if tc.h2 {
					cl, host = h2, tc.cluster
				}
				if got := abortAnswer(t, cl, "http://"+h.addr("egress")+tc.path, host); got != tc.answer {
					t.Errorf("%s: answered %s; want %s", tc.name, got, tc.answer)
				}
				want := map[string]int64{}
				for n, v := range tc.want {
					want["cluster."+tc.cluster+"."+n] = v
				}
				t.Run(tc.name, func(t *testing.T) { waitStats(t, h, want) })
			}
			if !p.goroutines {
				if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 && !p.h2Goroutines {
					t.Errorf("on the loops %v, %d connections handed off; want true, 0", l.OnLoops(), l.HandedOff())
				}
				if !p.h2Goroutines && h.stat("http.egress.downstream_cx_http2_total") == 0 {
					t.Error("no h2c connection on the loops")
				}
			}
			// The loops hand such a cluster's requests off.
			overflowed(t, h, h1)
			waitStats(t, h, map[string]int64{"cluster.overflow.upstream_rq_503": 1, "cluster.overflow.upstream_rq_504": 1,
				"cluster.overflow.upstream_rq_5xx": 2, "cluster.overflow.upstream_rq_completed": 2,
				"cluster.overflow.upstream_rq_pending_overflow": 1})
		})
	}
}

// abortAnswer GETs url with host, and tells the status and whether the
// body was cut.
func abortAnswer(t *testing.T, cl *http.Client, url, host string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := cl.Do(req)
	if err != nil {
		return "error " + err.Error()
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return fmt.Sprintf("%d cut", resp.StatusCode)
	}
	return fmt.Sprint(resp.StatusCode)
}

// overflowed sends the "overflow" listener's cluster (max_requests 1) one
// request that its upstream holds and a second one while it is in
// flight: the second is answered 503 (UO, the circuit breaker's
// overflow), the first 504 at its route timeout.
func overflowed(t *testing.T, h *harness, cl *http.Client) {
	t.Helper()
	first := make(chan string, 1)
	go func() { first <- abortAnswer(t, cl, "http://"+h.addr("overflow")+"/", "x") }() // ends within its timeout
	waitStats(t, h, map[string]int64{"cluster.overflow.upstream_rq_active": 1})
	if got := abortAnswer(t, cl, "http://"+h.addr("overflow")+"/", "x"); got != "503" {
		t.Errorf("overflow: answered %s; want 503", got)
	}
	if got := <-first; got != "504" {
		t.Errorf("the request in flight: answered %s; want 504", got)
	}
}
