package proxy

import (
	"encoding/json"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// translatedResources is every resource the translator gives id in v, for
// a harness to push: listeners (each passed to mod first, when given: a
// test's address), routes, clusters and endpoints.
func translatedResources(t testing.TB, v *translate.View, id translate.Identity, mod func(*listenerv3.Listener)) []types.Resource {
	t.Helper()
	rs, err := translate.Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	var push []types.Resource
	for _, r := range rs.Listeners {
		if mod != nil {
			mod(r)
		}
		push = append(push, r)
	}
	for _, r := range rs.Routes {
		push = append(push, r)
	}
	for _, r := range rs.Clusters {
		push = append(push, r)
	}
	for _, r := range rs.Endpoints {
		push = append(push, r)
	}
	return push
}

// decodeJSON decodes an App Mesh spec written as JSON into into,
// failing the test on an error.
func decodeJSON(t *testing.T, s string, into any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), into); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
}

// meshView is an empty view of mesh with endpoints (nil for none), for a
// test to fill with the App Mesh resources it decodes.

func meshView(mesh string, endpoints map[string][]translate.Endpoint) *translate.View {
	if endpoints == nil {
		endpoints = map[string][]translate.Endpoint{}
	}
	return &translate.View{
		Mesh:            &appmesh.MeshData{MeshName: &mesh, Spec: &appmesh.MeshSpec{}},
		VirtualNodes:    map[string]*appmesh.VirtualNodeData{},
		VirtualServices: map[string]*appmesh.VirtualServiceData{},
		VirtualRouters:  map[string]*appmesh.VirtualRouterData{}, Routes: map[string][]*appmesh.RouteData{},
		VirtualGateways: map[string]*appmesh.VirtualGatewayData{}, GatewayRoutes: map[string][]*appmesh.GatewayRouteData{},
		Endpoints: endpoints,
	}
}
