package translate

import (
	"slices"

	"github.com/weftmesh/weft/internal/appmesh"
)

// leafNames sets the DNS names of the proxy's own certificate when one of
// its secrets is served as that certificate: a virtual node's discovery
// name and the virtual services it provides, directly or through a
// router's routes; none for a gateway, which clients reach by names the
// mesh does not know. The virtual services and routes read are
// dependencies: a service that starts or stops pointing at the node
// changes the certificate.
func (b *build) leafNames() {
	if b.id.Kind != appmesh.KindVirtualNode || !slices.ContainsFunc(sortedKeys(b.secrets), func(n string) bool { return b.secrets[n]&SecretCertificate != 0 }) {
		return
	}
	var names []string
	if h := discoveryHost(b.v.VirtualNodes[b.id.Name]); h != "" {
		names = append(names, h)
	}
	b.dep(appmesh.KindVirtualService, "", "")
	for _, vsName := range sortedKeys(b.v.VirtualServices) {
		vs := b.v.VirtualServices[vsName]
		if vs == nil || vs.Spec == nil || vs.Spec.Provider == nil {
			continue
		}
		switch p := vs.Spec.Provider; {
		case p.VirtualNode != nil:
			if str(p.VirtualNode.VirtualNodeName) == b.id.Name {
				names = append(names, vsName)
			}
		case p.VirtualRouter != nil:
			router := str(p.VirtualRouter.VirtualRouterName)
			b.dep(appmesh.KindRoute, router, "")
			if b.routesTarget(router) {
				names = append(names, vsName)
			}
		}
	}
	slices.Sort(names)
	b.leafDNS = slices.Compact(names)
}

// routesTarget reports whether a route of the router sends traffic to the
// proxy's node.
func (b *build) routesTarget(router string) bool {
	for _, r := range b.v.Routes[router] {
		if r == nil || r.Spec == nil {
			continue
		}
		var wts []appmesh.WeightedTarget
		switch s := r.Spec; {
		case s.HttpRoute != nil:
			wts = httpTargets(s.HttpRoute)
		case s.Http2Route != nil:
			wts = httpTargets(s.Http2Route)
		case s.GrpcRoute != nil:
			wts = grpcTargets(s.GrpcRoute)
		case s.TcpRoute != nil:
			wts = tcpTargets(s.TcpRoute)
		}
		for _, wt := range wts {
			if str(wt.VirtualNode) == b.id.Name {
				return true
			}
		}
	}
	return false
}
