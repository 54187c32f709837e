package translate

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestEgressHostAsTranslated: every virtual host of a sidecar's or
// proxyless client's egress route tables is one the Memo names
// (EgressHostRef, in the client's flavour), and EgressHost, asked on a
// Memo of its own, builds it exactly as the translation did, for every
// sidecar and proxyless client of every case and of random meshes.
func TestEgressHostAsTranslated(t *testing.T) {
	var views []*View
	var owners []string
	for _, dir := range caseDirs(t) {
		v, owner := replay(t, dir)
		views, owners = append(views, v), append(owners, owner)
	}
	for seed := range uint64(60) {
		views, owners = append(views, randomMesh(rand.New(rand.NewPCG(seed, 11)))), append(owners, defaultAccount)
	}
	hosts, fixed, grpcHosts := 0, 0, 0
	for i, v := range views {
		m := NewMemo()
		for _, id := range proxies(v, owners[i]) {
			if id.Kind != appmesh.KindVirtualNode {
				continue
			}
			r, err := TranslateWith(v, id, m)
			if err != nil {
				continue // refused inputs have no tables to follow
			}
			for _, rc := range r.Routes {
				if !strings.HasPrefix(rc.GetName(), "rds_egress_") {
					continue
				}
				for _, vh := range rc.GetVirtualHosts() {
					ref, ok := m.EgressHostRef(vh)
					if !ok {
						t.Fatalf("%s: %s: host %s is not named by the Memo", goldenName(id), rc.GetName(), vh.GetName())
					}
					if ref.Fixed {
						if vh.GetName() != "allow_all" {
							t.Fatalf("%s: %s: host %s is fixed", goldenName(id), rc.GetName(), vh.GetName())
						}
						fixed++
						continue
					}
					if ref.GRPC != id.Proxyless {
						t.Fatalf("%s: %s: host %s named in the flavour GRPC=%t", goldenName(id), rc.GetName(), vh.GetName(), ref.GRPC)
					}
					if ref.GRPC {
						grpcHosts++
					}
					got, err := NewMemo().EgressHost(v, id, ref)
					if err != nil {
						t.Fatalf("%s: %s: host %+v: %v", goldenName(id), rc.GetName(), ref, err)
					}
					a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
					b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(got)
					if string(a) != string(b) {
						t.Fatalf("%s: %s: host %+v built alone differs:\n%v\ntranslated:\n%v", goldenName(id), rc.GetName(), ref, got, vh)
					}
					hosts++
				}
			}
		}
	}
	if hosts < 100 || grpcHosts < 20 {
		t.Fatalf("only %d hosts compared, %d of proxyless clients", hosts, grpcHosts)
	}
	t.Logf("%d hosts compared (%d of proxyless clients), %d ALLOW_ALL hosts", hosts, grpcHosts, fixed)
}

// TestRouteHostsOnly: what a route update may change for the sidecars
// to follow it by their virtual hosts alone.
func TestRouteHostsOnly(t *testing.T) {
	i64 := func(n int64) *int64 { return &n }
	s := func(v string) *string { return &v }
	route := func(mod func(*appmesh.RouteData)) *appmesh.RouteData {
		rd := &appmesh.RouteData{RouteName: s("rt"), VirtualRouterName: s("r"), Spec: &appmesh.RouteSpec{
			HttpRoute: &appmesh.HttpRoute{
				Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
				Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{
					{VirtualNode: s("a"), Weight: i64(50)}, {VirtualNode: s("b"), Port: i64(8080), Weight: i64(50)}}},
			}}}
		if mod != nil {
			mod(rd)
		}
		return rd
	}
	for _, tc := range []struct {
		name string
		mod  func(*appmesh.RouteData)
		want bool
	}{
		{"the same", nil, true},
		{"weights", func(r *appmesh.RouteData) { r.Spec.HttpRoute.Action.WeightedTargets[0].Weight = i64(0) }, true},
		{"match", func(r *appmesh.RouteData) { r.Spec.HttpRoute.Match.Prefix = s("/v2") }, true},
		{"priority", func(r *appmesh.RouteData) { r.Spec.Priority = i64(3) }, true},
		{"timeout", func(r *appmesh.RouteData) {
			r.Spec.HttpRoute.Timeout = &appmesh.HttpTimeout{PerRequest: &appmesh.Duration{Unit: "ms", Value: i64(100)}}
		}, true},
		{"a target's node", func(r *appmesh.RouteData) { r.Spec.HttpRoute.Action.WeightedTargets[0].VirtualNode = s("c") }, false},
		{"a target's port", func(r *appmesh.RouteData) { r.Spec.HttpRoute.Action.WeightedTargets[1].Port = i64(9090) }, false},
		{"a target more", func(r *appmesh.RouteData) {
			r.Spec.HttpRoute.Action.WeightedTargets = append(r.Spec.HttpRoute.Action.WeightedTargets, appmesh.WeightedTarget{VirtualNode: s("c"), Weight: i64(1)})
		}, false},
		{"the match port", func(r *appmesh.RouteData) { r.Spec.HttpRoute.Match.Port = i64(8080) }, false},
		{"http2 instead", func(r *appmesh.RouteData) { r.Spec.Http2Route, r.Spec.HttpRoute = r.Spec.HttpRoute, nil }, false},
		{"tcp", func(r *appmesh.RouteData) {
			r.Spec.HttpRoute = nil
			r.Spec.TcpRoute = &appmesh.TcpRoute{Action: &appmesh.TcpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("a"), Weight: i64(1)}}}}
		}, false},
		{"another route", func(r *appmesh.RouteData) { r.RouteName = s("other") }, false},
		{"no spec", func(r *appmesh.RouteData) { r.Spec = nil }, false},
	} {
		if got := RouteHostsOnly(route(nil), route(tc.mod)); got != tc.want {
			t.Errorf("%s: RouteHostsOnly = %t, want %t", tc.name, got, tc.want)
		}
	}
	if RouteHostsOnly(nil, route(nil)) || RouteHostsOnly(route(nil), nil) {
		t.Error("a route created or deleted is not an update of its hosts")
	}
}

func TestRouteTimeoutSame(t *testing.T) {
	i64 := func(n int64) *int64 { return &n }
	route := httpRouteData
	ms := func(v int64) *appmesh.Duration { return &appmesh.Duration{Unit: "ms", Value: i64(v)} }
	for _, tc := range []struct {
		name string
		mod  func(*appmesh.RouteSpec)
		want bool
	}{
		{"the same", nil, true},
		{"weights", func(r *appmesh.RouteSpec) { r.HttpRoute.Action.WeightedTargets[0].Weight = i64(7) }, true},
		{"per request", func(r *appmesh.RouteSpec) { r.HttpRoute.Timeout = &appmesh.HttpTimeout{PerRequest: ms(100)} }, false},
		// 15 s is App Mesh's default: the gateway copies the same value.
		{"per request, the default", func(r *appmesh.RouteSpec) { r.HttpRoute.Timeout = &appmesh.HttpTimeout{PerRequest: ms(15000)} }, true},
		{"idle only", func(r *appmesh.RouteSpec) { r.HttpRoute.Timeout = &appmesh.HttpTimeout{Idle: ms(100)} }, true},
		{"http2", func(r *appmesh.RouteSpec) {
			r.Http2Route, r.HttpRoute = r.HttpRoute, nil
			r.Http2Route.Timeout = &appmesh.HttpTimeout{PerRequest: ms(100)}
		}, false},
		{"an empty spec", func(r *appmesh.RouteSpec) { *r = appmesh.RouteSpec{} }, true},
	} {
		if got := RouteTimeoutSame(route(nil), route(tc.mod)); got != tc.want {
			t.Errorf("%s: RouteTimeoutSame = %t, want %t", tc.name, got, tc.want)
		}
	}
	if RouteTimeoutSame(nil, route(nil)) || RouteTimeoutSame(route(nil), &appmesh.RouteData{}) {
		t.Error("a route created, deleted or without a spec has no timeout to keep")
	}
}

// TestRouteProxylessSame: an update keeps a proxyless client's tables
// to their hosts when it keeps which routes a gRPC client keeps (a
// :method match that admits POST), whatever else it changes.
func TestRouteProxylessSame(t *testing.T) {
	i64 := func(n int64) *int64 { return &n }
	s := func(v string) *string { return &v }
	route := httpRouteData
	method := func(m appmesh.HttpMethod) func(*appmesh.RouteSpec) {
		return func(r *appmesh.RouteSpec) { r.HttpRoute.Match.Method = m }
	}
	for _, tc := range []struct {
		name     string
		old, new func(*appmesh.RouteSpec)
		want     bool
	}{
		{"the same", nil, nil, true},
		{"weights", nil, func(r *appmesh.RouteSpec) { r.HttpRoute.Action.WeightedTargets[0].Weight = i64(7) }, true},
		{"POST added", nil, method(appmesh.HttpMethodPost), true},
		{"GET added", nil, method(appmesh.HttpMethodGet), false},
		{"GET to PUT", method(appmesh.HttpMethodGet), method(appmesh.HttpMethodPut), true},
		{"GET to POST", method(appmesh.HttpMethodGet), method(appmesh.HttpMethodPost), false},
		{"gRPC metadata :method", func(r *appmesh.RouteSpec) {
			r.GrpcRoute, r.HttpRoute = &appmesh.GrpcRoute{Match: &appmesh.GrpcRouteMatch{}, Action: &appmesh.GrpcRouteAction{WeightedTargets: r.HttpRoute.Action.WeightedTargets}}, nil
		}, func(r *appmesh.RouteSpec) {
			r.GrpcRoute, r.HttpRoute = &appmesh.GrpcRoute{Match: &appmesh.GrpcRouteMatch{Metadata: []appmesh.GrpcRouteMetadata{
				{Name: s(":method"), Match: &appmesh.GrpcRouteMetadataMatchMethod{Exact: s("GET")}}}},
				Action: &appmesh.GrpcRouteAction{WeightedTargets: r.HttpRoute.Action.WeightedTargets}}, nil
		}, false},
	} {
		if got := RouteProxylessSame(route(tc.old), route(tc.new)); got != tc.want {
			t.Errorf("%s: RouteProxylessSame = %t, want %t", tc.name, got, tc.want)
		}
	}
	if RouteProxylessSame(nil, route(nil)) || RouteProxylessSame(route(nil), &appmesh.RouteData{}) {
		t.Error("a route created, deleted or without a spec keeps no routes")
	}
}

// httpRouteData is route rt of router r: an HTTP route on / to node a
// with weight 1, changed by mod when it is not nil.
func httpRouteData(mod func(*appmesh.RouteSpec)) *appmesh.RouteData {
	rd := &appmesh.RouteData{RouteName: ptr("rt"), VirtualRouterName: ptr("r"), Spec: &appmesh.RouteSpec{
		HttpRoute: &appmesh.HttpRoute{
			Match:  &appmesh.HttpRouteMatch{Prefix: ptr("/")},
			Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: ptr("a"), Weight: ptr[int64](1)}}},
		}}}
	if mod != nil {
		mod(rd.Spec)
	}
	return rd
}
