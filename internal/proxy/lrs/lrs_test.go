package lrs

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
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

// fakeSource is a proxy's clusters, changed by the test.
type fakeSource struct {
	mu       sync.Mutex
	clusters []Cluster
}

func (f *fakeSource) LoadClusters() []Cluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.clusters)
	for i := range out {
		out[i].Hosts = slices.Clone(out[i].Hosts)
	}
	return out
}

// update changes cluster i under the lock.
func (f *fakeSource) update(i int, fn func(c *Cluster)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.clusters[i])
}

func TestReports(t *testing.T) {
	c := &collector{reports: make(chan *lrsv3.LoadStatsRequest, 16)}
	addr := serve(t, func(gs *grpc.Server) { lrsv3.RegisterLoadReportingServiceServer(gs, c) })
	// Counts before the stream are not reported; a request in flight
	// from the start makes every interval report the cluster.
	src := &fakeSource{clusters: []Cluster{
		{Name: "cds_egress_m_red_http_8080", Key: 1, Hosts: []Host{{Key: "a", RqTotal: 3, RqSuccess: 2, RqActive: 1}}, Dropped: 4},
		{Name: "cds_egress_m_idle_http_8080", Key: 2, Hosts: []Host{{Key: "b", RqTotal: 5, RqSuccess: 5}}},
	}}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	node := &corev3.Node{Id: "mesh/m/virtualNode/front"}
	go func() { done <- Run(ctx, Config{Server: addr, Node: node}, src, slog.New(slog.DiscardHandler)) }() // ends with cancel below

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
	// The first report says the stream and its baseline are up. The
	// interval asked for (1 ms) is raised to MinInterval.
	r := next()
	if r.GetNode().GetId() != node.GetId() || len(r.GetClusterStats()) != 1 {
		t.Fatalf("report: %v; want node %s and one cluster (the idle one left out)", r, node.GetId())
	}
	cs := r.GetClusterStats()[0]
	if l := cs.GetUpstreamLocalityStats(); cs.GetClusterName() != "cds_egress_m_red_http_8080" || len(l) != 1 || l[0].GetTotalIssuedRequests() != 0 ||
		l[0].GetTotalSuccessfulRequests() != 0 || l[0].GetTotalRequestsInProgress() != 1 || cs.GetTotalDroppedRequests() != 0 ||
		cs.GetLoadReportInterval().AsDuration() < MinInterval/2 {
		t.Fatalf("first report: %v; want nothing issued, succeeded or dropped (what came before the stream is not reported), 1 in flight, over about %v", cs, MinInterval)
	}
	// Then the reports add up to what happened since, whichever interval
	// each increment fell in.
	src.update(0, func(c *Cluster) {
		h := &c.Hosts[0]
		h.RqTotal, h.RqSuccess, h.RqError, h.RqActive = h.RqTotal+10, h.RqSuccess+7, h.RqError+2, 2
		c.Dropped += 3
	})
	var issued, ok, failed, dropped uint64
	for deadline := time.Now().Add(10 * time.Second); (issued < 10 || ok+failed < 9 || dropped < 3) && time.Now().Before(deadline); {
		for _, cs := range next().GetClusterStats() {
			for _, l := range cs.GetUpstreamLocalityStats() {
				issued, ok, failed = issued+l.GetTotalIssuedRequests(), ok+l.GetTotalSuccessfulRequests(), failed+l.GetTotalErrorRequests()
			}
			dropped += cs.GetTotalDroppedRequests()
		}
	}
	if issued != 10 || ok != 7 || failed != 2 || dropped != 3 {
		t.Fatalf("reports add up to %d issued, %d ok, %d failed, %d dropped; want 10, 7, 2, 3", issued, ok, failed, dropped)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestReportLocalities: one interval's report, as Envoy's
// LoadStatsReporter builds it, from the hosts' counters: per locality the
// growth of its hosts' rq_success, rq_error and rq_total and their
// rq_active, a locality with none of the first, second and fourth left
// out; the cluster's dropped requests. A host removed since the last
// report takes its counts with it; one added counts from zero; a cluster
// rebuilt counts its dropped requests from zero; the baseline keeps the
// hosts and clusters of the last read only.
func TestReportLocalities(t *testing.T) {
	east := Locality{Region: "us-east-1", Zone: "us-east-1a"}
	west := Locality{Region: "us-west-2", Zone: "us-west-2b", SubZone: "rack1"}
	before := []Cluster{
		{Name: "two", Key: "two#1", Dropped: 5, Hosts: []Host{
			{Key: "e1", Locality: east, RqTotal: 10, RqSuccess: 9, RqError: 1},
			{Key: "e2", Locality: east, RqTotal: 4, RqSuccess: 4},
			{Key: "w1", Locality: west, RqTotal: 7, RqSuccess: 6, RqError: 1},
			{Key: "gone", Locality: west, RqTotal: 100, RqSuccess: 100},
		}},
		{Name: "rebuilt", Key: "rebuilt#1", Dropped: 9, Hosts: []Host{{Key: "r1", RqTotal: 1, RqSuccess: 1}}},
		{Name: "quiet", Key: "quiet#1", Hosts: []Host{{Key: "q1", Locality: east, RqTotal: 2, RqSuccess: 2}}},
		{Name: "unasked", Key: "unasked#1", Hosts: []Host{{Key: "u1", RqTotal: 2, RqSuccess: 2}}},
	}
	after := []Cluster{
		{Name: "two", Key: "two#1", Dropped: 7, Hosts: []Host{
			// 3 issued: 2 succeeded, 1 an upstream 5xx.
			{Key: "e1", Locality: east, RqTotal: 13, RqSuccess: 11, RqError: 2},
			// A retried attempt (its error) and the retry's success,
			// and one in flight.
			{Key: "e2", Locality: east, RqTotal: 7, RqSuccess: 5, RqError: 1, RqActive: 1},
			// Idle: its locality is left out.
			{Key: "w1", Locality: west, RqTotal: 7, RqSuccess: 6, RqError: 1},
			// Added since: counts from zero, in its own locality.
			{Key: "new", Locality: Locality{Region: "eu-west-1"}, RqTotal: 2, RqSuccess: 2},
		}},
		{Name: "rebuilt", Key: "rebuilt#2", Dropped: 2, Hosts: []Host{{Key: "r2"}}},
		{Name: "quiet", Key: "quiet#1", Hosts: []Host{{Key: "q1", Locality: east, RqTotal: 2, RqSuccess: 2}}},
		{Name: "unasked", Key: "unasked#1", Hosts: []Host{{Key: "u1", RqTotal: 5, RqSuccess: 5}}},
		{Name: "added", Key: "added#1", Dropped: 1, Hosts: []Host{{Key: "a1", RqTotal: 1, RqError: 1}}},
	}
	a := ask{clusters: map[string]bool{"two": true, "rebuilt": true, "quiet": true, "added": true}}
	_, base := report(baseline{}, before, func(string) bool { return false }, 0)
	got, next := report(base, after, a.has, 5*time.Second)
	loc := func(l Locality, issued, ok, failed, active uint64) *endpointv3.UpstreamLocalityStats {
		return &endpointv3.UpstreamLocalityStats{Locality: &corev3.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone},
			TotalIssuedRequests: issued, TotalSuccessfulRequests: ok, TotalErrorRequests: failed, TotalRequestsInProgress: active}
	}
	interval := durationpb.New(5 * time.Second)
	want := []*endpointv3.ClusterStats{
		{ClusterName: "added", TotalDroppedRequests: 1, LoadReportInterval: interval,
			UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{loc(Locality{}, 1, 0, 1, 0)}},
		{ClusterName: "rebuilt", TotalDroppedRequests: 2, LoadReportInterval: interval},
		{ClusterName: "two", TotalDroppedRequests: 2, LoadReportInterval: interval,
			UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{
				loc(Locality{Region: "eu-west-1"}, 2, 2, 0, 0), loc(east, 6, 3, 2, 1)}},
	}
	if !sameStats(got, want) {
		t.Errorf("report:\n%s\nwant\n%s", text(got), text(want))
	}
	// A cluster added since the last report has its latency (weft
	// proxy's load metrics) counted from zero too.
	st := stats.NewStore()
	st.Scope("cluster.added.", "envoy_cluster_").Histogram("upstream_rq_time").Record(7)
	withLatency := slices.Clone(after)
	withLatency[len(after)-1].Latency, _ = st.HistogramValue("cluster.added.upstream_rq_time")
	lat, _ := report(base, withLatency, a.has, time.Second)
	if m := lat[0].GetUpstreamLocalityStats()[0].GetLoadMetricStats(); lat[0].GetClusterName() != "added" || len(m) != 2 ||
		m[0].GetMetricName() != metricP50 || m[0].GetNumRequestsFinishedWithMetric() != 1 {
		t.Errorf("a new cluster's latency: %s; want its one request's p50 and p99", text(lat[:1]))
	}
	if len(next.hosts) != 8 || len(next.clusters) != 5 {
		t.Errorf("baseline of %d hosts, %d clusters; want the 8 hosts and 5 clusters read last", len(next.hosts), len(next.clusters))
	}
	// The next interval: the host in flight is done; its cluster is
	// reported once more, to say nothing is in progress any more.
	after[0].Hosts[1].RqActive, after[0].Hosts[1].RqSuccess = 0, 6
	got, _ = report(next, after, a.has, time.Second)
	want = []*endpointv3.ClusterStats{{ClusterName: "two", LoadReportInterval: durationpb.New(time.Second),
		UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{loc(east, 0, 1, 0, 0)}}}
	if !sameStats(got, want) {
		t.Errorf("next report:\n%s\nwant\n%s", text(got), text(want))
	}
	_, next = report(next, after, a.has, time.Second)
	if got, _ := report(next, after, a.has, time.Second); len(got) != 0 {
		t.Errorf("idle report: %v; want no cluster", got)
	}
}

func sameStats(a, b []*endpointv3.ClusterStats) bool {
	return slices.EqualFunc(a, b, func(x, y *endpointv3.ClusterStats) bool { return proto.Equal(x, y) })
}

func text(cs []*endpointv3.ClusterStats) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(prototext.Format(c) + "\n")
	}
	return b.String()
}

// TestNoService: a control plane without LRS ends the reporting, without
// an error for the proxy.
func TestNoService(t *testing.T) {
	addr := serve(t, func(*grpc.Server) {})
	err := Run(t.Context(), Config{Server: addr, Node: &corev3.Node{Id: "mesh/m/virtualNode/front"}}, &fakeSource{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}
