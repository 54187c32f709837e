package cluster

import (
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// edsPB is an EDS cluster named name, on ADS.
func edsPB(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
}

// counts reads a cluster's update counters.
func counts(t *testing.T, st *stats.Store, cluster string) (membership, success, empty int64) {
	t.Helper()
	v := func(name string) int64 {
		n, ok := st.Value("cluster." + cluster + "." + name)
		if !ok {
			t.Fatalf("no stat cluster.%s.%s", cluster, name)
		}
		return n
	}
	return v("membership_change"), v("update_success"), v("update_empty")
}

// TestEDSMembershipChange: membership_change counts the EDS updates that
// add or remove a host (or move one to another locality, which Envoy
// treats as a removal and an addition), not those that leave the hosts
// as they were: the same assignment resent, a new weight, a new health
// status. update_success counts every update that carried the cluster's
// assignment; update_empty none of these, empty assignment included (it
// is Envoy's count of updates without the assignment).
func TestEDSMembershipChange(t *testing.T) {
	st := stats.NewStore()
	m := NewManager(t.Context(), st, slog.New(slog.DiscardHandler))
	t.Cleanup(m.Close)
	if _, err := m.Apply([]*clusterv3.Cluster{edsPB("e")}); err != nil {
		t.Fatal(err)
	}
	const a, b, c = "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"
	with := func(la *endpointv3.ClusterLoadAssignment, fn func(ep *endpointv3.LbEndpoint, loc *endpointv3.LocalityLbEndpoints)) *endpointv3.ClusterLoadAssignment {
		for _, loc := range la.GetEndpoints() {
			for _, ep := range loc.GetLbEndpoints() {
				fn(ep, loc)
			}
		}
		return la
	}
	weight := func(addr string, w uint32) func(*endpointv3.LbEndpoint, *endpointv3.LocalityLbEndpoints) {
		return func(ep *endpointv3.LbEndpoint, _ *endpointv3.LocalityLbEndpoints) {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			if net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))) == addr {
				ep.LoadBalancingWeight = wrapperspb.UInt32(w)
			}
		}
	}
	steps := []struct {
		name        string
		la          *endpointv3.ClusterLoadAssignment
		wantChanges int64
	}{
		{"first assignment adds two hosts", assignmentOf("e", a, b), 1},
		{"the same assignment resent", assignmentOf("e", a, b), 1},
		{"the same hosts in another order", assignmentOf("e", b, a), 1},
		{"a weight changes", with(assignmentOf("e", a, b), weight(b, 5)), 1},
		{"a host turns unhealthy", with(with(assignmentOf("e", a, b), weight(b, 5)), func(ep *endpointv3.LbEndpoint, _ *endpointv3.LocalityLbEndpoints) {
			ep.HealthStatus = corev3.HealthStatus_UNHEALTHY
		}), 1},
		{"a host is added", assignmentOf("e", a, b, c), 2},
		{"a host is removed", assignmentOf("e", b, c), 3},
		{"one added, one removed", assignmentOf("e", a, c), 4},
		{"the hosts move to another locality", with(assignmentOf("e", a, c), func(_ *endpointv3.LbEndpoint, loc *endpointv3.LocalityLbEndpoints) {
			loc.Locality = &corev3.Locality{Region: "eu-west-1", Zone: "eu-west-1a"}
		}), 5},
		{"no endpoints left", &endpointv3.ClusterLoadAssignment{ClusterName: "e"}, 6},
		{"still none", &endpointv3.ClusterLoadAssignment{ClusterName: "e"}, 6},
	}
	for i, s := range steps {
		if err := m.SetEndpoints([]*endpointv3.ClusterLoadAssignment{s.la}); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		changes, success, empty := counts(t, st, "e")
		if changes != s.wantChanges || success != int64(i+1) || empty != 0 {
			t.Errorf("after %q: membership_change %d, update_success %d, update_empty %d; want %d, %d, 0",
				s.name, changes, success, empty, s.wantChanges, i+1)
		}
	}
}

// TestEDSUpdatesPerCluster: the xDS client hands the manager every
// accepted assignment after each response, those it did not resend as
// they were. Only the clusters whose assignment the response carried
// count an update, as Envoy hands a response's assignments to their
// clusters only; a cluster whose assignment was withdrawn (a delta
// removal) keeps its hosts and counts update_empty, once.
func TestEDSUpdatesPerCluster(t *testing.T) {
	st := stats.NewStore()
	m := NewManager(t.Context(), st, slog.New(slog.DiscardHandler))
	t.Cleanup(m.Close)
	if _, err := m.Apply([]*clusterv3.Cluster{edsPB("e"), edsPB("f")}); err != nil {
		t.Fatal(err)
	}
	e1, f1 := assignmentOf("e", "127.0.0.1:8001"), assignmentOf("f", "127.0.0.1:9001")
	e2 := assignmentOf("e", "127.0.0.1:8001", "127.0.0.1:8002")
	e2again := proto.Clone(e2).(*endpointv3.ClusterLoadAssignment)
	steps := []struct {
		name   string
		set    []*endpointv3.ClusterLoadAssignment
		e, f   [3]int64 // membership_change, update_success, update_empty
		fHosts int
	}{
		{"both arrive", []*endpointv3.ClusterLoadAssignment{e1, f1}, [3]int64{1, 1, 0}, [3]int64{1, 1, 0}, 1},
		{"e changes, f carried over", []*endpointv3.ClusterLoadAssignment{e2, f1}, [3]int64{2, 2, 0}, [3]int64{1, 1, 0}, 1},
		{"f resent as it was", []*endpointv3.ClusterLoadAssignment{e2, proto.Clone(f1).(*endpointv3.ClusterLoadAssignment)}, [3]int64{2, 2, 0}, [3]int64{1, 2, 0}, 1},
		// A withdrawal is an update too: Envoy's EDS counts it empty
		// (validateUpdateSize) and its subscription then successful.
		{"f withdrawn", []*endpointv3.ClusterLoadAssignment{e2}, [3]int64{2, 2, 0}, [3]int64{1, 3, 1}, 1},
		{"e resent, f still withdrawn", []*endpointv3.ClusterLoadAssignment{e2again}, [3]int64{2, 3, 0}, [3]int64{1, 3, 1}, 1},
		{"f back, empty", []*endpointv3.ClusterLoadAssignment{e2again, {ClusterName: "f"}}, [3]int64{2, 3, 0}, [3]int64{2, 4, 1}, 0},
	}
	for _, s := range steps {
		if err := m.SetEndpoints(s.set); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, cl := range []struct {
			name string
			want [3]int64
		}{{"e", s.e}, {"f", s.f}} {
			mc, us, ue := counts(t, st, cl.name)
			if got := [3]int64{mc, us, ue}; got != cl.want {
				t.Errorf("after %q: cluster %s membership_change, update_success, update_empty = %v, want %v", s.name, cl.name, got, cl.want)
			}
		}
		if n := len(m.Get("f").Hosts()); n != s.fHosts {
			t.Errorf("after %q: f has %d hosts, want %d", s.name, n, s.fHosts)
		}
	}
}

// TestMembershipChangeByType: a STATIC cluster's hosts are added when it
// starts; a LOGICAL_DNS cluster's one host takes a new address in place
// (only its first is a change), where STRICT_DNS replaces the host.
func TestMembershipChangeByType(t *testing.T) {
	static := &clusterv3.Cluster{Name: "s", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       assignmentOf("s", "127.0.0.1:8001")}
	st := stats.NewStore()
	m := NewManager(t.Context(), st, slog.New(slog.DiscardHandler))
	t.Cleanup(m.Close)
	if _, err := m.Apply([]*clusterv3.Cluster{static}); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Value("cluster.s.membership_change"); n != 1 {
		t.Errorf("STATIC cluster started: membership_change %d, want 1", n)
	}

	for _, tc := range []struct {
		typ  clusterv3.Cluster_DiscoveryType
		want int64
	}{
		{clusterv3.Cluster_LOGICAL_DNS, 1},
		{clusterv3.Cluster_STRICT_DNS, 2},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			st := stats.NewStore()
			pb := &clusterv3.Cluster{Name: "d", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: tc.typ},
				LoadAssignment:       assignmentOf("d", "127.0.0.1:8001")}
			// Not started: no resolution of its own races the answers below.
			c, err := Build(pb, st, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.halt)
			c.setHosts([]*Host{{Addr: "127.0.0.1:8001"}})
			c.setHosts([]*Host{{Addr: "127.0.0.2:8001"}})
			if n, _ := st.Value("cluster.d.membership_change"); n != tc.want {
				t.Errorf("first answer, then a new address: membership_change %d, want %d", n, tc.want)
			}
		})
	}
}
