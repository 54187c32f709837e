package proxy

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestDNSClusters resolves "localhost" through the system resolver, as a
// virtual node with DNS service discovery does, and admin /stats counts
// the one resolution of each cluster as Envoy's DNS clusters count it.
func TestDNSClusters(t *testing.T) {
	if ips, err := net.LookupIP("localhost"); err != nil || len(ips) == 0 {
		t.Fatalf("localhost does not resolve (%v): the DNS cluster test needs it", err)
	}
	h := newHarness(t)
	a := newBackend(t, "a")
	_, port, _ := net.SplitHostPort(a.addr())
	p, _ := strconv.Atoi(port)
	dnsCluster := func(name string, typ clusterv3.Cluster_DiscoveryType) *clusterv3.Cluster {
		la := cla(name, "127.0.0.1:1")
		la.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = socketAddr("localhost", uint32(p))
		return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ}, LoadAssignment: la,
			DnsLookupFamily: clusterv3.Cluster_V4_ONLY, DnsRefreshRate: durationpb.New(time.Hour),
			LbPolicy: clusterv3.Cluster_LEAST_REQUEST}
	}
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/logical", "logical"), routeTo("/strict", "strict"))),
		dnsCluster("logical", clusterv3.Cluster_LOGICAL_DNS), dnsCluster("strict", clusterv3.Cluster_STRICT_DNS))
	waitUntil(t, 10*time.Second, "DNS resolution", func() bool {
		return h.stat("cluster.logical.membership_total") == 1 && h.stat("cluster.strict.membership_total") >= 1
	})
	out := h.admin("/stats?filter=update_(attempt|success|failure)")
	for _, name := range []string{"logical", "strict"} {
		for _, line := range []string{"update_attempt: 1", "update_success: 1", "update_failure: 0"} {
			if want := "cluster." + name + "." + line + "\n"; !strings.Contains(out, want) {
				t.Errorf("/stats has no %q:\n%s", want, out)
			}
		}
	}
	c := newClient(t)
	for _, path := range []string{"/logical", "/strict"} {
		resp, e, body := get(t, c, h.addr("egress"), "x", path)
		if resp.StatusCode != 200 || e.Backend != "a" {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}
