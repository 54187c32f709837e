package translate

import (
	"slices"

	"github.com/weftmesh/weft/internal/appmesh"
)

// proxyless is the configuration of a gRPC client whose node id names a
// virtual node: for each backend virtual service that answers over HTTP,
// an api_listener named by the service (the target of xds:///<service>)
// and by <service>:<port>, with routes, clusters and endpoints that gRPC
// accepts. With DROP_ALL an unlisted service has no listener, so the call
// fails; with ALLOW_ALL every service of the mesh has one.
func (b *build) proxyless() error {
	vn, err := b.node()
	if err != nil {
		return err
	}
	names := backendNames(vn)
	if b.allowAll() {
		b.dep(appmesh.KindVirtualService, "", "")
		names = sortedKeys(b.v.VirtualServices)
	}
	byPort := map[uint32][]svcPort{}
	byService := map[string][]uint32{}
	for _, name := range names {
		for _, sp := range b.servicePorts(name) {
			if httpFamily(sp.proto) {
				byPort[sp.port] = append(byPort[sp.port], sp)
				byService[name] = append(byService[name], sp.port)
			}
		}
	}
	tables := map[uint32]string{}
	for _, p := range sortedPorts(byPort) {
		tables[p] = egressRouteName(byPort[p][0].proto, p)
		b.addRoute(b.egressRouteConfig(tables[p], byPort[p], p, grpcFlavor))
	}
	for name, ports := range byService {
		slices.Sort(ports)
		// The bare name is what xds:///<service> asks for: the lowest port.
		b.addListener(b.apiListener(name, tables[ports[0]]))
		for _, p := range ports {
			b.addListener(b.apiListener(name+":"+port(p), tables[p]))
		}
	}
	return nil
}
