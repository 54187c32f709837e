package translate

import (
	"cmp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// cloudMapEndpoints is the ClusterLoadAssignment of a target listener:
// the node's healthy Cloud Map instances (LoadAssignment). Without Cloud
// Map discovery it is empty and reads no endpoints: src is nil.
func (b *build) cloudMapEndpoints(cluster string, t target, cm *appmesh.AwsCloudMapServiceDiscovery, hcPort uint32) (cla *endpointv3.ClusterLoadAssignment, src *EndpointSource) {
	if cm == nil {
		return &endpointv3.ClusterLoadAssignment{ClusterName: cluster}, nil
	}
	b.addEps(t.node)
	src = &EndpointSource{
		Cluster: cluster, Node: t.node, Port: t.port, HealthCheckPort: hcPort,
		IPPreference: b.ipPreference(cm.IpPreference),
		// An instance registers one AWS_INSTANCE_PORT: it can only stand
		// for the port of a node with a single listener.
		InstancePort: len(b.nodeListeners(t.node)) == 1,
	}
	return LoadAssignment(*src, b.v.Endpoints[t.node]), src
}

// LoadAssignment is the ClusterLoadAssignment src describes, for the
// endpoints eps of its node: each instance at the address the IP
// preference picks (IPv4 by default) and at AWS_INSTANCE_PORT or the
// listener port, sorted, once each. One locality with weight 1, because
// gRPC ignores localities without one. It is what Translate gives for a
// View whose Endpoints[src.Node] is eps; eps is only read.
func LoadAssignment(src EndpointSource, eps []Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: src.Cluster}
	type hostPort struct {
		host string
		port uint32
	}
	hps := make([]hostPort, 0, len(eps))
	for _, e := range eps {
		host := pickAddress(e, src.IPPreference)
		if host == "" {
			continue
		}
		p := src.Port
		if e.Port != 0 && src.InstancePort {
			p = e.Port
		}
		hps = append(hps, hostPort{host, p})
	}
	slices.SortFunc(hps, func(a, b hostPort) int { return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.port, b.port)) })
	hps = slices.Compact(hps)
	if len(hps) == 0 {
		return cla
	}
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, LoadBalancingWeight: u32(1),
		LbEndpoints: make([]*endpointv3.LbEndpoint, 0, len(hps))}
	for _, hp := range hps {
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(hp.host, hp.port, src.HealthCheckPort))
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}

// pickAddress applies an IP preference to an instance's addresses.
func pickAddress(e Endpoint, pref appmesh.IpPreference) string {
	switch pref {
	case appmesh.IpPreferenceIpv4Only:
		return e.IPv4
	case appmesh.IpPreferenceIpv6Only:
		return e.IPv6
	case appmesh.IpPreferenceIpv6Preferred:
		return cmp.Or(e.IPv6, e.IPv4)
	}
	return cmp.Or(e.IPv4, e.IPv6)
}

func lbEndpoint(host string, p, hcPort uint32) *endpointv3.LbEndpoint {
	ep := &endpointv3.Endpoint{Address: socketAddress(host, p)}
	if hcPort != 0 {
		ep.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: hcPort}
	}
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: ep}}
}

func socketAddress(host string, p uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}}}
}
