package lrs

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// collector is an LRS server that asks for every cluster each second and
// hands the reports to the test.
type collector struct {
	lrsv3.UnimplementedLoadReportingServiceServer
	reports chan *lrsv3.LoadStatsRequest
}

func (c *collector) StreamLoadStats(st lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	if first.GetNode().GetId() == "" {
		return status.Error(codes.InvalidArgument, "no node")
	}
	if err := st.Send(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(time.Millisecond)}); err != nil {
		return err
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return nil
		}
		c.reports <- r
	}
}

func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	register(gs)
	go gs.Serve(ln) // ends with Stop in Cleanup
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func TestReports(t *testing.T) {
	c := &collector{reports: make(chan *lrsv3.LoadStatsRequest, 16)}
	addr := serve(t, func(gs *grpc.Server) { lrsv3.RegisterLoadReportingServiceServer(gs, c) })
	st := stats.NewStore()
	red := st.Scope("cluster.cds_egress_m_red_http_8080.", "envoy_cluster_")
	st.Scope("cluster.cds_egress_m_idle_http_8080.", "envoy_cluster_").Counter("upstream_rq_total")
	red.Counter("upstream_rq_total").Add(3) // before the stream: not reported
	red.Counter("upstream_rq_completed").Add(3)
	red.Gauge("upstream_rq_active").Set(1)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	node := &corev3.Node{Id: "mesh/m/virtualNode/front"}
	go func() { done <- Run(ctx, Config{Server: addr, Node: node}, st, slog.New(slog.DiscardHandler)) }() // ends with cancel below

	// next waits for a report with clusters.
	next := func() *lrsv3.LoadStatsRequest {
		t.Helper()
		select {
		case r := <-c.reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no report within 10 s")
			return nil
		}
	}
	// A request in flight from the start makes every interval report the
	// cluster: the first report says the stream and its baseline are up.
	// The interval asked for (1 ms) is raised to MinInterval.
	r := next()
	if r.GetNode().GetId() != node.GetId() || len(r.GetClusterStats()) != 1 {
		t.Fatalf("report: %v; want node %s and one cluster (the idle one left out)", r, node.GetId())
	}
	cs := r.GetClusterStats()[0]
	if l := cs.GetUpstreamLocalityStats()[0]; cs.GetClusterName() != "cds_egress_m_red_http_8080" || l.GetTotalIssuedRequests() != 0 ||
		l.GetTotalRequestsInProgress() != 1 || cs.GetLoadReportInterval().AsDuration() < MinInterval/2 {
		t.Fatalf("first report: %v; want nothing issued (the 3 requests before the stream are not reported), 1 in flight, over about %v", cs, MinInterval)
	}
	// Then the reports add up to what happened since, whichever interval
	// each increment fell in.
	red.Counter("upstream_rq_total").Add(10)
	red.Counter("upstream_rq_completed").Add(9)
	red.TaggedCounter("upstream_rq_5xx", "upstream_rq_xx").Add(2)
	var issued, ok, failed uint64
	for issued < 10 || ok+failed < 9 {
		for _, cs := range next().GetClusterStats() {
			l := cs.GetUpstreamLocalityStats()[0]
			issued, ok, failed = issued+l.GetTotalIssuedRequests(), ok+l.GetTotalSuccessfulRequests(), failed+l.GetTotalErrorRequests()
		}
	}
	if issued != 10 || ok != 7 || failed != 2 {
		t.Fatalf("reports add up to %d issued, %d ok, %d failed; want 10, 7, 2", issued, ok, failed)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestNoService: a control plane without LRS ends the reporting, without
// an error for the proxy.
func TestNoService(t *testing.T) {
	addr := serve(t, func(*grpc.Server) {})
	err := Run(t.Context(), Config{Server: addr, Node: &corev3.Node{Id: "mesh/m/virtualNode/front"}}, stats.NewStore(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}
