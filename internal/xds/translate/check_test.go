package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestCheckCatches breaks a valid configuration in the ways Envoy or gRPC
// would refuse, one at a time, and expects Check to say so.
func TestCheckCatches(t *testing.T) {
	tests := []struct {
		name      string
		proxyless bool
		breakIt   func(t *testing.T, r *Resources)
		want      string
	}{
		{"router not last", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) {
				fault, _ := anypb.New(&faultv3.HTTPFault{})
				m.HttpFilters = append(m.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault}})
			})
		}, "router filter missing or not last"},
		{"no http filters", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) { m.HttpFilters = nil })
		}, "without http filters"},
		{"invalid message inside an Any", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) { m.StatPrefix = "" })
		}, "StatPrefix"},
		{"missing route config", false, func(t *testing.T, r *Resources) { r.Routes = r.Routes[1:] }, "does not exist"},
		{"missing cluster", false, func(t *testing.T, r *Resources) { r.Clusters = r.Clusters[1:] }, "does not exist"},
		{"missing endpoints", false, func(t *testing.T, r *Resources) { r.Endpoints = r.Endpoints[1:] }, "no ClusterLoadAssignment"},
		{"zero weights", false, func(t *testing.T, r *Resources) {
			for _, w := range firstWeighted(r).Clusters {
				w.Weight.Value = 0
			}
		}, "weigh 0"},
		{"total weight", false, func(t *testing.T, r *Resources) { firstWeighted(r).TotalWeight.Value = 7 }, "total_weight"},
		{"unsorted", false, func(t *testing.T, r *Resources) {
			r.Clusters[0], r.Clusters[1] = r.Clusters[1], r.Clusters[0]
		}, "not sorted"},
		{"no address", false, func(t *testing.T, r *Resources) { r.Listeners[0].Address = nil }, "no address"},
		{"same port twice", false, func(t *testing.T, r *Resources) {
			r.Listeners[1].Address = r.Listeners[0].Address
		}, "bind port"},
		{"repeated chain match", false, func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			l.FilterChains = append(l.FilterChains, proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain))
		}, "repeats a match"},
		{"duplicate domain", false, func(t *testing.T, r *Resources) {
			rc := r.Routes[0]
			rc.VirtualHosts = append(rc.VirtualHosts, proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost))
		}, "domain"},
		{"repeated chain name", false, func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			fc := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
			fc.FilterChainMatch.DestinationPort.Value = 1
			l.FilterChains = append(l.FilterChains, fc)
		}, "name \"egress_http_80\" repeated"},
		{"repeated virtual host", false, func(t *testing.T, r *Resources) {
			rc := r.Routes[0]
			vh := proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost)
			vh.Domains = []string{"other"}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}, "virtual host \"red.colors.local\" repeated"},
		{"gRPC cluster type", true, func(t *testing.T, r *Resources) {
			r.Clusters[0].ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}, "gRPC refuses cluster type"},
		{"gRPC retry condition", true, func(t *testing.T, r *Resources) {
			r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1)}
		}, "does not retry on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tutorialResources(t, "blue", tt.proxyless)
			if err := Check(r); err != nil {
				t.Fatalf("valid input: %v", err)
			}
			tt.breakIt(t, r)
			err := Check(r)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func tutorialResources(t *testing.T, node string, proxyless bool) *Resources {
	t.Helper()
	v, owner := replay(t, "testdata/tutorial")
	addEndpoints(v)
	r, err := Translate(v, Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualNode, Name: node, Proxyless: proxyless})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// editHCM changes the connection manager of a listener's first chain.
func editHCM(t *testing.T, l *listenerv3.Listener, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := l.FilterChains[0].Filters[0]
	m := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

func firstWeighted(r *Resources) *routev3.WeightedCluster {
	for _, rc := range r.Routes {
		for _, vh := range rc.VirtualHosts {
			for _, rt := range vh.Routes {
				if wc := rt.GetRoute().GetWeightedClusters(); wc != nil {
					return wc
				}
			}
		}
	}
	return nil
}
