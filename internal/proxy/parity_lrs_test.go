package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/lrs"
)

// TestLoadReportSamePaths: the load report weft proxy sends (what its LRS
// client reads from the proxy, loadSource, and builds, lrs.Reporter) is
// Envoy's LoadStatsReporter's, on every path: per locality of the hosts
// (EDS region, zone and sub-zone), the growth of its hosts' rq_total,
// rq_success and rq_error and their rq_active: requests answered by the
// upstream, over HTTP/1.1 and h2c, in two localities; an upstream 5xx (an
// error); an attempt retried (its host's error) and the retry's success;
// an overflow of max_requests, counted in the cluster's
// total_dropped_requests and in the rq_error (not rq_total) of the host
// it picked, as Envoy's pool refuses the stream with that host and its
// router charges it (it counted at no host); the request in flight it
// overflowed ends in the route timeout's 504, an error. A 503 for no
// healthy upstream has no host and is not dropped: Envoy's report counts
// it nowhere, and the cluster, with no host and nothing dropped, is left
// out. The report counted per cluster before, from its upstream_rq_*
// counters: the two localities as one, the retried attempt as issued and
// never ended, the overflow and no healthy upstream as errors, nothing
// dropped.
func TestLoadReportSamePaths(t *testing.T) {
	east, west, failing, flaky, slow := newBackend(t, "east"), newBackend(t, "west"), newBackend(t, "failing"),
		newBackend(t, "flaky"), newBackend(t, "slow")
	failing.set(500, -1)
	slow.slow = 10 * time.Second
	eastLoc := &corev3.Locality{Region: "us-east-1", Zone: "us-east-1a"}
	westLoc := &corev3.Locality{Region: "us-west-2", Zone: "us-west-2b", SubZone: "rack1"}
	two := &endpointv3.ClusterLoadAssignment{ClusterName: "two", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: eastLoc, LbEndpoints: cla("two", east.addr()).GetEndpoints()[0].GetLbEndpoints()},
		{Locality: westLoc, LbEndpoints: cla("two", west.addr()).GetEndpoints()[0].GetLbEndpoints()}}}
	retried := routeTo("/flaky/", "flaky")
	retried.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	overflowRoute := routeTo("/", "overflow")
	overflowRoute.GetRoute().Timeout = durationpb.New(time.Second)
	// The overflow's cluster has its own listener: its circuit breakers
	// keep a listener's h2c off the loops.
	resources := []types.Resource{
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/two/", "two"), routeTo("/failing/", "failing"), retried,
			routeTo("/none/", "none"))),
		httpListener("overflow", httpManager("overflow", "rds-overflow")),
		routeConfig("rds-overflow", vhost("v", []string{"*"}, overflowRoute)),
		edsCluster("two"), two, edsCluster("failing"), cla("failing", failing.addr()), edsCluster("flaky"), cla("flaky", flaky.addr()),
		edsCluster("none"), cla("none"),
		edsCluster("overflow", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: u32(1)}}}
		}), cla("overflow", slow.addr()),
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			flaky.set(503, 1) // the first attempt answered 503, the retry 200
			h := newHarness(t, p.on)
			h.push(resources...)
			src := loadSource{h.p.clusters, h.p.Stats}
			rep := lrs.NewReporter(src.LoadClusters())
			east0, west0 := east.count(), west.count()
			h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			h2 := h2cClient(t)
			for _, r := range []struct {
				cl     *http.Client
				listen string
				path   string
				want   string
			}{
				{h1, "egress", "/two/", "200"}, {h2, "egress", "/two/", "200"}, {h1, "egress", "/two/", "200"}, {h2, "egress", "/two/", "200"},
				{h2, "egress", "/failing/", "500"}, {h1, "egress", "/flaky/", "200"},
				{h1, "egress", "/none/", "503"}, {h2, "egress", "/none/", "503"},
			} {
				if got := abortAnswer(t, r.cl, "http://"+h.addr(r.listen)+r.path, "x"); got != r.want {
					t.Errorf("%s over %v: answered %s; want %s", r.path, r.cl == h2, got, r.want)
				}
			}
			overflowed(t, h, h1)
			// Every request counted at its cluster and its host.
			waitStats(t, h, map[string]int64{"cluster.two.upstream_rq_completed": 4, "cluster.failing.upstream_rq_completed": 1,
				"cluster.flaky.upstream_rq_completed": 1, "cluster.none.upstream_rq_completed": 2,
				"cluster.overflow.upstream_rq_completed": 2})
			waitUntil(t, 5*time.Second, "no host with a request in progress", func() bool {
				for _, c := range src.LoadClusters() {
					for _, h := range c.Hosts {
						if h.RqActive != 0 {
							return false
						}
					}
				}
				return true
			})
			got := reportText(rep.Report(src.LoadClusters(), func(string) bool { return true }, time.Second))
			e, w := east.count()-east0, west.count()-west0
			want := strings.Join([]string{
				"failing dropped 0", "  {  } p0: 1 issued, 0 ok, 1 failed, 0 in progress",
				"flaky dropped 0", "  {  } p0: 2 issued, 1 ok, 1 failed, 0 in progress",
				"overflow dropped 1", "  {  } p0: 1 issued, 0 ok, 2 failed, 0 in progress",
				"two dropped 0",
				fmt.Sprintf("  {us-east-1 us-east-1a } p0: %d issued, %d ok, 0 failed, 0 in progress", e, e),
				fmt.Sprintf("  {us-west-2 us-west-2b rack1} p0: %d issued, %d ok, 0 failed, 0 in progress", w, w),
			}, "\n")
			if e+w != 4 || e == 0 || w == 0 || got != want {
				t.Errorf("load report:\n%s\nwant\n%s\n(%d requests at east, %d at west; want 4, both)", got, want, e, w)
			}
		})
	}
}

// reportText is a load report, a line per cluster and per locality.
func reportText(cs []*endpointv3.ClusterStats) string {
	var lines []string
	for _, c := range cs {
		lines = append(lines, fmt.Sprintf("%s dropped %d", c.GetClusterName(), c.GetTotalDroppedRequests()))
		for _, l := range c.GetUpstreamLocalityStats() {
			loc := l.GetLocality()
			lines = append(lines, fmt.Sprintf("  {%s %s %s} p%d: %d issued, %d ok, %d failed, %d in progress", loc.GetRegion(), loc.GetZone(),
				loc.GetSubZone(), l.GetPriority(), l.GetTotalIssuedRequests(), l.GetTotalSuccessfulRequests(), l.GetTotalErrorRequests(),
				l.GetTotalRequestsInProgress()))
		}
	}
	return strings.Join(lines, "\n")
}
