package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// nodeIngress is lds_ingress_0.0.0.0_15000, where iptables sends traffic
// for the application's ports: one filter chain per node listener, matched
// on the port the caller dialled, to the local application at 127.0.0.1.
// A node without listeners gets no ingress listener.
func (b *build) nodeIngress(vn *appmesh.VirtualNodeData, logs []*accesslogv3.AccessLog, dualStack bool) {
	var chains []*listenerv3.FilterChain
	pps := b.nodeListeners(b.id.Name)
	for _, pp := range pps {
		chains = append(chains, b.ingressChains(vn, pp, len(pps) > 1, logs, dualStack)...)
	}
	if len(chains) == 0 {
		return
	}
	filters := []*listenerv3.ListenerFilter{b.originalDst()}
	if detectsTLS(chains) {
		filters = append(filters, b.tlsInspector())
	}
	b.addListener(b.socketListener(listenerName("ingress", b.ingressPort()), bindAddress("0.0.0.0", b.ingressPort(), dualStack),
		corev3.TrafficDirection_INBOUND, filters, chains))
}

// ingressChains serve one node listener: one chain, or two when TLS is
// PERMISSIVE. With several listeners the stat prefix names protocol and
// port, as App Mesh's did.
func (b *build) ingressChains(vn *appmesh.VirtualNodeData, pp portProto, several bool, logs []*accesslogv3.AccessLog, dualStack bool) []*listenerv3.FilterChain {
	l := nodeListener(vn, pp.port)
	local := localClusterName(b.id.Mesh, b.id.Name, pp.proto, pp.port)
	addr := "127.0.0.1"
	if dualStack && prefersIPv6(b.ipPreference(nodeIPPreference(vn))) {
		addr = "::1"
	}
	b.addCluster(b.staticCluster(local, addr, pp.port, pp.proto, nodePoolBreakers(l.ConnectionPool)))
	statPrefix := "ingress"
	if several {
		statPrefix = "ingress." + string(pp.proto) + "." + port(pp.port)
	}
	var f *listenerv3.Filter
	if pp.proto == appmesh.PortProtocolTcp {
		f = b.tcpProxyFilter(statPrefix, []string{local}, nil, tcpIdle(l.Timeout), logs)
	} else {
		rds := ingressRouteName(pp.proto, pp.port)
		b.addRoute(ingressRouteConfig(rds, local, l.Timeout, pp.proto))
		f = b.envoyHCMFilter(statPrefix, rds, pp.proto, logs)
	}
	fc := &listenerv3.FilterChain{Name: rdsOrTCPName("ingress", pp), FilterChainMatch: portMatch(pp.port), Filters: []*listenerv3.Filter{f}}
	mode, spec := nodeServerTLS(l.Tls)
	return b.serverChains(fc, mode, spec)
}

func rdsOrTCPName(direction string, pp portProto) string {
	return direction + "_" + string(pp.proto) + "_" + port(pp.port)
}

// ingressRouteConfig sends everything to the local application with the
// listener's timeouts: per request (15 s unless set, 0 disables) and idle.
func ingressRouteConfig(name, cluster string, t *appmesh.ListenerTimeout, proto appmesh.PortProtocol) *routev3.RouteConfiguration {
	perRequest, idle := listenerTimeouts(t, proto)
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: ms(perRequest)}
	if idle >= 0 {
		ra.IdleTimeout = ms(idle)
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name:    "ingress",
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: ra},
		}},
	}}}
}

// listenerTimeouts gives the per-request and idle (-1: unset) timeouts of
// a node listener, in milliseconds.
func listenerTimeouts(t *appmesh.ListenerTimeout, proto appmesh.PortProtocol) (perRequest, idle int64) {
	perRequest, idle = defaultRouteTimeoutMs, -1
	if t == nil {
		return
	}
	var pr, id *appmesh.Duration
	switch {
	case proto == appmesh.PortProtocolHttp && t.Http != nil:
		pr, id = t.Http.PerRequest, t.Http.Idle
	case proto == appmesh.PortProtocolHttp2 && t.Http2 != nil:
		pr, id = t.Http2.PerRequest, t.Http2.Idle
	case proto == appmesh.PortProtocolGrpc && t.Grpc != nil:
		pr, id = t.Grpc.PerRequest, t.Grpc.Idle
	}
	if v, ok := millis(pr); ok {
		perRequest = v
	}
	if v, ok := millis(id); ok {
		idle = v
	}
	return
}

func tcpIdle(t *appmesh.ListenerTimeout) int64 {
	if t == nil || t.Tcp == nil {
		return -1
	}
	if v, ok := millis(t.Tcp.Idle); ok {
		return v
	}
	return -1
}

func nodeIPPreference(vn *appmesh.VirtualNodeData) appmesh.IpPreference {
	if vn.Spec == nil || vn.Spec.ServiceDiscovery == nil {
		return ""
	}
	switch sd := vn.Spec.ServiceDiscovery; {
	case sd.AwsCloudMap != nil:
		return sd.AwsCloudMap.IpPreference
	case sd.Dns != nil:
		return sd.Dns.IpPreference
	}
	return ""
}

func prefersIPv6(p appmesh.IpPreference) bool {
	return p == appmesh.IpPreferenceIpv6Preferred || p == appmesh.IpPreferenceIpv6Only
}
