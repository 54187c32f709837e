package translate

import (
	"cmp"
	"regexp"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
)

// gwRoute is a gateway route that applies to one gateway listener.
type gwRoute struct {
	name     string
	priority int64
	http     *appmesh.HttpGatewayRoute // httpRoute or http2Route
	grpc     *appmesh.GrpcGatewayRoute
}

// gatewayRoutes selects the gateway routes of a listener's protocol and
// port, in match order: longest prefix first (exact and regex paths before
// any prefix), then priority, then the route with more conditions, then
// name.
func (b *build) gatewayRoutes(pp portProto) []gwRoute {
	var out []gwRoute
	for _, gd := range b.v.GatewayRoutes[b.id.Name] {
		if gr, ok := applies(gd, pp); ok {
			out = append(out, gr)
		}
	}
	slices.SortStableFunc(out, func(a, b gwRoute) int {
		return cmp.Or(cmp.Compare(pathRank(b), pathRank(a)), cmp.Compare(a.priority, b.priority),
			cmp.Compare(conditions(b), conditions(a)), cmp.Compare(a.name, b.name))
	})
	return out
}

func applies(gd *appmesh.GatewayRouteData, pp portProto) (gwRoute, bool) {
	if gd == nil || gd.Spec == nil {
		return gwRoute{}, false
	}
	s := gd.Spec
	gr := gwRoute{name: str(gd.GatewayRouteName), priority: noPriority}
	if p, ok := i64(s.Priority); ok {
		gr.priority = p
	}
	var matchPort *int64
	switch {
	case pp.proto == appmesh.PortProtocolHttp && s.HttpRoute != nil:
		gr.http = s.HttpRoute
	case pp.proto == appmesh.PortProtocolHttp2 && s.Http2Route != nil:
		gr.http = s.Http2Route
	case pp.proto == appmesh.PortProtocolGrpc && s.GrpcRoute != nil:
		gr.grpc = s.GrpcRoute
	default:
		return gwRoute{}, false
	}
	if gr.http != nil && gr.http.Match != nil {
		matchPort = gr.http.Match.Port
	}
	if gr.grpc != nil && gr.grpc.Match != nil {
		matchPort = gr.grpc.Match.Port
	}
	if p, ok := i64(matchPort); ok && p != int64(pp.port) {
		return gwRoute{}, false
	}
	return gr, true
}

// pathRank orders by path: exact paths, then regexes, then prefixes by
// length (a gRPC service name is a prefix /<service>/).
func pathRank(gr gwRoute) int {
	switch {
	case gr.http != nil && gr.http.Match != nil:
		m := gr.http.Match
		switch {
		case m.Path != nil && m.Path.Exact != nil:
			return 2_000_000
		case m.Path != nil:
			return 1_000_000
		}
		return len(cmp.Or(str(m.Prefix), "/"))
	case gr.grpc != nil && gr.grpc.Match != nil && gr.grpc.Match.ServiceName != nil:
		return len(*gr.grpc.Match.ServiceName) + 2
	}
	return 1
}

func conditions(gr gwRoute) int {
	switch {
	case gr.http != nil && gr.http.Match != nil:
		m := gr.http.Match
		n := len(m.Headers) + len(m.QueryParameters)
		if m.Method != "" {
			n++
		}
		if m.Hostname != nil {
			n++
		}
		return n
	case gr.grpc != nil && gr.grpc.Match != nil:
		n := len(gr.grpc.Match.Metadata)
		if gr.grpc.Match.Hostname != nil {
			n++
		}
		return n
	}
	return 0
}

// gatewayRoute converts a gateway route to the first hop's routes: its
// match, the rewrites, and the self-redirect cluster. A prefix ending in
// "/" that is rewritten also gets an exact route without the slash, as App
// Mesh emitted (so /x is rewritten like /x/).
func (b *build) gatewayRoute(gr gwRoute, redirect string, proto appmesh.PortProtocol, eg *gatewayEgress) []*routev3.Route {
	service, targetPort, hostRewrite := gatewayAction(gr)
	if service == "" {
		return nil
	}
	sp := b.useTarget(service, targetPort, proto, !hostRewrite, eg)
	r := &routev3.Route{Name: gr.name, Match: gatewayMatch(gr)}
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: redirect}, Timeout: ms(gatewayTimeout(sp))}
	if hostRewrite {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: service}
	} else {
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: serviceHeader, Value: service},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}
	}
	r.Action = &routev3.Route_Route{Route: ra}
	out := []*routev3.Route{r}
	if gr.http != nil {
		if extra := pathRewrite(gr.http, r, ra); extra != nil {
			out = append(out, extra)
		}
	}
	return out
}

// useTarget resolves a target service and records it for the egress hop;
// the first gateway route to name a service fixes its port.
func (b *build) useTarget(service string, targetPort *int64, proto appmesh.PortProtocol, keepHost bool, eg *gatewayEgress) *svcPort {
	sp, seen := eg.services[service]
	if !seen {
		sp = b.gatewayTarget(service, targetPort, proto)
		eg.services[service] = sp
		eg.order = append(eg.order, service)
	}
	if keepHost {
		eg.noRewrite[service] = true
	}
	return sp
}

// gatewayAction returns the target service and port and whether the host
// is rewritten to the service name (the default).
func gatewayAction(gr gwRoute) (service string, targetPort *int64, hostRewrite bool) {
	var t *appmesh.GatewayRouteTarget
	var hr *appmesh.GatewayRouteHostnameRewrite
	switch {
	case gr.http != nil && gr.http.Action != nil:
		t = gr.http.Action.Target
		if gr.http.Action.Rewrite != nil {
			hr = gr.http.Action.Rewrite.Hostname
		}
	case gr.grpc != nil && gr.grpc.Action != nil:
		t = gr.grpc.Action.Target
		if gr.grpc.Action.Rewrite != nil {
			hr = gr.grpc.Action.Rewrite.Hostname
		}
	}
	if t == nil || t.VirtualService == nil {
		return "", nil, false
	}
	hostRewrite = hr == nil || hr.DefaultTargetHostname != appmesh.DefaultGatewayRouteRewriteDisabled
	return str(t.VirtualService.VirtualServiceName), t.Port, hostRewrite
}

// gatewayTimeout copies the target's route timeouts, as App Mesh did: the
// longest, so that the second hop's own timeouts decide; 0 when any route
// has none; 15 s without routes.
func gatewayTimeout(sp *svcPort) int64 {
	if sp == nil || len(sp.routes) == 0 {
		return defaultRouteTimeoutMs
	}
	var longest int64
	for _, r := range sp.routes {
		pr, _ := routeTimeouts(r)
		if pr == 0 {
			return 0
		}
		longest = max(longest, pr)
	}
	return longest
}

// gatewayMatch converts a gateway route's match. Hostnames match the
// :authority with or without a port, in any case.
func gatewayMatch(gr gwRoute) *routev3.RouteMatch {
	if gr.grpc != nil {
		return grpcGatewayMatch(gr.grpc.Match)
	}
	m := gr.http.Match
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	setPath(rm, m.Prefix, m.Path)
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, headerMatcher(str(h.Name), h.Match, boolean(h.Invert)))
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, exactHeader(":method", string(m.Method)))
	}
	rm.QueryParameters = queryMatchers(m.QueryParameters)
	addHostname(rm, m.Hostname)
	return rm
}

// grpcGatewayMatch matches a gRPC service as the path prefix /<service>/.
func grpcGatewayMatch(m *appmesh.GrpcGatewayRouteMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	if m.ServiceName != nil {
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/" + *m.ServiceName + "/"}
	}
	for _, md := range m.Metadata {
		var mm *appmesh.HeaderMatchMethod
		if md.Match != nil {
			mm = &appmesh.HeaderMatchMethod{Exact: md.Match.Exact, Prefix: md.Match.Prefix, Range: md.Match.Range, Regex: md.Match.Regex, Suffix: md.Match.Suffix}
		}
		rm.Headers = append(rm.Headers, headerMatcher(str(md.Name), mm, boolean(md.Invert)))
	}
	addHostname(rm, m.Hostname)
	return rm
}

func addHostname(rm *routev3.RouteMatch, h *appmesh.GatewayRouteHostnameMatch) {
	var re string
	switch {
	case h == nil:
		return
	case h.Exact != nil:
		re = "(?i)^" + regexp.QuoteMeta(*h.Exact) + "(:[0-9]+)?$"
	case h.Suffix != nil:
		re = "(?i)^.*" + regexp.QuoteMeta(*h.Suffix) + "(:[0-9]+)?$"
	default:
		return
	}
	rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(re)}}}})
}

// pathRewrite applies an HTTP gateway route's path rewrites and returns
// the extra no-slash route when one is due.
//   - prefix match: the matched prefix becomes "/" by default, or the
//     given value; defaultPrefix DISABLED keeps it;
//   - path match: rewrite.path.exact replaces the whole path.
func pathRewrite(h *appmesh.HttpGatewayRoute, r *routev3.Route, ra *routev3.RouteAction) *routev3.Route {
	var rw *appmesh.HttpGatewayRouteRewrite
	if h.Action != nil {
		rw = h.Action.Rewrite
	}
	m := h.Match
	if m != nil && m.Prefix == nil && m.Path != nil {
		if rw == nil || rw.Path == nil || rw.Path.Exact == nil {
			return nil
		}
		if m.Path.Exact != nil {
			ra.PrefixRewrite = *rw.Path.Exact
		} else {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex("^.*$"), Substitution: *rw.Path.Exact}
		}
		return nil
	}
	prefix := "/"
	if m != nil && m.Prefix != nil {
		prefix = *m.Prefix
	}
	to, ok := prefixRewrite(rw, prefix)
	if !ok {
		return nil
	}
	ra.PrefixRewrite = to
	if len(prefix) < 2 || prefix[len(prefix)-1] != '/' {
		return nil
	}
	// /x/ → /y/ makes /x → /y: the whole path is swapped for a path match.
	extra := cloneRoute(r)
	extra.Match.PathSpecifier = &routev3.RouteMatch_Path{Path: prefix[:len(prefix)-1]}
	if len(to) > 1 && to[len(to)-1] == '/' {
		extra.GetRoute().PrefixRewrite = to[:len(to)-1]
	}
	return extra
}

// prefixRewrite is the value the matched prefix becomes; ok is false when
// it stays as it is.
func prefixRewrite(rw *appmesh.HttpGatewayRouteRewrite, prefix string) (string, bool) {
	if rw != nil && rw.Prefix != nil {
		if rw.Prefix.Value != nil {
			return *rw.Prefix.Value, true
		}
		if rw.Prefix.DefaultPrefix == appmesh.DefaultGatewayRouteRewriteDisabled {
			return "", false
		}
	}
	if prefix == "/" {
		return "", false // "/" to "/" changes nothing
	}
	return "/", true
}

func cloneRoute(r *routev3.Route) *routev3.Route { return proto.Clone(r).(*routev3.Route) }
