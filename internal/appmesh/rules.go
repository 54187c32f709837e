package appmesh

import (
	"strings"

	"github.com/weftmesh/weft/internal/shape"
)

// The rules here are App Mesh's checks beyond the model's constraints (the
// model validator runs first, so required members are present). Each
// returns a BadRequestException naming the field.

// CheckServiceName checks the name of a virtual service by the rule the
// model's checks hold a backend's to (serviceNameRule).
func CheckServiceName(field, name string) error {
	if rule := serviceNameRule(name); rule != "" {
		return BadRequest("%s", shape.Message([]shape.Violation{{Path: field, Value: name, Rule: rule}}))
	}
	return nil
}

// CheckVirtualNode checks what App Mesh refuses in a virtual node's spec
// beyond the model: service discovery without a listener (its message, as
// its API answered it), since nothing can reach a node that listens on
// nothing.
func CheckVirtualNode(s *VirtualNodeSpec) error {
	if s.ServiceDiscovery != nil && len(s.Listeners) == 0 {
		return BadRequest("Service Discovery can't be set without a listener.")
	}
	return nil
}

// RouteProtocol returns the listener protocol a route spec needs and the
// port it matches (0 when it matches none). It fails unless exactly one
// route type is set.
func RouteProtocol(s *RouteSpec) (PortProtocol, int64, error) {
	var (
		n     int
		proto PortProtocol
		port  *int64
	)
	if s.HttpRoute != nil {
		n, proto = n+1, PortProtocolHttp
		if s.HttpRoute.Match != nil {
			port = s.HttpRoute.Match.Port
		}
	}
	if s.Http2Route != nil {
		n, proto = n+1, PortProtocolHttp2
		if s.Http2Route.Match != nil {
			port = s.Http2Route.Match.Port
		}
	}
	if s.GrpcRoute != nil {
		n, proto = n+1, PortProtocolGrpc
		if s.GrpcRoute.Match != nil {
			port = s.GrpcRoute.Match.Port
		}
	}
	if s.TcpRoute != nil {
		n, proto = n+1, PortProtocolTcp
		if s.TcpRoute.Match != nil {
			port = s.TcpRoute.Match.Port
		}
	}
	if n != 1 {
		return "", 0, BadRequest("Route spec must have exactly one of [grpcRoute, http2Route, httpRoute, tcpRoute] set")
	}
	if port == nil {
		return proto, 0, nil
	}
	return proto, *port, nil
}

// CheckRoute checks a route against the listeners of its virtual router:
// the route must match a listener's protocol, and must name a port when the
// router has several listeners.
func CheckRoute(s *RouteSpec, router *VirtualRouterSpec) error {
	proto, port, err := RouteProtocol(s)
	if err != nil {
		return err
	}
	var ls []PortMapping
	if router != nil {
		for _, l := range router.Listeners {
			if l.PortMapping != nil {
				ls = append(ls, *l.PortMapping)
			}
		}
	}
	return checkListener("Route", "Virtual Router", string(proto), port, ls, func(p PortMapping) (string, int64) {
		return string(p.Protocol), deref(p.Port)
	})
}

// CheckRouterKeepsRoutes checks a virtual router's new spec against the
// routes it already has (named in names, in the same order): App Mesh
// refuses an update that leaves a route fitting no listener by CheckRoute's
// rule, as a route that fits none carries no traffic. A route that fits no
// router, as stored, is passed over: a nil spec (a record without one) and
// one without exactly one route type (written by hand: the API refuses
// it): no router spec can fit it, so refusing would stop every update of
// its router.
func CheckRouterKeepsRoutes(router *VirtualRouterSpec, names []string, routes []*RouteSpec) error {
	var missingPort, unmatched []string
	for i, rs := range routes {
		if rs == nil {
			continue
		}
		_, port, err := RouteProtocol(rs)
		if err != nil || CheckRoute(rs, router) == nil {
			continue
		}
		if port == 0 && len(router.Listeners) > 1 {
			missingPort = append(missingPort, names[i])
		} else {
			unmatched = append(unmatched, names[i])
		}
	}
	return routesLeft("Route", "Virtual Router", missingPort, unmatched)
}

// CheckGatewayKeepsRoutes is CheckRouterKeepsRoutes for a virtual
// gateway and its gateway routes (CheckGatewayRoute's rule).
func CheckGatewayKeepsRoutes(gw *VirtualGatewaySpec, names []string, routes []*GatewayRouteSpec) error {
	var missingPort, unmatched []string
	for i, rs := range routes {
		if rs == nil {
			continue
		}
		_, port, err := GatewayRouteProtocol(rs)
		if err != nil || CheckGatewayRoute(rs, gw) == nil {
			continue
		}
		if port == 0 && len(gw.Listeners) > 1 {
			missingPort = append(missingPort, names[i])
		} else {
			unmatched = append(unmatched, names[i])
		}
	}
	return routesLeft("Gateway Route", "Virtual Gateway", missingPort, unmatched)
}

// routesLeft is the BadRequestException of an update that would leave
// routes behind: those without a port match under several listeners in
// App Mesh's words (the message its API answered), the others alike.
// Each names up to five routes.
func routesLeft(route, parent string, missingPort, unmatched []string) error {
	five := func(names []string) string { return strings.Join(names[:min(len(names), 5)], ", ") }
	switch {
	case len(missingPort) > 0:
		return BadRequest("All %ss for this %s must define a port match before adding multiple listeners to this %s. %d %s(s) are missing port. Listing up to 5 route names: [%s]",
			route, parent, parent, len(missingPort), route, five(missingPort))
	case len(unmatched) > 0:
		return BadRequest("All %ss for this %s must match the protocol and port of one of its listeners. %d %s(s) match none. Listing up to 5 route names: [%s]",
			route, parent, len(unmatched), route, five(unmatched))
	}
	return nil
}

// GatewayRouteProtocol is RouteProtocol for gateway routes.
func GatewayRouteProtocol(s *GatewayRouteSpec) (VirtualGatewayPortProtocol, int64, error) {
	var (
		n     int
		proto VirtualGatewayPortProtocol
		port  *int64
	)
	if s.HttpRoute != nil {
		n, proto = n+1, VirtualGatewayPortProtocolHttp
		if s.HttpRoute.Match != nil {
			port = s.HttpRoute.Match.Port
		}
	}
	if s.Http2Route != nil {
		n, proto = n+1, VirtualGatewayPortProtocolHttp2
		if s.Http2Route.Match != nil {
			port = s.Http2Route.Match.Port
		}
	}
	if s.GrpcRoute != nil {
		n, proto = n+1, VirtualGatewayPortProtocolGrpc
		if s.GrpcRoute.Match != nil {
			port = s.GrpcRoute.Match.Port
		}
	}
	if n != 1 {
		return "", 0, BadRequest("Gateway route spec must have exactly one of [grpcRoute, http2Route, httpRoute] set")
	}
	if port == nil {
		return proto, 0, nil
	}
	return proto, *port, nil
}

// CheckGatewayRoute checks a gateway route against the listeners of its
// virtual gateway, as CheckRoute does for routes.
func CheckGatewayRoute(s *GatewayRouteSpec, gw *VirtualGatewaySpec) error {
	proto, port, err := GatewayRouteProtocol(s)
	if err != nil {
		return err
	}
	var ls []VirtualGatewayPortMapping
	if gw != nil {
		for _, l := range gw.Listeners {
			if l.PortMapping != nil {
				ls = append(ls, *l.PortMapping)
			}
		}
	}
	return checkListener("Gateway route", "Virtual Gateway", string(proto), port, ls, func(p VirtualGatewayPortMapping) (string, int64) {
		return string(p.Protocol), deref(p.Port)
	})
}

func checkListener[L any](what, parent, proto string, port int64, ls []L, get func(L) (string, int64)) error {
	if len(ls) == 0 {
		return nil
	}
	if port == 0 {
		if len(ls) > 1 {
			return BadRequest("%s must define a port match criteria if the %s has multiple listeners", what, parent)
		}
		if p, _ := get(ls[0]); p != proto {
			return BadRequest("%s of protocol %s does not match the %s listener protocol %s", what, proto, parent, p)
		}
		return nil
	}
	for _, l := range ls {
		p, lport := get(l)
		if lport != port {
			continue
		}
		if p != proto {
			return BadRequest("%s of protocol %s does not match the protocol %s of the %s listener on port %d", what, proto, p, parent, port)
		}
		return nil
	}
	return BadRequest("%s match port %d does not match any listener of the %s", what, port, parent)
}

// RouteTargets returns the virtual nodes a route's weighted targets name,
// in spec order, without duplicates; none for a nil spec.
func RouteTargets(s *RouteSpec) []string {
	var wts []WeightedTarget
	switch {
	case s == nil:
	case s.HttpRoute != nil && s.HttpRoute.Action != nil:
		wts = s.HttpRoute.Action.WeightedTargets
	case s.Http2Route != nil && s.Http2Route.Action != nil:
		wts = s.Http2Route.Action.WeightedTargets
	case s.GrpcRoute != nil && s.GrpcRoute.Action != nil:
		wts = s.GrpcRoute.Action.WeightedTargets
	case s.TcpRoute != nil && s.TcpRoute.Action != nil:
		wts = s.TcpRoute.Action.WeightedTargets
	}
	var out []string
	seen := map[string]bool{}
	for _, wt := range wts {
		if n := deref(wt.VirtualNode); n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// GatewayRouteTargetService returns the virtual service a gateway route
// sends traffic to; "" for a nil spec.
func GatewayRouteTargetService(s *GatewayRouteSpec) string {
	var t *GatewayRouteTarget
	switch {
	case s == nil:
	case s.HttpRoute != nil && s.HttpRoute.Action != nil:
		t = s.HttpRoute.Action.Target
	case s.Http2Route != nil && s.Http2Route.Action != nil:
		t = s.Http2Route.Action.Target
	case s.GrpcRoute != nil && s.GrpcRoute.Action != nil:
		t = s.GrpcRoute.Action.Target
	}
	if t == nil || t.VirtualService == nil {
		return ""
	}
	return deref(t.VirtualService.VirtualServiceName)
}

// ServiceProvider returns the kind and name of a virtual service's
// provider, or "" when it has none.
func ServiceProvider(s *VirtualServiceSpec) (Kind, string) {
	switch {
	case s == nil || s.Provider == nil:
	case s.Provider.VirtualNode != nil:
		return KindVirtualNode, deref(s.Provider.VirtualNode.VirtualNodeName)
	case s.Provider.VirtualRouter != nil:
		return KindVirtualRouter, deref(s.Provider.VirtualRouter.VirtualRouterName)
	}
	return "", ""
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
