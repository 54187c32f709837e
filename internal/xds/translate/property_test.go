package translate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestRandomMeshes builds random meshes (nodes, routers, routes, services,
// backends, gateways; some references dangling, some weights zero) and
// checks, for every proxy of each, that the output passes Check and that
// every backend reaches what its routes say: each routable backend port has
// a virtual host for the service whose weighted clusters name exactly the
// targets' clusters, and every Cloud Map target has endpoints.
func TestRandomMeshes(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	checked := 0
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 42))
		v := randomMesh(rng)
		for _, id := range proxies(v, defaultAccount) {
			r, err := Translate(v, id)
			if err != nil {
				t.Fatalf("seed %d %s: %v", seed, goldenName(id), err)
			}
			if err := Check(r); err != nil {
				t.Fatalf("seed %d %s: %v", seed, goldenName(id), err)
			}
			if id.Kind == appmesh.KindVirtualNode {
				checked += checkBackends(t, seed, v, id, r)
			}
		}
	}
	if checked < n {
		t.Fatalf("only %d routes checked in %d meshes: the generator is too sparse", checked, n)
	}
}

var (
	protos = []appmesh.PortProtocol{appmesh.PortProtocolHttp, appmesh.PortProtocolHttp2, appmesh.PortProtocolGrpc, appmesh.PortProtocolTcp}
	ports  = []int64{80, 8080, 9000, 443}
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func ptr[T any](v T) *T { return &v }

func randomMesh(rng *rand.Rand) *View {
	mesh := "m"
	v := &View{
		Mesh:         &appmesh.MeshData{MeshName: &mesh, Spec: &appmesh.MeshSpec{EgressFilter: &appmesh.EgressFilter{Type: pick(rng, []appmesh.EgressFilterType{appmesh.EgressFilterTypeAllowAll, appmesh.EgressFilterTypeDropAll})}}},
		VirtualNodes: map[string]*appmesh.VirtualNodeData{}, VirtualServices: map[string]*appmesh.VirtualServiceData{},
		VirtualRouters: map[string]*appmesh.VirtualRouterData{}, Routes: map[string][]*appmesh.RouteData{},
		VirtualGateways: map[string]*appmesh.VirtualGatewayData{}, GatewayRoutes: map[string][]*appmesh.GatewayRouteData{},
		Endpoints: map[string][]Endpoint{},
	}
	nodes := make([]string, 2+rng.IntN(5))
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%d", i)
	}
	services := make([]string, 1+rng.IntN(6))
	for i := range services {
		services[i] = fmt.Sprintf("s%d.local", i)
	}
	for _, n := range nodes {
		v.VirtualNodes[n] = randomNode(rng, n, services)
	}
	for i, s := range services {
		spec := &appmesh.VirtualServiceSpec{}
		switch rng.IntN(4) {
		case 0, 1:
			spec.Provider = &appmesh.VirtualServiceProvider{VirtualNode: &appmesh.VirtualNodeServiceProvider{VirtualNodeName: ptr(pick(rng, nodes) + pick(rng, []string{"", "", "", "-gone"}))}}
		case 2:
			r := fmt.Sprintf("r%d", i)
			spec.Provider = &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: &r}}
			v.VirtualRouters[r], v.Routes[r] = randomRouter(rng, r, nodes)
		}
		v.VirtualServices[s] = &appmesh.VirtualServiceData{VirtualServiceName: ptr(s), Spec: spec}
	}
	if rng.IntN(2) == 0 {
		v.VirtualGateways["g"], v.GatewayRoutes["g"] = randomGateway(rng, services)
	}
	addEndpoints(v)
	return v
}

func randomNode(rng *rand.Rand, name string, services []string) *appmesh.VirtualNodeData {
	spec := &appmesh.VirtualNodeSpec{}
	for range rng.IntN(3) {
		spec.Listeners = append(spec.Listeners, appmesh.Listener{PortMapping: &appmesh.PortMapping{Port: ptr(pick(rng, ports)), Protocol: pick(rng, protos)}})
	}
	switch rng.IntN(3) {
	case 0:
		spec.ServiceDiscovery = &appmesh.ServiceDiscovery{AwsCloudMap: &appmesh.AwsCloudMapServiceDiscovery{NamespaceName: ptr("local"), ServiceName: ptr(name)}}
	case 1:
		spec.ServiceDiscovery = &appmesh.ServiceDiscovery{Dns: &appmesh.DnsServiceDiscovery{Hostname: ptr(name + ".local"),
			ResponseType: pick(rng, []appmesh.DnsResponseType{"", appmesh.DnsResponseTypeEndpoints})}}
	}
	for range rng.IntN(4) {
		spec.Backends = append(spec.Backends, appmesh.Backend{VirtualService: &appmesh.VirtualServiceBackend{
			VirtualServiceName: ptr(pick(rng, append(services, "unknown.local")))}})
	}
	if rng.IntN(3) == 0 {
		spec.Logging = &appmesh.Logging{AccessLog: &appmesh.AccessLog{File: &appmesh.FileAccessLog{Path: ptr("/dev/stdout")}}}
	}
	return &appmesh.VirtualNodeData{VirtualNodeName: ptr(name), Spec: spec}
}

func randomRouter(rng *rand.Rand, name string, nodes []string) (*appmesh.VirtualRouterData, []*appmesh.RouteData) {
	spec := &appmesh.VirtualRouterSpec{}
	for range 1 + rng.IntN(2) {
		spec.Listeners = append(spec.Listeners, appmesh.VirtualRouterListener{PortMapping: &appmesh.PortMapping{Port: ptr(pick(rng, ports)), Protocol: pick(rng, protos)}})
	}
	var routes []*appmesh.RouteData
	for i := range rng.IntN(4) {
		var wts []appmesh.WeightedTarget
		for range 1 + rng.IntN(3) {
			wt := appmesh.WeightedTarget{VirtualNode: ptr(pick(rng, nodes)), Weight: ptr(int64(rng.IntN(3)))}
			if rng.IntN(3) == 0 {
				wt.Port = ptr(pick(rng, ports))
			}
			wts = append(wts, wt)
		}
		rs := &appmesh.RouteSpec{}
		if rng.IntN(2) == 0 {
			rs.Priority = ptr(int64(rng.IntN(3)))
		}
		var port *int64
		if rng.IntN(2) == 0 {
			port = ptr(pick(rng, ports))
		}
		switch pick(rng, protos) {
		case appmesh.PortProtocolHttp:
			rs.HttpRoute = randomHTTPRoute(rng, wts, port)
		case appmesh.PortProtocolHttp2:
			rs.Http2Route = randomHTTPRoute(rng, wts, port)
		case appmesh.PortProtocolGrpc:
			rs.GrpcRoute = &appmesh.GrpcRoute{Action: &appmesh.GrpcRouteAction{WeightedTargets: wts}, Match: &appmesh.GrpcRouteMatch{Port: port, ServiceName: pick(rng, []*string{nil, ptr("a.B")})}}
		default:
			rs.TcpRoute = &appmesh.TcpRoute{Action: &appmesh.TcpRouteAction{WeightedTargets: wts}, Match: &appmesh.TcpRouteMatch{Port: port}}
		}
		routes = append(routes, &appmesh.RouteData{RouteName: ptr(fmt.Sprintf("%s-%d", name, i)), VirtualRouterName: &name, Spec: rs})
	}
	return &appmesh.VirtualRouterData{VirtualRouterName: &name, Spec: spec}, routes
}

func randomHTTPRoute(rng *rand.Rand, wts []appmesh.WeightedTarget, port *int64) *appmesh.HttpRoute {
	m := &appmesh.HttpRouteMatch{Port: port}
	switch rng.IntN(3) {
	case 0:
		m.Prefix = ptr(pick(rng, []string{"/", "/a", "/a/b"}))
	case 1:
		m.Path = &appmesh.HttpPathMatch{Exact: ptr("/x")}
	default:
		m.Path = &appmesh.HttpPathMatch{Regex: ptr("/r[0-9]+")}
	}
	if rng.IntN(3) == 0 {
		m.Method = appmesh.HttpMethodGet
	}
	r := &appmesh.HttpRoute{Action: &appmesh.HttpRouteAction{WeightedTargets: wts}, Match: m}
	if rng.IntN(3) == 0 {
		r.RetryPolicy = &appmesh.HttpRetryPolicy{MaxRetries: ptr(int64(rng.IntN(3))), HttpRetryEvents: []string{"server-error"}}
	}
	return r
}

func randomGateway(rng *rand.Rand, services []string) (*appmesh.VirtualGatewayData, []*appmesh.GatewayRouteData) {
	spec := &appmesh.VirtualGatewaySpec{}
	for range 1 + rng.IntN(2) {
		spec.Listeners = append(spec.Listeners, appmesh.VirtualGatewayListener{PortMapping: &appmesh.VirtualGatewayPortMapping{
			Port: ptr(pick(rng, ports)), Protocol: pick(rng, []appmesh.VirtualGatewayPortProtocol{"http", "http2", "grpc"})}})
	}
	var grs []*appmesh.GatewayRouteData
	for i := range rng.IntN(5) {
		target := &appmesh.GatewayRouteTarget{VirtualService: &appmesh.GatewayRouteVirtualService{VirtualServiceName: ptr(pick(rng, services))}}
		hr := &appmesh.HttpGatewayRoute{Action: &appmesh.HttpGatewayRouteAction{Target: target},
			Match: &appmesh.HttpGatewayRouteMatch{Prefix: ptr(pick(rng, []string{"/", "/a/", "/a/b", "/c"}))}}
		if rng.IntN(3) == 0 {
			hr.Action.Rewrite = &appmesh.HttpGatewayRouteRewrite{Hostname: &appmesh.GatewayRouteHostnameRewrite{DefaultTargetHostname: appmesh.DefaultGatewayRouteRewriteDisabled}}
		}
		spec := &appmesh.GatewayRouteSpec{}
		switch rng.IntN(3) {
		case 0:
			spec.HttpRoute = hr
		case 1:
			spec.Http2Route = hr
		default:
			spec.GrpcRoute = &appmesh.GrpcGatewayRoute{Action: &appmesh.GrpcGatewayRouteAction{Target: target}, Match: &appmesh.GrpcGatewayRouteMatch{}}
		}
		grs = append(grs, &appmesh.GatewayRouteData{GatewayRouteName: ptr(fmt.Sprintf("gr%d", i)), Spec: spec})
	}
	return &appmesh.VirtualGatewayData{VirtualGatewayName: ptr("g"), Spec: spec}, grs
}

// checkBackends recomputes, independently of the translator's grouping,
// which service ports a node can reach over HTTP and compares them with the
// route tables.
func checkBackends(t *testing.T, seed uint64, v *View, id Identity, r *Resources) (checked int) {
	t.Helper()
	tables := map[string]*routev3.RouteConfiguration{}
	for _, rc := range r.Routes {
		tables[rc.GetName()] = rc
	}
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		clusters[c.GetName()] = true
	}
	b := newBuild(v, id)
	for _, name := range backendNames(v.VirtualNodes[id.Name]) {
		for _, sp := range b.servicePorts(name) {
			if !httpFamily(sp.proto) {
				continue
			}
			vh := findHost(tables, sp.port, name)
			for _, mr := range sp.routes {
				var want, total uint32
				for _, tg := range mr.targets {
					total += tg.weight
				}
				if total == 0 || id.Proxyless && mr.http != nil && mr.http.Match != nil && mr.http.Match.Method != "" {
					continue
				}
				want = uint32(len(mr.targets))
				checked++
				route := findRoute(vh, mr.name)
				if route == nil {
					t.Fatalf("seed %d %s: service %s port %d: route %s missing", seed, goldenName(id), name, sp.port, mr.name)
				}
				got := route.GetRoute().GetWeightedClusters().GetClusters()
				if uint32(len(got)) != want {
					t.Fatalf("seed %d %s: route %s: %d clusters, want %d", seed, goldenName(id), mr.name, len(got), want)
				}
				for i, tg := range mr.targets {
					cn := egressClusterName(id.Mesh, tg.node, tg.proto, tg.port)
					if got[i].GetName() != cn || got[i].GetWeight().GetValue() != tg.weight || !clusters[cn] {
						t.Fatalf("seed %d %s: route %s target %d is %v, want %s weight %d", seed, goldenName(id), mr.name, i, got[i], cn, tg.weight)
					}
				}
			}
		}
	}
	return checked
}

// findHost finds the virtual host of a service in the table of a port;
// each port has one table, whatever its protocol suffix.
func findHost(tables map[string]*routev3.RouteConfiguration, port uint32, service string) *routev3.VirtualHost {
	for name, rc := range tables {
		if !strings.HasPrefix(name, "rds_egress_") || !strings.HasSuffix(name, "_"+fmt.Sprint(port)) {
			continue
		}
		i := slices.IndexFunc(rc.GetVirtualHosts(), func(vh *routev3.VirtualHost) bool { return vh.GetName() == service })
		if i >= 0 {
			return rc.GetVirtualHosts()[i]
		}
	}
	return nil
}

func findRoute(vh *routev3.VirtualHost, name string) *routev3.Route {
	for _, r := range vh.GetRoutes() {
		if r.GetName() == name {
			return r
		}
	}
	return nil
}
