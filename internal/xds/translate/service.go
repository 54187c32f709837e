package translate

import (
	"cmp"
	"slices"

	"github.com/weftmesh/weft/internal/appmesh"
)

// svcPort is one port a virtual service answers on, with the routes App Mesh
// programs for it: its router's routes for that listener, or one implicit
// route to its provider node.
type svcPort struct {
	service string
	port    uint32
	proto   appmesh.PortProtocol
	routes  []meshRoute // in match order
}

// meshRoute is an App Mesh route resolved against the mesh: one of http,
// grpc, tcp is set, or none for a node provider's implicit catch-all route
// (prefix /, 15 s, the default retry policy).
type meshRoute struct {
	name     string
	priority int64
	http     *appmesh.HttpRoute // httpRoute or http2Route
	grpc     *appmesh.GrpcRoute
	tcp      *appmesh.TcpRoute
	targets  []target
}

// target is one weighted target, resolved to a listener of its node.
type target struct {
	node   string
	port   uint32
	proto  appmesh.PortProtocol
	weight uint32
}

func httpFamily(p appmesh.PortProtocol) bool {
	return p == appmesh.PortProtocolHttp || p == appmesh.PortProtocolHttp2 || p == appmesh.PortProtocolGrpc
}

// servicePorts resolves a virtual service to the ports it answers on, sorted
// by port. A missing service or provider gives none: it serves no traffic.
// With a Memo the resolution is made once per batch, and with a Kept once
// per change of what it read (resolve.go); the result is only read.
func (b *build) servicePorts(name string) []svcPort {
	if b.memo != nil {
		return b.memo.servicePorts(b, name)
	}
	return b.resolveServicePorts(name)
}

// resolveServicePorts is servicePorts without sharing: it reads the
// View's virtual service, its provider (a node's listeners, or a router,
// its routes and their targets' nodes) and records each as a dependency.
func (b *build) resolveServicePorts(name string) []svcPort {
	b.dep(appmesh.KindVirtualService, "", name)
	vs := b.v.VirtualServices[name]
	if vs == nil || vs.Spec == nil || vs.Spec.Provider == nil {
		return nil
	}
	switch p := vs.Spec.Provider; {
	case p.VirtualNode != nil:
		return b.nodeProviderPorts(name, str(p.VirtualNode.VirtualNodeName))
	case p.VirtualRouter != nil:
		return b.routerPorts(name, str(p.VirtualRouter.VirtualRouterName))
	}
	return nil
}

// nodeProviderPorts gives one port per listener of the provider node, each
// with the implicit route App Mesh adds (15 s timeout, default retries).
func (b *build) nodeProviderPorts(service, node string) []svcPort {
	var out []svcPort
	for _, l := range b.nodeListeners(node) {
		t := target{node: node, port: l.port, proto: l.proto, weight: 100}
		out = append(out, svcPort{service: service, port: l.port, proto: l.proto,
			routes: []meshRoute{{name: node, priority: noPriority, targets: []target{t}}}})
	}
	return out
}

// portProto is a listener's port and protocol.
type portProto struct {
	port  uint32
	proto appmesh.PortProtocol
}

// nodeListeners lists a virtual node's listeners sorted by port; when two
// share a port (which App Mesh's API refuses) the first wins.
func (b *build) nodeListeners(node string) []portProto {
	b.dep(appmesh.KindVirtualNode, "", node)
	vn := b.v.VirtualNodes[node]
	if vn == nil || vn.Spec == nil {
		return nil
	}
	var out []portProto
	for _, l := range vn.Spec.Listeners {
		if pp, ok := listenerPortProto(l.PortMapping); ok {
			out = append(out, pp)
		}
	}
	return uniquePorts(out)
}

func listenerPortProto(pm *appmesh.PortMapping) (portProto, bool) {
	if pm == nil || pm.Port == nil || *pm.Port < 1 || *pm.Port > 65535 {
		return portProto{}, false
	}
	proto := pm.Protocol
	if proto == "" {
		proto = appmesh.PortProtocolHttp
	}
	return portProto{port: uint32(*pm.Port), proto: proto}, true
}

func uniquePorts(in []portProto) []portProto {
	slices.SortStableFunc(in, func(a, b portProto) int { return cmp.Compare(a.port, b.port) })
	return slices.CompactFunc(in, func(a, b portProto) bool { return a.port == b.port })
}

// routerPorts gives one port per router listener with the router's routes
// of that protocol and port, in match order.
func (b *build) routerPorts(service, router string) []svcPort {
	b.dep(appmesh.KindVirtualRouter, "", router)
	b.dep(appmesh.KindRoute, router, "")
	vr := b.v.VirtualRouters[router]
	if vr == nil || vr.Spec == nil {
		return nil
	}
	var lps []portProto
	for _, l := range vr.Spec.Listeners {
		if pp, ok := listenerPortProto(l.PortMapping); ok {
			lps = append(lps, pp)
		}
	}
	var out []svcPort
	for _, lp := range uniquePorts(lps) {
		sp := svcPort{service: service, port: lp.port, proto: lp.proto}
		for _, rd := range b.v.Routes[router] {
			if r, ok := b.resolveRoute(rd, lp); ok {
				sp.routes = append(sp.routes, r)
			}
		}
		slices.SortStableFunc(sp.routes, compareRoutes)
		out = append(out, sp)
	}
	return out
}

// resolveRoute picks the part of a route that applies to a router listener
// and resolves its targets; ok is false when it does not apply or has no
// target left.
func (b *build) resolveRoute(rd *appmesh.RouteData, lp portProto) (meshRoute, bool) {
	if rd == nil || rd.Spec == nil {
		return meshRoute{}, false
	}
	s := rd.Spec
	r := meshRoute{name: str(rd.RouteName), priority: noPriority}
	if p, ok := i64(s.Priority); ok {
		r.priority = p
	}
	var matchPort *int64
	var wts []appmesh.WeightedTarget
	switch {
	case lp.proto == appmesh.PortProtocolHttp && s.HttpRoute != nil:
		r.http = s.HttpRoute
	case lp.proto == appmesh.PortProtocolHttp2 && s.Http2Route != nil:
		r.http = s.Http2Route
	case lp.proto == appmesh.PortProtocolGrpc && s.GrpcRoute != nil:
		r.grpc = s.GrpcRoute
	case lp.proto == appmesh.PortProtocolTcp && s.TcpRoute != nil:
		r.tcp = s.TcpRoute
	default:
		return meshRoute{}, false
	}
	switch {
	case r.http != nil:
		matchPort, wts = httpMatchPort(r.http), httpTargets(r.http)
	case r.grpc != nil:
		matchPort, wts = grpcMatchPort(r.grpc), grpcTargets(r.grpc)
	default:
		matchPort, wts = tcpMatchPort(r.tcp), tcpTargets(r.tcp)
	}
	if p, ok := i64(matchPort); ok && p != int64(lp.port) {
		return meshRoute{}, false
	}
	r.targets = b.resolveTargets(wts)
	return r, len(r.targets) > 0
}

func httpMatchPort(h *appmesh.HttpRoute) *int64 {
	if h.Match == nil {
		return nil
	}
	return h.Match.Port
}

func httpTargets(h *appmesh.HttpRoute) []appmesh.WeightedTarget {
	if h.Action == nil {
		return nil
	}
	return h.Action.WeightedTargets
}

func grpcMatchPort(g *appmesh.GrpcRoute) *int64 {
	if g.Match == nil {
		return nil
	}
	return g.Match.Port
}

func grpcTargets(g *appmesh.GrpcRoute) []appmesh.WeightedTarget {
	if g.Action == nil {
		return nil
	}
	return g.Action.WeightedTargets
}

func tcpMatchPort(t *appmesh.TcpRoute) *int64 {
	if t.Match == nil {
		return nil
	}
	return t.Match.Port
}

func tcpTargets(t *appmesh.TcpRoute) []appmesh.WeightedTarget {
	if t.Action == nil {
		return nil
	}
	return t.Action.WeightedTargets
}

// resolveTargets drops targets whose node or listener does not exist and
// merges targets that land on the same listener.
func (b *build) resolveTargets(wts []appmesh.WeightedTarget) []target {
	var out []target
	for _, wt := range wts {
		node := str(wt.VirtualNode)
		lp, ok := b.targetListener(node, wt.Port)
		if !ok {
			continue
		}
		w, _ := i64(wt.Weight)
		t := target{node: node, port: lp.port, proto: lp.proto, weight: clampU32(w)}
		if i := slices.IndexFunc(out, func(o target) bool { return o.node == t.node && o.port == t.port }); i >= 0 {
			out[i].weight += t.weight
			continue
		}
		out = append(out, t)
	}
	return out
}

// targetListener finds the listener a weighted target sends to: the one on
// its port, or the node's only listener when no port is given.
func (b *build) targetListener(node string, p *int64) (portProto, bool) {
	ls := b.nodeListeners(node)
	if want, ok := i64(p); ok {
		i := slices.IndexFunc(ls, func(l portProto) bool { return int64(l.port) == want })
		if i < 0 {
			return portProto{}, false
		}
		return ls[i], true
	}
	if len(ls) != 1 {
		return portProto{}, false
	}
	return ls[0], true
}

// compareRoutes orders routes as App Mesh matches them: priority (0 first,
// unset last), then the more specific match, then name.
func compareRoutes(a, b meshRoute) int {
	return cmp.Or(cmp.Compare(a.priority, b.priority),
		cmp.Compare(specificity(b), specificity(a)),
		cmp.Compare(a.name, b.name))
}

// specificity ranks a route's match so that, among routes of equal
// priority, a narrower match is tried first: exact path, then regex, then
// longer prefixes, and more header/query/method conditions.
func specificity(r meshRoute) int {
	switch {
	case r.http != nil && r.http.Match != nil:
		m := r.http.Match
		n := 10 * (len(m.Headers) + len(m.QueryParameters))
		if m.Method != "" {
			n += 10
		}
		if m.Path != nil && m.Path.Exact != nil {
			return 3_000_000 + n
		}
		if m.Path != nil {
			return 2_000_000 + n
		}
		return 1000*len(str(m.Prefix)) + n
	case r.grpc != nil && r.grpc.Match != nil:
		m := r.grpc.Match
		n := 10 * len(m.Metadata)
		if m.MethodName != nil {
			n += 2_000_000
		}
		if m.ServiceName != nil {
			n += 1_000_000
		}
		return n
	}
	return 0
}
