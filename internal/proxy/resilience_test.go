package proxy

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func retryRoute(cluster, retryOn string, n uint32, codes ...uint32) *routev3.Route {
	r := routeTo("/", cluster)
	r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: u32(n),
		RetriableStatusCodes: codes, PerTryTimeout: durationpb.New(2 * time.Second),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})}}},
		HostSelectionRetryMaxAttempts: 5,
		RetryBackOff:                  &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	return r
}

func TestRetries(t *testing.T) {
	checkRetries(t, newHarness(t), filepath.Join(t.TempDir(), "access.log"))
}

// checkRetries runs the retry cases on h's egress listener: with logPath,
// the listener writes an access log there and the cases check its flags.
func checkRetries(t *testing.T, h *harness, logPath string) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	var logged []func(*hcmv3.HttpConnectionManager)
	if logPath != "" {
		logged = append(logged, withAccessLog(logPath, nil))
	}
	inLog := func(what, s string) {
		t.Helper()
		if logPath == "" {
			return
		}
		waitUntil(t, 5*time.Second, what+" in the access log", func() bool {
			l, _ := os.ReadFile(logPath)
			return strings.Contains(string(l), s)
		})
	}
	h.push(
		httpListener("egress", httpManager("egress", "rds", logged...)),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "gateway-error,reset,retriable-status-codes", 2, 409))),
		edsCluster("c"), cla("c", a.addr(), b.addr()))
	c := newClient(t)
	addr := h.addr("egress")

	t.Run("a 503 is retried on the other host", func(t *testing.T) {
		a.set(503, -1)
		defer a.set(0, 0)
		for i := 0; i < 10; i++ {
			resp, e, body := get(t, c, addr, "x", "/")
			if resp.StatusCode != 200 || e.Backend != "b" {
				t.Fatalf("request %d: %d %q %s", i, resp.StatusCode, e.Backend, body)
			}
		}
		if got := h.stat("cluster.c.upstream_rq_retry"); got < 1 {
			t.Errorf("upstream_rq_retry = %d", got)
		}
		if got := h.stat("cluster.c.upstream_rq_retry_success"); got < 1 {
			t.Errorf("upstream_rq_retry_success = %d", got)
		}
	})
	t.Run("retriable status code 409", func(t *testing.T) {
		a.set(409, 1)
		b.set(409, 1)
		resp, _, body := get(t, c, addr, "x", "/")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %s", resp.StatusCode, body)
		}
	})
	t.Run("retry limit: the last response passes through with URX", func(t *testing.T) {
		a.set(502, -1)
		b.set(502, -1)
		defer a.set(0, 0)
		defer b.set(0, 0)
		before, limit := a.count()+b.count(), h.stat("cluster.c.upstream_rq_retry_limit_exceeded")
		resp, _, body := get(t, c, addr, "x", "/")
		if resp.StatusCode != 502 || !strings.Contains(body, "failing") {
			t.Fatalf("status %d %q, want the upstream 502", resp.StatusCode, body)
		}
		if got := a.count() + b.count() - before; got != 3 {
			t.Errorf("%d attempts, want 1 + 2 retries", got)
		}
		if got := h.stat("cluster.c.upstream_rq_retry_limit_exceeded") - limit; got != 1 {
			t.Errorf("upstream_rq_retry_limit_exceeded went up by %d, want 1", got)
		}
		inLog("URX", " 502 URX ")
	})
	t.Run("retry budget spent: the response passes through, counted as an overflow", func(t *testing.T) {
		h.push(
			httpListener("egress", httpManager("egress", "rds", logged...)),
			routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "gateway-error", 2))),
			edsCluster("c", func(c *clusterv3.Cluster) {
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: u32(0)}}}
			}),
			cla("c", a.addr(), b.addr()))
		a.set(503, -1)
		b.set(503, -1)
		defer a.set(0, 0)
		defer b.set(0, 0)
		before := a.count() + b.count()
		resp, _, _ := get(t, c, addr, "x", "/")
		if resp.StatusCode != 503 {
			t.Fatalf("status %d, want the upstream 503", resp.StatusCode)
		}
		if got := a.count() + b.count() - before; got != 1 {
			t.Errorf("%d attempts, want 1 (no retry budget)", got)
		}
		if got := h.stat("cluster.c.upstream_rq_retry_overflow"); got < 1 {
			t.Errorf("upstream_rq_retry_overflow = %d", got)
		}
	})
	t.Run("connection failure is retried", func(t *testing.T) {
		dead := newBackend(t, "dead")
		deadAddr := dead.addr()
		dead.srv.Close()
		h.push(
			httpListener("egress", httpManager("egress", "rds", logged...)),
			routeConfig("rds", vhost("v", []string{"*"}, retryRoute("c", "connect-failure", 3))),
			edsCluster("c", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN }),
			cla("c", deadAddr, b.addr()))
		for i := 0; i < 6; i++ {
			resp, e, body := get(t, c, addr, "x", "/")
			if resp.StatusCode != 200 || e.Backend != "b" {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
		}
		if got := h.stat("cluster.c.upstream_cx_connect_fail"); got < 1 {
			t.Errorf("upstream_cx_connect_fail = %d", got)
		}
	})
	t.Run("without a retry policy a connection failure is 503 UF", func(t *testing.T) {
		dead := newBackend(t, "dead")
		deadAddr := dead.addr()
		dead.srv.Close()
		h.push(
			httpListener("egress", httpManager("egress", "rds", logged...)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
			edsCluster("c"), cla("c", deadAddr))
		resp, _, body := get(t, c, addr, "x", "/uf")
		if resp.StatusCode != 503 || !strings.Contains(body, "remote connection failure") {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		inLog("UF", `"GET /uf HTTP/1.1" 503 UF `)
	})
}

func TestTimeouts(t *testing.T) {
	h := newHarness(t)
	slow := newBackend(t, "slow")
	slow.slow = 10 * time.Second
	fast := newBackend(t, "fast")
	logPath := filepath.Join(t.TempDir(), "access.log")
	timed := routeTo("/slow", "slow")
	timed.GetRoute().Timeout = durationpb.New(50 * time.Millisecond)
	perTry := retryRoute("mixed", "5xx", 1)
	perTry.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/pertry"}
	perTry.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(50 * time.Millisecond)
	msd := routeTo("/duration", "slow")
	msd.GetRoute().Timeout = durationpb.New(0)
	msd.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(50 * time.Millisecond)}
	idle := routeTo("/idle", "slow")
	idle.GetRoute().Timeout = durationpb.New(0)
	idle.GetRoute().IdleTimeout = durationpb.New(50 * time.Millisecond)
	h.push(
		httpListener("egress", httpManager("egress", "rds", withAccessLog(logPath, nil))),
		routeConfig("rds", vhost("v", []string{"*"}, timed, perTry, idle, msd)),
		edsCluster("slow"), cla("slow", slow.addr()),
		edsCluster("mixed", func(c *clusterv3.Cluster) {}), cla("mixed", slow.addr(), fast.addr()))
	c := newClient(t)
	addr := h.addr("egress")

	t.Run("route timeout answers 504 with UT", func(t *testing.T) {
		resp, _, body := get(t, c, addr, "x", "/slow")
		if resp.StatusCode != 504 || body != "upstream request timeout" {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		waitUntil(t, 5*time.Second, "UT in the access log", func() bool {
			l, _ := os.ReadFile(logPath)
			return strings.Contains(string(l), `"GET /slow HTTP/1.1" 504 UT `)
		})
		if got := h.stat("cluster.slow.upstream_rq_timeout"); got != 1 {
			t.Errorf("upstream_rq_timeout = %d", got)
		}
	})
	t.Run("per-try timeout retries on the other host", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			resp, e, body := get(t, c, addr, "x", "/pertry")
			if resp.StatusCode != 200 || e.Backend != "fast" {
				t.Fatalf("status %d %s", resp.StatusCode, body)
			}
		}
		if got := h.stat("cluster.mixed.upstream_rq_per_try_timeout"); got < 1 {
			t.Errorf("upstream_rq_per_try_timeout = %d", got)
		}
	})
	// A GET is received whole at its head: its timeouts before the
	// response answer 504 (408 only while a request is still arriving),
	// as Envoy's maybeRequestTimeoutCode; the max stream duration's
	// without a flag.
	t.Run("max stream duration answers 504 without a flag", func(t *testing.T) {
		resp, _, _ := get(t, c, addr, "x", "/duration")
		if resp.StatusCode != 504 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		waitUntil(t, 5*time.Second, "the 504 in the access log", func() bool {
			l, _ := os.ReadFile(logPath)
			return strings.Contains(string(l), `"GET /duration HTTP/1.1" 504 - `)
		})
	})
	t.Run("idle timeout answers 504 with SI", func(t *testing.T) {
		resp, _, _ := get(t, c, addr, "x", "/idle")
		if resp.StatusCode != 504 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		waitUntil(t, 5*time.Second, "SI in the access log", func() bool {
			l, _ := os.ReadFile(logPath)
			return strings.Contains(string(l), `"GET /idle HTTP/1.1" 504 SI `)
		})
		// The timer counts it beside the answer, which may go out first.
		waitUntil(t, 5*time.Second, "downstream_rq_idle_timeout 1", func() bool {
			return h.stat("http.egress.downstream_rq_idle_timeout") >= 1
		})
		if got := h.stat("http.egress.downstream_rq_idle_timeout"); got != 1 {
			t.Errorf("downstream_rq_idle_timeout = %d, want 1", got)
		}
	})
}

func TestOutlierEjection(t *testing.T) {
	h := newHarness(t)
	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.set(500, -1)
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: u32(3), Interval: durationpb.New(time.Hour),
				BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionPercent: u32(50)}
		}),
		cla("c", good.addr(), bad.addr()))
	c := newClient(t)
	addr := h.addr("egress")
	fails := 0
	for i := 0; i < 40; i++ {
		resp, _, _ := get(t, c, addr, "x", "/")
		if resp.StatusCode == 500 {
			fails++
		}
	}
	if fails != 3 {
		t.Errorf("%d requests failed; the bad host should be ejected after 3 consecutive 5xx", fails)
	}
	if got := h.stat("cluster.c.outlier_detection.ejections_enforced_consecutive_5xx"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d", got)
	}
	if got := h.stat("cluster.c.outlier_detection.ejections_active"); got != 1 {
		t.Errorf("ejections_active = %d", got)
	}
	if cl := h.admin("/clusters"); !strings.Contains(cl, "c::"+bad.addr()+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not show the ejection:\n%s", cl)
	}
}

func TestCircuitBreaking(t *testing.T) {
	h := newHarness(t)
	slow := newBackend(t, "slow")
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(1)
	var once sync.Once
	slow.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(started.Done)
		<-release
		w.WriteHeader(200)
	})
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: u32(1), MaxPendingRequests: u32(1), MaxRequests: u32(100), MaxRetries: u32(3)}}}
		}),
		cla("c", slow.addr()))
	c := newClient(t)
	addr := h.addr("egress")
	codes := make(chan int, 3)
	var wg sync.WaitGroup
	send := func() {
		defer wg.Done()
		resp, _, _ := get(t, c, addr, "x", "/")
		codes <- resp.StatusCode
	}
	wg.Add(1)
	go send() // holds the only connection; ends when release is closed
	started.Wait()
	wg.Add(1)
	go send() // waits in the pending queue; ends when release is closed
	waitUntil(t, 5*time.Second, "one pending request", func() bool { return h.stat("cluster.c.upstream_rq_pending_active") == 1 })
	resp, _, body := get(t, c, addr, "x", "/")
	if resp.StatusCode != 503 || !strings.Contains(body, "overflow") {
		t.Errorf("third request: %d %q, want 503 overflow", resp.StatusCode, body)
	}
	if v := h.stat("cluster.c.circuit_breakers.default.rq_pending_open"); v != 1 {
		t.Errorf("rq_pending_open = %d while the queue is full", v)
	}
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Errorf("queued request got %d", code)
		}
	}
	if got := h.stat("cluster.c.upstream_rq_pending_overflow"); got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d", got)
	}
}

func TestHealthChecks(t *testing.T) {
	h := newHarness(t)
	up, down := newBackend(t, "up"), newBackend(t, "down")
	down.set(503, -1)
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c", func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(20 * time.Millisecond),
				UnhealthyThreshold: u32(2), HealthyThreshold: u32(2),
				HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Host: "c.local", Path: "/healthcheck"}}}}
		}),
		cla("c", up.addr(), down.addr()))
	waitUntil(t, 10*time.Second, "one healthy host of two", func() bool {
		return h.stat("cluster.c.membership_healthy") == 1 && h.stat("cluster.c.health_check.failure") >= 2
	})
	c := newClient(t)
	addr := h.addr("egress")
	for i := 0; i < 20; i++ {
		resp, e, _ := get(t, c, addr, "x", "/")
		if resp.StatusCode != 200 || e.Backend != "up" {
			t.Fatalf("request %d went to %q (%d)", i, e.Backend, resp.StatusCode)
		}
	}
	if cl := h.admin("/clusters"); !strings.Contains(cl, "c::"+down.addr()+"::health_flags::/failed_active_hc") ||
		!strings.Contains(cl, "c::"+up.addr()+"::health_flags::healthy") {
		t.Errorf("/clusters health flags:\n%s", cl)
	}
	// The failing host recovers after healthy_threshold passes.
	down.set(0, 0)
	waitUntil(t, 10*time.Second, "both hosts healthy", func() bool { return h.stat("cluster.c.membership_healthy") == 2 })
	_ = wrapperspb.UInt32
}

func TestTCPAndGRPCHealthChecks(t *testing.T) {
	h := newHarness(t)
	up := newBackend(t, "up")
	closed := newBackend(t, "closed")
	closedAddr := closed.addr()
	closed.srv.Close()
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }() // ends with gs.Stop in Cleanup
	t.Cleanup(gs.Stop)
	hs.SetServingStatus("color", healthpb.HealthCheckResponse_NOT_SERVING)
	check := func(hc *corev3.HealthCheck) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			hc.Timeout, hc.Interval = durationpb.New(time.Second), durationpb.New(20*time.Millisecond)
			hc.UnhealthyThreshold, hc.HealthyThreshold = u32(1), u32(1)
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}
	}
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "tcp"))),
		edsCluster("tcp", check(&corev3.HealthCheck{HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}})),
		cla("tcp", up.addr(), closedAddr),
		edsCluster("grpc", check(&corev3.HealthCheck{HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: "color"}}})),
		cla("grpc", ln.Addr().String()))
	waitUntil(t, 10*time.Second, "tcp check: one of two healthy", func() bool {
		return h.stat("cluster.tcp.membership_healthy") == 1 && h.stat("cluster.tcp.health_check.failure") > 0
	})
	waitUntil(t, 10*time.Second, "grpc check: NOT_SERVING is unhealthy", func() bool {
		return h.stat("cluster.grpc.health_check.failure") > 0 && h.stat("cluster.grpc.membership_healthy") == 0
	})
	hs.SetServingStatus("color", healthpb.HealthCheckResponse_SERVING)
	waitUntil(t, 10*time.Second, "grpc check: SERVING is healthy", func() bool { return h.stat("cluster.grpc.membership_healthy") == 1 })
}
