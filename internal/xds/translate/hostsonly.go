package translate

import (
	"errors"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// A route write that changes only what a route does with a request (its
// weights, match, timeouts, retry policy, priority) changes nothing of a
// sidecar's configuration but the virtual hosts of the service's egress
// route tables: which router ports the route applies to, which listeners
// it sends to (hence the callers' egress clusters, their assignments and
// dependencies) and which nodes it names (the providers' certificate
// names, secrets.go) stay as they were. RouteHostsOnly tells such a write
// apart; the xDS server then rebuilds each changed host once per batch
// (Memo.EgressHost) and re-assembles the route tables that hold it,
// instead of translating every caller again.
//
// What reads a route outside such a host, and is left to a whole
// translation: a TCP route (the egress listener's TCP proxy filter), a
// gateway when the write changes a per-request timeout (a gateway route
// copies its target's: RouteTimeoutSame) or when its egress table has a
// default_backend host (a gateway route that keeps the request's host:
// that host is not one the Memo names), and a proxyless gRPC client when
// the write changes which of the routes it keeps (RouteProxylessSame: a
// gRPC client's table leaves out a route whose :method match excludes
// POST, and the clusters of its targets with it). A proxyless client's
// hosts are built in gRPC's flavour and named so (HostRef.GRPC).

// RouteHostsOnly reports whether a route changing from old to new can
// change nothing but the virtual hosts built from it, for a sidecar
// (Envoy or weft proxy) calling its router's services: the same kinds of
// route (HTTP, HTTP/2, gRPC; none TCP), each with the same match port and
// the same weighted targets (node and port, in order) but for their
// weights.
func RouteHostsOnly(old, new *appmesh.RouteData) bool {
	if old == nil || new == nil || old.Spec == nil || new.Spec == nil {
		return false
	}
	o, n := old.Spec, new.Spec
	if o.TcpRoute != nil || n.TcpRoute != nil {
		return false
	}
	if str(old.RouteName) != str(new.RouteName) || str(old.VirtualRouterName) != str(new.VirtualRouterName) {
		return false
	}
	return sameHTTPShape(o.HttpRoute, n.HttpRoute) && sameHTTPShape(o.Http2Route, n.Http2Route) && sameGRPCShape(o.GrpcRoute, n.GrpcRoute)
}

// RouteTimeoutSame reports whether a route changing from old to new, an
// update RouteHostsOnly allows, keeps its per-request timeout: the one
// thing of a route a gateway reads outside its egress hosts (its gateway
// routes copy their targets' timeouts, gatewayTimeout).
func RouteTimeoutSame(old, new *appmesh.RouteData) bool { return sameByKind(old, new, perRequest) }

// RouteProxylessSame reports whether a route changing from old to new,
// an update RouteHostsOnly allows, keeps the routes a proxyless gRPC
// client keeps: what its tables hold besides their hosts is the clusters
// of the kept routes' targets (grpcKeeps).
func RouteProxylessSame(old, new *appmesh.RouteData) bool { return sameByKind(old, new, grpcKept) }

// sameByKind reports whether old and new, both with a spec, give the
// same f for each kind of route (HTTP, HTTP/2, gRPC).
func sameByKind[T comparable](old, new *appmesh.RouteData, f func(meshRoute) T) bool {
	if old == nil || new == nil || old.Spec == nil || new.Spec == nil {
		return false
	}
	o, n := old.Spec, new.Spec
	return f(meshRoute{http: o.HttpRoute}) == f(meshRoute{http: n.HttpRoute}) &&
		f(meshRoute{http: o.Http2Route}) == f(meshRoute{http: n.Http2Route}) &&
		f(meshRoute{grpc: o.GrpcRoute}) == f(meshRoute{grpc: n.GrpcRoute})
}

// grpcKept is grpcKeeps for a route of one kind, false where r has none.
func grpcKept(r meshRoute) bool {
	return (r.http != nil || r.grpc != nil) && grpcKeeps(r)
}

func perRequest(r meshRoute) int64 {
	pr, _ := routeTimeouts(r)
	return pr
}

func sameHTTPShape(a, b *appmesh.HttpRoute) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameInt(httpMatchPort(a), httpMatchPort(b)) && sameTargets(httpTargets(a), httpTargets(b))
}

func sameGRPCShape(a, b *appmesh.GrpcRoute) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameInt(grpcMatchPort(a), grpcMatchPort(b)) && sameTargets(grpcTargets(a), grpcTargets(b))
}

// sameTargets compares weighted targets but for their weights.
func sameTargets(a, b []appmesh.WeightedTarget) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if str(a[i].VirtualNode) != str(b[i].VirtualNode) || !sameInt(a[i].Port, b[i].Port) {
			return false
		}
	}
	return true
}

func sameInt(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// HostRef names the virtual host of one port of a virtual service in a
// sidecar's egress route table of domainPort (the same port for a
// sidecar's tables), in the mesh of the identity that holds it, in
// Envoy's flavour or, when GRPC, in a proxyless gRPC client's; or, when
// Fixed, a host of such a table that reads no route (the ALLOW_ALL
// host), which a route write leaves as it is.
type HostRef struct {
	Service    string
	Port       uint32
	DomainPort uint32
	GRPC       bool
	Fixed      bool
}

// ErrNoHost is EgressHost's error when the View has no such host any
// more (the service or its port is gone).
var ErrNoHost = errors.New("no such virtual host")

// EgressHostRef tells which host of an egress route table vh is, when m
// built it (or took it from another translation) for a sidecar's,
// gateway's or proxyless client's egress route table; false for any
// other host (an ingress table's, a gateway route table's, one built by
// a failing translation).
func (m *Memo) EgressHostRef(vh *routev3.VirtualHost) (HostRef, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.hostRefs[vh]
	return r, ok
}

// EgressHost returns the host ref names for identities of id's mesh, as
// a translation of v with m would put it in a sidecar's egress route
// table: built once per Memo, the same *VirtualHost every translation
// with m gets.
func (m *Memo) EgressHost(v *View, id Identity, ref HostRef) (*routev3.VirtualHost, error) {
	if ref.Fixed {
		return nil, fmt.Errorf("%w: a fixed host is not rebuilt", ErrNoHost)
	}
	fl := envoyFlavor
	if ref.GRPC {
		fl = grpcFlavor
	}
	k := hostKey{v: v, owner: id.MeshOwner, mesh: id.Mesh, service: ref.Service, port: ref.Port, domainPort: ref.DomainPort, fl: fl}
	m.mu.Lock()
	vh := m.hosts[k]
	m.mu.Unlock()
	if vh != nil {
		return vh, nil
	}
	// A build of its own, without the Memo, that names the clusters the
	// host's routes send to and builds none (each caller has them).
	b := newBuild(v, id)
	b.hostOnly = true
	var sp *svcPort
	for _, p := range m.servicePorts(b, ref.Service) {
		if p.port == ref.Port && httpFamily(p.proto) {
			sp = &p
			break
		}
	}
	if sp == nil {
		return nil, fmt.Errorf("%w: %s port %d", ErrNoHost, ref.Service, ref.Port)
	}
	vh = b.newEgressVirtualHost(*sp, ref.DomainPort, fl)
	if b.err != nil {
		return nil, b.err
	}
	return m.keepHost(k, vh), nil
}

// fixedHost records vh as a host of an egress route table that reads no
// route.
func (m *Memo) fixedHost(vh *routev3.VirtualHost) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hostRefs[vh] = HostRef{Fixed: true}
}

// keepHost stores vh as the host named k unless one is there already,
// and returns the one stored.
func (m *Memo) keepHost(k hostKey, vh *routev3.VirtualHost) *routev3.VirtualHost {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.hosts[k]; q != nil {
		return q
	}
	m.hosts[k] = vh
	m.hostRefs[vh] = HostRef{Service: k.service, Port: k.port, DomainPort: k.domainPort, GRPC: k.fl == grpcFlavor}
	return vh
}
