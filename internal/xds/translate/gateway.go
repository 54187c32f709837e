package translate

import (
	"cmp"
	"fmt"
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// A virtual gateway is two hops inside one proxy, as App Mesh built it
// (reference §2.6): each gateway listener lds_ingress_0.0.0.0_<port> runs
// the gateway routes, which rewrite the request and send it through the
// self-redirect cluster to the proxy's own egress listener on 15001; there
// the target virtual services are routed exactly as a node's egress routes
// them.

// gatewayEgress collects what the gateway routes target, for the egress
// table.
type gatewayEgress struct {
	services  map[string]*svcPort // target virtual service → its port (nil: none)
	order     []string            // services in first-use order
	noRewrite map[string]bool     // services reached with the host kept
}

func (b *build) virtualGateway() error {
	b.dep(appmesh.KindVirtualGateway, "", b.id.Name)
	b.dep(appmesh.KindGatewayRoute, b.id.Name, "")
	vg := b.v.VirtualGateways[b.id.Name]
	if vg == nil {
		return fmt.Errorf("virtual gateway %q in mesh %q: %w", b.id.Name, b.id.Mesh, ErrNotFound)
	}
	logs := b.accessLogs(b.gatewayAccessLog(vg))
	pps := gatewayListeners(vg)
	eg := &gatewayEgress{services: map[string]*svcPort{}, noRewrite: map[string]bool{}}
	for _, pp := range pps {
		b.gatewayListener(vg, pp, len(pps) > 1, logs, eg)
	}
	if len(pps) > 0 {
		b.gatewayEgressListener(pps[0].proto, logs, eg)
	}
	return nil
}

// gatewayListeners lists a gateway's listeners sorted by port, once each.
func gatewayListeners(vg *appmesh.VirtualGatewayData) []portProto {
	if vg.Spec == nil {
		return nil
	}
	var out []portProto
	for _, l := range vg.Spec.Listeners {
		if l.PortMapping == nil {
			continue
		}
		pm := &appmesh.PortMapping{Port: l.PortMapping.Port, Protocol: appmesh.PortProtocol(l.PortMapping.Protocol)}
		if pp, ok := listenerPortProto(pm); ok {
			out = append(out, pp)
		}
	}
	return uniquePorts(out)
}

func gatewayListener(vg *appmesh.VirtualGatewayData, p uint32) *appmesh.VirtualGatewayListener {
	for i := range vg.Spec.Listeners {
		l := &vg.Spec.Listeners[i]
		if l.PortMapping != nil && l.PortMapping.Port != nil && *l.PortMapping.Port == int64(p) {
			return l
		}
	}
	return nil
}

// gatewayListener builds one gateway listener, its route table and its
// self-redirect cluster, which carries the listener's connection pool.
func (b *build) gatewayListener(vg *appmesh.VirtualGatewayData, pp portProto, several bool, logs []*accesslogv3.AccessLog, eg *gatewayEgress) {
	l := gatewayListener(vg, pp.port)
	redirect := selfRedirectClusterName(b.id.Mesh, b.id.Name, pp.port, several, pp.proto, b.egressPort())
	b.addCluster(b.staticCluster(redirect, "127.0.0.1", b.egressPort(), pp.proto, gatewayPoolBreakers(l.ConnectionPool)))
	rds := ingressRouteName(pp.proto, pp.port)
	var routes []*routev3.Route
	for _, gr := range b.gatewayRoutes(pp) {
		routes = append(routes, b.gatewayRoute(gr, redirect, pp.proto, eg)...)
	}
	b.addRoute(&routev3.RouteConfiguration{Name: rds, VirtualHosts: []*routev3.VirtualHost{{
		Name: "self_redirect", Domains: []string{"*"}, Routes: routes}}})
	fc := &listenerv3.FilterChain{Name: rdsOrTCPName("ingress", pp),
		Filters: []*listenerv3.Filter{b.envoyHCMFilter("ingress", rds, pp.proto, logs)}}
	mode, spec := gatewayServerTLS(l.Tls)
	chains := b.serverChains(fc, mode, spec)
	var filters []*listenerv3.ListenerFilter
	if detectsTLS(chains) {
		filters = append(filters, b.tlsInspector())
	}
	b.addListener(b.socketListener(listenerName("ingress", pp.port), bindAddress("0.0.0.0", pp.port, false),
		corev3.TrafficDirection_INBOUND, filters, chains))
}

// gatewayEgressListener is the second hop. It listens on 127.0.0.1 only:
// nothing but the self-redirect hop should reach it (App Mesh bound
// 0.0.0.0, which exposed every target to anyone reaching the gateway
// task on 15001). One table serves all listeners, named after the first
// one's protocol.
func (b *build) gatewayEgressListener(proto appmesh.PortProtocol, logs []*accesslogv3.AccessLog, eg *gatewayEgress) {
	egressPort := b.egressPort()
	rds := egressRouteName(proto, egressPort)
	var sps []svcPort
	var fallback []*routev3.Route
	for _, name := range eg.order {
		sp := eg.services[name]
		if sp == nil {
			sp = &svcPort{service: name} // no provider: a host without routes
		}
		sps = append(sps, *sp)
		if eg.noRewrite[name] {
			fallback = append(fallback, b.headerRoutes(*sp)...)
		}
	}
	var extra []*routev3.VirtualHost
	if len(fallback) > 0 {
		// Requests whose host was kept name their service in a header.
		extra = append(extra, &routev3.VirtualHost{Name: "default_backend", Domains: []string{"*"},
			Routes: fallback, RequestHeadersToRemove: []string{serviceHeader}})
	}
	b.addRoute(b.egressRouteConfig(rds, sps, egressPort, envoyFlavor, extra...))
	fc := &listenerv3.FilterChain{Name: rdsOrTCPName("egress", portProto{egressPort, proto}),
		Filters: []*listenerv3.Filter{b.envoyHCMFilter("egress", rds, proto, logs)}}
	b.addListener(b.socketListener(listenerName("egress", egressPort), bindAddress("127.0.0.1", egressPort, false),
		corev3.TrafficDirection_OUTBOUND, nil, []*listenerv3.FilterChain{fc}))
}

// serviceHeader carries the target virtual service from the first hop to
// the second when the gateway route keeps the request's host.
const serviceHeader = "x-app-mesh-virtual-service"

// headerRoutes are a service's egress routes that also require the
// service header.
func (b *build) headerRoutes(sp svcPort) []*routev3.Route {
	routes := b.egressRoutes(sp, envoyFlavor)
	for _, r := range routes {
		r.Match.Headers = append(r.Match.Headers, exactHeader(serviceHeader, sp.service))
	}
	return routes
}

// gatewayTarget resolves the port of a target virtual service the gateway
// sends to: the route's target port, or the service's only HTTP port, or
// the lowest HTTP port of the listener's protocol.
func (b *build) gatewayTarget(service string, targetPort *int64, proto appmesh.PortProtocol) *svcPort {
	var cands []svcPort
	for _, sp := range b.servicePorts(service) {
		if !httpFamily(sp.proto) {
			continue
		}
		if p, ok := i64(targetPort); ok && int64(sp.port) != p {
			continue
		}
		cands = append(cands, sp)
	}
	if len(cands) == 0 {
		return nil
	}
	slices.SortStableFunc(cands, func(a, b svcPort) int {
		return cmp.Compare(boolRank(a.proto != proto), boolRank(b.proto != proto))
	})
	return &cands[0]
}

func boolRank(v bool) int {
	if v {
		return 1
	}
	return 0
}
