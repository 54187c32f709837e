package cluster

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// weighted is an assignment of addrs in order, with the weights given.
func weighted(name string, addrs []string, weights ...uint32) *endpointv3.ClusterLoadAssignment {
	la := assignmentOf(name, addrs...)
	for i, ep := range la.GetEndpoints()[0].GetLbEndpoints() {
		ep.LoadBalancingWeight = wrapperspb.UInt32(weights[i])
	}
	return la
}

// TestWeightChangeKeepsTheHost: an EDS update that changes only a host's
// weight changes it in place, as Envoy does. The host keeps its active
// health check's verdict and its request counts. It was replaced by a new
// Host, which an actively checked cluster holds unhealthy until its first
// check: every weight change took the hosts out of the balancer.
func TestWeightChangeKeepsTheHost(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(up.Close)
	c := edsCluster(t, func(pb *clusterv3.Cluster) {
		// Checked once when the host comes, then not for an hour: a
		// host made anew stays pending for the whole test.
		pb.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Hour),
			UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/health"}}}}
	})
	addr := strings.TrimPrefix(up.URL, "http://")
	other := "127.0.0.1:1" // never checked healthy: it gives the set two weights
	if err := c.setEndpoints(weighted("e", []string{addr, other}, 1, 1)); err != nil {
		t.Fatal(err)
	}
	h := c.Hosts()[0]
	for deadline := time.Now().Add(5 * time.Second); !h.Healthy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("host never checked healthy: %s", h.HealthString())
		}
	}
	h.RequestStarted()

	if err := c.setEndpoints(weighted("e", []string{addr, other}, 5, 1)); err != nil {
		t.Fatal(err)
	}
	got := c.Hosts()[0]
	if got != h {
		t.Errorf("a weight change made a new host")
	}
	if !got.Healthy() {
		t.Errorf("after a weight change the host is %s, want healthy", got.HealthString())
	}
	if got.Weight() != 5 {
		t.Errorf("weight %d, want 5", got.Weight())
	}
	if n := got.Snapshot().RqTotal; n != 1 {
		t.Errorf("rq_total %d after the weight change, want the 1 before it", n)
	}
	if !c.hosts.Load().weighted {
		t.Errorf("the set of weights 5 and 1 is not balanced by weight")
	}

	// Refused halfway (its second endpoint is no IP address): the first
	// host's new weight and health status are not applied.
	bad := weighted("e", []string{addr, "127.0.0.1:2"}, 9, 1)
	bad.GetEndpoints()[0].GetLbEndpoints()[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
	bad.GetEndpoints()[0].GetLbEndpoints()[1].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
	if err := c.setEndpoints(bad); err == nil {
		t.Fatal("an assignment with a bad address was applied")
	}
	if got.Weight() != 5 || !got.Healthy() {
		t.Errorf("a refused assignment changed the host: weight %d, %s", got.Weight(), got.HealthString())
	}
}
