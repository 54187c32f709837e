package translate

import (
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// nodeEgress is lds_egress_0.0.0.0_15001, where iptables sends the
// application's outbound connections. Each destination port of a backend
// gets a filter chain: HTTP ports route on the Host through
// rds_egress_<proto>_<port>, TCP ports go straight to their route's
// targets. The egress filter decides the rest: DROP_ALL leaves no chain
// for anything else, so Envoy closes the connection; ALLOW_ALL forwards it
// to where it was going. Both let TLS to *.amazonaws.com through.
//
// lk, when not nil, names the listener in the Kept, which holds it from
// batch to batch while the mesh and the listener's shape are the same:
// its route tables and clusters are still added, only the listener is
// not built again.
func (b *build) nodeEgress(vn *appmesh.VirtualNodeData, logs []*accesslogv3.AccessLog, dualStack bool, lk *listenerKey) {
	byPort := map[uint32][]svcPort{}
	var names []string
	if b.memo != nil {
		names = b.memo.kept.backendNames(b.id, vn) // kept with the node's egress inputs
	} else {
		names = backendNames(vn)
	}
	for _, name := range names {
		for _, sp := range b.servicePorts(name) {
			byPort[sp.port] = append(byPort[sp.port], sp)
		}
	}
	allowAll := b.allowAll()
	ports := sortedPorts(byPort)
	var shape string
	if lk != nil {
		shape = egressShape(ports, byPort)
		if l := b.memo.kept.listener(*lk, b.v.Mesh, shape); l != nil {
			b.keptEgress(l, ports, byPort, allowAll)
			return
		}
	}
	var chains []*listenerv3.FilterChain
	for _, p := range ports {
		if fc := b.egressChain(p, byPort[p], allowAll, logs); fc != nil {
			chains = append(chains, fc)
		}
	}
	chains = append(chains, b.amazonawsChain(logs))
	l := b.socketListener(listenerName("egress", b.egressPort()), bindAddress("0.0.0.0", b.egressPort(), dualStack),
		corev3.TrafficDirection_OUTBOUND, []*listenerv3.ListenerFilter{b.originalDst(), b.tlsInspectorOn443()}, chains)
	if allowAll {
		// Used when no chain matches, including TLS on 443 to other hosts.
		l.DefaultFilterChain = &listenerv3.FilterChain{Name: "mesh-allow-all", Filters: []*listenerv3.Filter{
			b.tcpProxyFilter("egress", []string{allowAllClusterName(b.id.Mesh)}, nil, -1, logs)}}
		b.passthrough(allowAllClusterName(b.id.Mesh))
	}
	b.addListener(l)
	if lk != nil && b.err == nil {
		b.memo.kept.keepListener(*lk, b.v.Mesh, shape, l)
	}
}

// backendNames lists a node's backend virtual services, sorted, once each.
func backendNames(vn *appmesh.VirtualNodeData) []string {
	var out []string
	if vn.Spec == nil {
		return nil
	}
	for _, be := range vn.Spec.Backends {
		if be.VirtualService != nil && be.VirtualService.VirtualServiceName != nil {
			out = append(out, *be.VirtualService.VirtualServiceName)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (b *build) allowAll() bool {
	m := b.v.Mesh
	return m != nil && m.Spec != nil && m.Spec.EgressFilter != nil && m.Spec.EgressFilter.Type == appmesh.EgressFilterTypeAllowAll
}

func sortedPorts[T any](m map[uint32]T) []uint32 {
	var ps []uint32
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// egressChain serves one destination port. A port is HTTP when any of its
// services speaks http, http2 or grpc (one connection manager serves all
// three, named after the first service's protocol); otherwise it is TCP,
// and, as in App Mesh, only the first service on the port can be reached.
func (b *build) egressChain(p uint32, sps []svcPort, allowAll bool, logs []*accesslogv3.AccessLog) *listenerv3.FilterChain {
	var httpSps []svcPort
	for _, sp := range sps {
		if httpFamily(sp.proto) {
			httpSps = append(httpSps, sp)
		}
	}
	var f *listenerv3.Filter
	pp := portProto{port: p}
	if len(httpSps) > 0 {
		pp.proto = httpSps[0].proto
		rds := egressRouteName(pp.proto, p)
		b.addEgressTable(rds, httpSps, p, allowAll)
		f = b.envoyHCMFilter("egress", rds, pp.proto, logs)
	} else {
		pp.proto = sps[0].proto
		f = b.tcpRouteFilter(sps[0], logs)
	}
	if f == nil {
		return nil
	}
	return &listenerv3.FilterChain{Name: rdsOrTCPName("egress", pp), FilterChainMatch: portMatch(p), Filters: []*listenerv3.Filter{f}}
}

// tcpRouteFilter forwards a TCP port to its first route's targets with the
// route's idle timeout.
func (b *build) tcpRouteFilter(sp svcPort, logs []*accesslogv3.AccessLog) *listenerv3.Filter {
	if len(sp.routes) == 0 {
		return nil
	}
	r := sp.routes[0]
	var names []string
	var weights []uint32
	for _, t := range r.targets {
		names = append(names, b.egressCluster(sp.service, t, envoyFlavor))
		weights = append(weights, t.weight)
	}
	idle := int64(-1)
	if r.tcp != nil && r.tcp.Timeout != nil {
		if v, ok := millis(r.tcp.Timeout.Idle); ok {
			idle = v
		}
	}
	return b.tcpProxyFilter("egress", names, weights, idle, logs)
}

// allowAllVirtualHost sends HTTP for unknown hosts on a mesh port to where
// the application sent it, like the TCP passthrough, without a timeout.
func (b *build) allowAllVirtualHost() *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    "allow_all",
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: allowAllClusterName(b.id.Mesh)},
				Timeout:          ms(0),
			}},
		}},
	}
}

// amazonawsChain lets TLS to AWS APIs through in both egress modes. It
// matches port and SNI only (App Mesh also required 0.0.0.0/0), so that
// IPv6 works and a mesh backend on port 443 keeps its own chain.
func (b *build) amazonawsChain(logs []*accesslogv3.AccessLog) *listenerv3.FilterChain {
	name := amazonawsClusterName(b.id.Mesh)
	b.passthrough(name)
	if len(logs) == 0 {
		// Without access logs the chain follows from the mesh alone: one
		// per Memo (its TCP proxy is encoded once).
		return memoized(b, amazonawsKey{b.id.MeshOwner, b.id.Mesh}, func() *listenerv3.FilterChain { return b.newAmazonawsChain(name, nil) })
	}
	return b.newAmazonawsChain(name, logs)
}

// amazonawsKey names a mesh's amazonaws chain without access logs.
type amazonawsKey struct{ owner, mesh string }

func (b *build) newAmazonawsChain(name string, logs []*accesslogv3.AccessLog) *listenerv3.FilterChain {
	m := portMatch(443)
	m.ServerNames = []string{"*.amazonaws.com"}
	return &listenerv3.FilterChain{Name: "amazonaws", FilterChainMatch: m,
		Filters: []*listenerv3.Filter{b.tcpProxyFilter("egress", []string{name}, nil, -1, logs)}}
}
