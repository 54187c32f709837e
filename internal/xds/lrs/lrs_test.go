package lrs

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/auth"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

const owner = "111122223333"

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// start serves s on a loopback gRPC server, the way the wiring does (the
// unknown-service handler, the xDS listener's message size limit), and
// returns a client.
func start(t *testing.T, s *Server) lrsv3.LoadReportingServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(s.UnknownServiceHandler(), grpc.MaxRecvMsgSize(1<<20))
	go gs.Serve(ln) // ends with Stop in Cleanup
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return lrsv3.NewLoadReportingServiceClient(conn)
}

func newServer(c *clock, authorize func(context.Context, translate.Identity) (bool, error), l Limits) *Server {
	return New(Options{
		ParseNodeID: func(id string) (translate.Identity, error) { return xdsserver.ParseNodeID(id, owner) },
		Authorize:   authorize, Limits: l, Now: c.now,
	})
}

func node(name string) *corev3.Node { return &corev3.Node{Id: "mesh/m/virtualNode/" + name} }

func cluster(name string, issued, ok, failed, active uint64) *endpointv3.ClusterStats {
	return &endpointv3.ClusterStats{ClusterName: name, UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{
		TotalIssuedRequests: issued, TotalSuccessfulRequests: ok, TotalErrorRequests: failed, TotalRequestsInProgress: active}}}
}

// open starts a stream for n and checks the server's answer.
func open(t *testing.T, ctx context.Context, c lrsv3.LoadReportingServiceClient, n *corev3.Node) lrsv3.LoadReportingService_StreamLoadStatsClient {
	t.Helper()
	st, err := c.StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("first response: %v", err)
	}
	if !r.GetSendAllClusters() || r.GetLoadReportingInterval().AsDuration() != DefaultInterval {
		t.Fatalf("first response %v: want send_all_clusters and %v", r, DefaultInterval)
	}
	return st
}

// waitFor polls cond (the server records reports on its own goroutine)
// until it holds, failing at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestTraffic(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	s := newServer(c, nil, Limits{})
	client := start(t, s)
	st := open(t, t.Context(), client, node("front"))
	c.add(5 * time.Second)
	if err := st.Send(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{
		cluster("cds_egress_m_red_http_8080", 40, 38, 2, 3),
		cluster("cds_egress_m_blue_http_8080", 10, 10, 0, 0),
		cluster("cds_ingress_m_front_http_8080", 99, 99, 0, 0), // the node's own app: no edge
		cluster("cds_egress_m_amazonaws", 7, 7, 0, 0),          // outside the mesh
	}}); err != nil {
		t.Fatal(err)
	}
	var edges []Edge
	waitFor(t, "two edges", func() bool { edges = s.Traffic(owner, "m"); return len(edges) == 2 })
	want := []struct {
		target   string
		rps, err float64
		inflight uint64
	}{{"blue", 2, 0, 0}, {"red", 8, 0.05, 3}}
	for i, w := range want {
		e := edges[i]
		if e.Source != (Endpoint{appmesh.KindVirtualNode, "front"}) || e.Target != (Endpoint{appmesh.KindVirtualNode, w.target}) ||
			e.RequestsPerSecond != w.rps || e.ErrorRatio != w.err || e.InFlight != w.inflight || e.P50Ms != nil || !e.LastReport.Equal(c.now()) {
			t.Errorf("edge %d: %+v, want front -> %s at %v rps, error ratio %v, %d in flight", i, e, w.target, w.rps, w.err, w.inflight)
		}
	}
	if got := s.Traffic(owner, "other"); len(got) != 0 {
		t.Errorf("another mesh's traffic: %+v", got)
	}
	// Prometheus counters count every report since the start.
	if n := series(t, s, "weft_traffic_requests_total", "target", "red"); n != 40 {
		t.Errorf("weft_traffic_requests_total{target=red} = %v, want 40", n)
	}
	if n := series(t, s, "weft_traffic_requests_in_flight", "target", "red"); n != 3 {
		t.Errorf("weft_traffic_requests_in_flight{target=red} = %v, want 3", n)
	}
	// Past the window, the reports are gone.
	c.add(DefaultWindow + time.Second)
	if got := s.Traffic(owner, "m"); len(got) != 0 {
		t.Errorf("after the window: %+v", got)
	}
}

// TestTrafficLocalities: a report of a cluster's load per locality, as
// Envoy and weft proxy send it (their hosts' counts per locality, the
// cluster's dropped requests apart), counts each locality in the edge:
// requests, errors and requests in flight are their sums. The cluster's
// dropped requests (its circuit breakers' 503s, which no host counts) are
// requests and errors of the edge too, alone in a report or not; they
// were left out, so that the error ratio missed them.
func TestTrafficLocalities(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	s := newServer(c, nil, Limits{})
	client := start(t, s)
	st := open(t, t.Context(), client, node("front"))
	c.add(5 * time.Second)
	red := cluster("cds_egress_m_red_http_8080", 30, 27, 2, 1)
	east := &corev3.Locality{Region: "us-east-1", Zone: "us-east-1a"}
	red.UpstreamLocalityStats[0].Locality = east
	red.UpstreamLocalityStats = append(red.UpstreamLocalityStats, &endpointv3.UpstreamLocalityStats{
		Locality: &corev3.Locality{Region: "us-west-2"}, TotalIssuedRequests: 10, TotalSuccessfulRequests: 8,
		TotalErrorRequests: 2, TotalRequestsInProgress: 2})
	red.TotalDroppedRequests = 5
	// Every request to blue overflowed: no locality, only drops.
	blue := &endpointv3.ClusterStats{ClusterName: "cds_egress_m_blue_http_8080", TotalDroppedRequests: 10}
	if err := st.Send(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{red, blue}}); err != nil {
		t.Fatal(err)
	}
	var edges []Edge
	waitFor(t, "two edges", func() bool { edges = s.Traffic(owner, "m"); return len(edges) == 2 })
	if e := edges[0]; e.Target.Name != "blue" || e.RequestsPerSecond != 2 || e.ErrorRatio != 1 || e.InFlight != 0 {
		t.Errorf("edge %+v; want blue, 2 rps (10 dropped over 5 s), error ratio 1, none in flight", e)
	}
	if e := edges[1]; e.Target.Name != "red" || e.RequestsPerSecond != 9 || e.ErrorRatio != 9.0/44 || e.InFlight != 3 {
		t.Errorf("edge %+v; want red, 9 rps (40 issued and 5 dropped over 5 s), error ratio 9/44, 3 in flight", e)
	}
	for target, want := range map[string][2]float64{"red": {45, 9}, "blue": {10, 10}} {
		got := [2]float64{series(t, s, "weft_traffic_requests_total", "target", target), series(t, s, "weft_traffic_errors_total", "target", target)}
		if got != want {
			t.Errorf("weft_traffic_requests_total and errors_total{target=%s} = %v; want %v", target, got, want)
		}
	}
}

// series returns the value of s's series name whose label k is v.
func series(t *testing.T, s *Server, name, k, v string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, k, v)
	return 0
}

func TestAuthorize(t *testing.T) {
	tokens := auth.NewTokens([]byte("0123456789abcdef0123456789abcdef"))
	x := &auth.XDS{Tokens: tokens, Region: "us-east-1", Required: true}
	c := &clock{t: time.Now()}
	s := newServer(c, x.Authorize, Limits{})
	client := start(t, s)
	now := time.Now()
	tok, err := tokens.Mint(appmesh.ARN("us-east-1", appmesh.Ref{Owner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "front"}), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	front := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	// refused runs a stream that sends reqs and returns its status.
	refused := func(t *testing.T, ctx context.Context, reqs ...*lrsv3.LoadStatsRequest) error {
		t.Helper()
		st, err := client.StreamLoadStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if err := st.Send(r); err != nil {
				break
			}
		}
		for {
			if _, err := st.Recv(); err != nil {
				return err
			}
		}
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		reqs []*lrsv3.LoadStatsRequest
		want codes.Code
		msg  string
	}{
		{"no credentials", t.Context(), []*lrsv3.LoadStatsRequest{{Node: node("front")}}, codes.Unauthenticated, "Missing Authentication Token"},
		{"token of another node", front, []*lrsv3.LoadStatsRequest{{Node: node("red")}}, codes.PermissionDenied, "not arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/red"},
		{"no node", front, []*lrsv3.LoadStatsRequest{{}}, codes.InvalidArgument, "node.id"},
		{"later report for another node", front, []*lrsv3.LoadStatsRequest{{Node: node("front")},
			{Node: node("red"), ClusterStats: []*endpointv3.ClusterStats{cluster("cds_egress_m_blue_http_8080", 1, 1, 0, 0)}}},
			codes.PermissionDenied, `reports for "mesh/m/virtualNode/front", not "mesh/m/virtualNode/red"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := refused(t, tc.ctx, tc.reqs...)
			if status.Code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.msg)
			}
		})
	}
	if got := s.Traffic(owner, "m"); len(got) != 0 {
		t.Errorf("refused reports were kept: %+v", got)
	}
	// The token's own node reports.
	st := open(t, front, client, node("front"))
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: node("front"), ClusterStats: []*endpointv3.ClusterStats{cluster("cds_egress_m_blue_http_8080", 5, 5, 0, 0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edge front -> blue", func() bool { return len(s.Traffic(owner, "m")) == 1 })
}

func TestBounds(t *testing.T) {
	c := &clock{t: time.Now()}
	s := newServer(c, nil, Limits{MaxClustersPerReporter: 10, MaxReporters: 3, MaxReportersPerNode: 1, MaxEdges: 5})
	client := start(t, s)
	ctx := t.Context()

	t.Run("clusters per reporter", func(t *testing.T) {
		st := open(t, ctx, client, node("front"))
		var cs []*endpointv3.ClusterStats
		for i := range 5000 {
			cs = append(cs, cluster(fmt.Sprintf("cds_egress_m_n%d_http_8080", i), 1, 1, 0, 0))
		}
		if err := st.Send(&lrsv3.LoadStatsRequest{ClusterStats: cs}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the dropped clusters counted", func() bool {
			return series(t, s, "weft_lrs_dropped_total", "reason", "cluster_limit") == 4990
		})
		if n := len(s.Traffic(owner, "m")); n != 10 {
			t.Errorf("%d edges kept, want the limit, 10", n)
		}
		if n := series(t, s, "weft_lrs_dropped_total", "reason", "edge_limit"); n != 5 {
			t.Errorf("edges dropped from /metrics: %v, want 5 (10 kept, 5 exported)", n)
		}
	})

	t.Run("message size", func(t *testing.T) {
		st := open(t, ctx, client, node("blue"))
		big := cluster("cds_egress_m_"+strings.Repeat("x", 2<<20)+"_http_8080", 1, 1, 0, 0)
		st.Send(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{big}})
		_, err := st.Recv()
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a 2 MiB report: %v, want ResourceExhausted", err)
		}
	})

	t.Run("reporters per node", func(t *testing.T) {
		// front's stream is open: a second one for front is refused.
		st, err := client.StreamLoadStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&lrsv3.LoadStatsRequest{Node: node("front")})
		if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a second stream of front: %v, want ResourceExhausted", err)
		}
	})

	t.Run("reporters", func(t *testing.T) {
		// front's and red's streams are open, blue's closed but in the
		// window: a new stream evicts blue's, the next is refused.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		open(t, sctx, client, node("red"))
		open(t, sctx, client, node("yellow"))
		st, err := client.StreamLoadStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&lrsv3.LoadStatsRequest{Node: node("green")})
		if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a third open stream: %v, want ResourceExhausted", err)
		}
	})
}

func TestTargetNode(t *testing.T) {
	for _, tc := range []struct {
		mesh, cluster, node string
	}{
		{"m", "cds_egress_m_red_http_8080", "red"},
		{"m", "cds_egress_m_red_v2_grpc_50051", "red_v2"},
		{"my_mesh", "cds_egress_my_mesh_blue_tcp_9000", "blue"},
		{"m", "cds_egress_m_red_http2_80", "red"},
		{"m", "cds_ingress_m_red_http_8080", ""},
		{"m", "cds_ingress_m_gw_self_redirect_http_15001", ""},
		{"m", "cds_egress_m_amazonaws", ""},
		{"m", "cds_egress_m_mesh-allow-all", ""},
		{"m", "cds_egress_other_red_http_8080", ""},
		{"m", "cds_egress_m__http_8080", ""},
		{"m", "cds_egress_m_red_udp_8080", ""},
		{"m", "cds_egress_m_red_http_80a", ""},
	} {
		got, ok := TargetNode(tc.mesh, tc.cluster)
		if got != tc.node || ok != (tc.node != "") {
			t.Errorf("TargetNode(%q, %q) = %q, %v; want %q", tc.mesh, tc.cluster, got, ok, tc.node)
		}
	}
}

// TestHostileValues: counts that would wrap and latencies that are not
// numbers are bounded or ignored, and the graph still encodes as JSON.
func TestHostileValues(t *testing.T) {
	c := &clock{t: time.Now()}
	s := newServer(c, nil, Limits{})
	st := open(t, t.Context(), start(t, s), node("front"))
	c.add(5 * time.Second)
	huge := cluster("cds_egress_m_red_http_8080", math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64)
	l := huge.UpstreamLocalityStats[0]
	huge.UpstreamLocalityStats = append(huge.UpstreamLocalityStats, l, l)
	l.LoadMetricStats = []*endpointv3.EndpointLoadMetricStats{
		{MetricName: MetricP50, NumRequestsFinishedWithMetric: 1, TotalMetricValue: math.Inf(1)},
		{MetricName: MetricP50, NumRequestsFinishedWithMetric: 1, TotalMetricValue: math.NaN()},
		{MetricName: MetricP99, NumRequestsFinishedWithMetric: 2, TotalMetricValue: -1},
		{MetricName: MetricP99, NumRequestsFinishedWithMetric: 4, TotalMetricValue: 40},
	}
	for range 3 {
		if err := st.Send(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{huge}}); err != nil {
			t.Fatal(err)
		}
	}
	var edges []Edge
	waitFor(t, "three reports", func() bool {
		edges = s.Traffic(owner, "m")
		return len(edges) == 1 && edges[0].P99Ms != nil && series(t, s, "weft_traffic_requests_total", "target", "red") >= 3*maxCount
	})
	e := edges[0]
	if e.P50Ms != nil || *e.P99Ms != 10 || e.RequestsPerSecond <= 0 || e.ErrorRatio < 0 || e.ErrorRatio > 1 {
		t.Errorf("edge %+v: want no p50, p99 10 ms, a positive rate and a ratio in [0,1]", e)
	}
	if _, err := json.Marshal(edges); err != nil {
		t.Errorf("the graph does not encode: %v", err)
	}
}

// TestSilentStreamClosed: a stream that never names its node is closed
// with DeadlineExceeded after FirstRequestTimeout, and counted as refused;
// a stream that does name it in time is served as usual.
func TestSilentStreamClosed(t *testing.T) {
	c := &clock{t: time.Now()}
	s := newServer(c, nil, Limits{FirstRequestTimeout: 300 * time.Millisecond})
	client := start(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := client.StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "naming the node") {
		t.Fatalf("a silent stream ended with %v, want DeadlineExceeded", err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	refused := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "weft_lrs_refused_streams_total" {
			refused = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if refused != 1 {
		t.Errorf("weft_lrs_refused_streams_total = %v, want 1", refused)
	}
	open(t, ctx, client, node("front")) // answered with the interval
}
