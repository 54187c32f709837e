package translate

import (
	"cmp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// cloudMapEndpoints is the ClusterLoadAssignment of a target listener: the
// node's healthy Cloud Map instances, at the address its IP preference
// picks (IPv4 by default) and at AWS_INSTANCE_PORT, or the listener port.
// One locality with weight 1, because gRPC ignores localities without one.
func (b *build) cloudMapEndpoints(cluster string, t target, cm *appmesh.AwsCloudMapServiceDiscovery, hcPort uint32) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if cm == nil {
		return cla
	}
	b.eps[t.node] = struct{}{}
	pref := b.ipPreference(cm.IpPreference)
	// An instance registers one AWS_INSTANCE_PORT: it can only stand for the
	// port of a node with a single listener.
	single := len(b.nodeListeners(t.node)) == 1
	type hostPort struct {
		host string
		port uint32
	}
	var hps []hostPort
	for _, e := range b.v.Endpoints[t.node] {
		host := pickAddress(e, pref)
		if host == "" {
			continue
		}
		p := t.port
		if e.Port != 0 && single {
			p = e.Port
		}
		hps = append(hps, hostPort{host, p})
	}
	slices.SortFunc(hps, func(a, b hostPort) int { return cmp.Or(cmp.Compare(a.host, b.host), cmp.Compare(a.port, b.port)) })
	hps = slices.Compact(hps)
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, LoadBalancingWeight: u32(1)}
	for _, hp := range hps {
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(hp.host, hp.port, hcPort))
	}
	if len(loc.LbEndpoints) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	}
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
