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
// would refuse, one at a time, and expects Check to say so, and the part
// of it that the xDS server runs where it should: CheckResource for what
// one resource shows on its own (the server remembers that result per
// distinct resource), CheckRefs for what only the whole set shows.
func TestCheckCatches(t *testing.T) {
	const (
		resource = "CheckResource"
		refs     = "CheckRefs"
	)
	tests := []struct {
		name      string
		proxyless bool
		breakIt   func(t *testing.T, r *Resources)
		want      string
		part      string
	}{
		{"router not last", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) {
				fault, _ := anypb.New(&faultv3.HTTPFault{})
				m.HttpFilters = append(m.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault}})
			})
		}, "router filter missing or not last", resource},
		{"no http filters", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) { m.HttpFilters = nil })
		}, "without http filters", resource},
		{"invalid message inside an Any", false, func(t *testing.T, r *Resources) {
			editHCM(t, r.Listeners[0], func(m *hcmv3.HttpConnectionManager) { m.StatPrefix = "" })
		}, "StatPrefix", resource},
		{"missing route config", false, func(t *testing.T, r *Resources) { r.Routes = r.Routes[1:] }, "does not exist", refs},
		{"missing cluster", false, func(t *testing.T, r *Resources) { r.Clusters = r.Clusters[1:] }, "does not exist", refs},
		{"missing endpoints", false, func(t *testing.T, r *Resources) { r.Endpoints = r.Endpoints[1:] }, "no ClusterLoadAssignment", refs},
		{"zero weights", false, func(t *testing.T, r *Resources) {
			for _, w := range firstWeighted(r).Clusters {
				w.Weight.Value = 0
			}
		}, "weigh 0", resource},
		{"total weight", false, func(t *testing.T, r *Resources) { firstWeighted(r).TotalWeight.Value = 7 }, "total_weight", resource},
		{"unsorted", false, func(t *testing.T, r *Resources) {
			r.Clusters[0], r.Clusters[1] = r.Clusters[1], r.Clusters[0]
		}, "not sorted", refs},
		{"no address", false, func(t *testing.T, r *Resources) { r.Listeners[0].Address = nil }, "no address", resource},
		{"same port twice", false, func(t *testing.T, r *Resources) {
			r.Listeners[1].Address = r.Listeners[0].Address
		}, "bind port", refs},
		{"repeated chain match", false, func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			l.FilterChains = append(l.FilterChains, proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain))
		}, "repeats a match", resource},
		{"duplicate domain", false, func(t *testing.T, r *Resources) {
			rc := r.Routes[0]
			rc.VirtualHosts = append(rc.VirtualHosts, proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost))
		}, "domain", resource},
		{"repeated chain name", false, func(t *testing.T, r *Resources) {
			l := r.Listeners[0]
			fc := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
			fc.FilterChainMatch.DestinationPort.Value = 1
			l.FilterChains = append(l.FilterChains, fc)
		}, "name \"egress_http_80\" repeated", resource},
		{"repeated virtual host", false, func(t *testing.T, r *Resources) {
			rc := r.Routes[0]
			vh := proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost)
			vh.Domains = []string{"other"}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}, "virtual host \"red.colors.local\" repeated", resource},
		{"gRPC cluster type", true, func(t *testing.T, r *Resources) {
			r.Clusters[0].ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}, "gRPC refuses cluster type", resource},
		{"gRPC retry condition", true, func(t *testing.T, r *Resources) {
			r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1)}
		}, "does not retry on", resource},
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
			resErr, refsErr := checkParts(r)
			got := map[string]error{resource: resErr, refs: refsErr}[tt.part]
			if got == nil || !strings.Contains(got.Error(), tt.want) {
				t.Fatalf("%s = %v; want an error containing %q", tt.part, got, tt.want)
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
