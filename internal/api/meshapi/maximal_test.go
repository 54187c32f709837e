package meshapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/shape/shapetest"
	"github.com/weftmesh/weft/internal/store"
)

// maximal generates App Mesh specs that set every member of every spec
// shape. Names that must exist point at resources the test creates; every
// port is 8080 so that routes match their router's listener.
func maximal() *shapetest.Maximal {
	return &shapetest.Maximal{
		Model: appmesh.Model(),
		// App Mesh takes one route type per route.
		Exclusive: map[string][]string{
			"RouteSpec":        {"grpcRoute", "http2Route", "httpRoute", "tcpRoute"},
			"GatewayRouteSpec": {"grpcRoute", "http2Route", "httpRoute"},
		},
		Value: func(path, shapeName string, v int) (any, bool) {
			if shapeName == "PortNumber" || shapeName == "ListenerPort" {
				return json.Number("8080"), true
			}
			if s := appmesh.Model().Shapes[shapeName]; s.Kind != shape.String || len(s.Enum) > 0 {
				return nil, false
			}
			last := path[strings.LastIndex(path, ".")+1:]
			switch {
			case last == "virtualNode" || last == "virtualNodeName":
				return "target-node", true
			case last == "virtualRouterName":
				return "target-router", true
			case last == "virtualServiceName" && !strings.HasPrefix(path, "backends."):
				return "target.svc", true
			}
			return nil, false
		},
	}
}

// raw sends one request without the SDK and decodes the JSON answer.
func raw(t *testing.T, ts *testServer, method, path string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s: %s", method, path, resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), b)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out map[string]any
	if err := d.Decode(&out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}

// sameJSON compares two documents as JSON values.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	norm := func(v any) any {
		b, _ := json.Marshal(v)
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var out any
		d.Decode(&out)
		return out
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		t.Fatalf("%s: spec changed\n got %s\nwant %s", what, gb, wb)
	}
}

// routeProtocol returns the listener protocol a generated route spec needs.
func routeProtocol(spec map[string]any) string {
	for key, proto := range map[string]string{"grpcRoute": "grpc", "http2Route": "http2", "httpRoute": "http", "tcpRoute": "tcp"} {
		if _, ok := spec[key]; ok {
			return proto
		}
	}
	return ""
}

// testMaximalSpecs creates every generated spec over raw HTTP, reads it
// back through the SDK (which must decode every member), creates a twin
// from the SDK's typed spec (which must encode every member) and checks
// that both read back exactly as generated.
func testMaximalSpecs(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	big := appmesh.Limits{Meshes: 1000, VirtualNodesPerMesh: 1000, VirtualServicesPerMesh: 1000, VirtualRoutersPerMesh: 1000,
		VirtualGatewaysPerMesh: 1000, RoutesPerVirtualRouter: 1000, GatewayRoutesPerVirtualGateway: 1000, BackendsPerVirtualNode: 1000}
	ts := newServer(t, &big)
	c := ts.client(account, rec)
	m := aws.String("max")
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)
	must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("target-node"), Spec: nodeSpec()}))(t)
	must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("target-router"), Spec: routerSpec()}))(t)
	must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("target.svc"), Spec: &types.VirtualServiceSpec{}}))(t)

	g := maximal()
	specs := []string{"MeshSpec", "VirtualNodeSpec", "VirtualServiceSpec", "VirtualRouterSpec", "RouteSpec", "VirtualGatewaySpec", "GatewayRouteSpec"}
	for _, specShape := range specs {
		t.Run(specShape, func(t *testing.T) {
			docs := g.Docs(specShape)
			for v, d := range docs {
				doc := d.(map[string]any)
				name := fmt.Sprintf("v%d", v)
				twin := name + "-sdk"
				var base, field string // the collection path and the Data member
				switch specShape {
				case "MeshSpec":
					name, twin = "max-"+name, "max-"+twin
					raw(t, ts, "PUT", "/v20190125/meshes", map[string]any{"meshName": name, "spec": doc})
					sdkSpec := must(c.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: &name}))(t).Mesh.Spec
					must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: &twin, Spec: sdkSpec}))(t)
					base, field = "/v20190125/meshes", "mesh"
				case "VirtualNodeSpec":
					raw(t, ts, "PUT", "/v20190125/meshes/max/virtualNodes", map[string]any{"virtualNodeName": name, "spec": doc})
					sdkSpec := must(c.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: &name}))(t).VirtualNode.Spec
					must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: &twin, Spec: sdkSpec}))(t)
					base, field = "/v20190125/meshes/max/virtualNodes", "virtualNode"
				case "VirtualServiceSpec":
					name, twin = name+".svc", twin+".svc"
					raw(t, ts, "PUT", "/v20190125/meshes/max/virtualServices", map[string]any{"virtualServiceName": name, "spec": doc})
					sdkSpec := must(c.DescribeVirtualService(ctx, &sdk.DescribeVirtualServiceInput{MeshName: m, VirtualServiceName: &name}))(t).VirtualService.Spec
					must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: &twin, Spec: sdkSpec}))(t)
					base, field = "/v20190125/meshes/max/virtualServices", "virtualService"
				case "VirtualRouterSpec":
					raw(t, ts, "PUT", "/v20190125/meshes/max/virtualRouters", map[string]any{"virtualRouterName": name, "spec": doc})
					sdkSpec := must(c.DescribeVirtualRouter(ctx, &sdk.DescribeVirtualRouterInput{MeshName: m, VirtualRouterName: &name}))(t).VirtualRouter.Spec
					must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: &twin, Spec: sdkSpec}))(t)
					base, field = "/v20190125/meshes/max/virtualRouters", "virtualRouter"
				case "RouteSpec":
					router := "router-" + name
					must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: &router, Spec: &types.VirtualRouterSpec{
						Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocol(routeProtocol(doc))}}}}}))(t)
					base = "/v20190125/meshes/max/virtualRouter/" + router + "/routes"
					raw(t, ts, "PUT", base, map[string]any{"routeName": name, "spec": doc})
					sdkSpec := must(c.DescribeRoute(ctx, &sdk.DescribeRouteInput{MeshName: m, VirtualRouterName: &router, RouteName: &name}))(t).Route.Spec
					must(c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: &router, RouteName: &twin, Spec: sdkSpec}))(t)
					field = "route"
				case "VirtualGatewaySpec":
					raw(t, ts, "PUT", "/v20190125/meshes/max/virtualGateways", map[string]any{"virtualGatewayName": name, "spec": doc})
					sdkSpec := must(c.DescribeVirtualGateway(ctx, &sdk.DescribeVirtualGatewayInput{MeshName: m, VirtualGatewayName: &name}))(t).VirtualGateway.Spec
					must(c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: &twin, Spec: sdkSpec}))(t)
					base, field = "/v20190125/meshes/max/virtualGateways", "virtualGateway"
				case "GatewayRouteSpec":
					gw := "gateway-" + name
					must(c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: &gw, Spec: &types.VirtualGatewaySpec{
						Listeners: []types.VirtualGatewayListener{{PortMapping: &types.VirtualGatewayPortMapping{Port: aws.Int32(8080), Protocol: types.VirtualGatewayPortProtocol(routeProtocol(doc))}}}}}))(t)
					base = "/v20190125/meshes/max/virtualGateway/" + gw + "/gatewayRoutes"
					raw(t, ts, "PUT", base, map[string]any{"gatewayRouteName": name, "spec": doc})
					sdkSpec := must(c.DescribeGatewayRoute(ctx, &sdk.DescribeGatewayRouteInput{MeshName: m, VirtualGatewayName: &gw, GatewayRouteName: &name}))(t).GatewayRoute.Spec
					must(c.CreateGatewayRoute(ctx, &sdk.CreateGatewayRouteInput{MeshName: m, VirtualGatewayName: &gw, GatewayRouteName: &twin, Spec: sdkSpec}))(t)
					field = "gatewayRoute"
				}
				for _, n := range []string{name, twin} {
					got := raw(t, ts, "GET", base+"/"+n, nil)
					sameJSON(t, specShape+" "+n, got["spec"], doc)
					if got[field] != nil {
						t.Fatalf("describe answered the output wrapper, not its payload")
					}
				}
			}
			all, covered := g.Members(specShape), g.Covered(specShape, docs)
			if !slices.Equal(all, covered) {
				t.Fatalf("%d documents cover %d of %d members and enum values: missing %v", len(docs), len(covered), len(all), missing(all, covered))
			}
			t.Logf("%s: %d documents set all %d members and enum values", specShape, len(docs), len(all))
		})
	}
	// What the API stored of every member passes the check weft restore
	// makes of each key: resources, tags, the in-use index.
	_, err := ts.st.View(ctx, func(tx store.Tx) error {
		kvs, err := tx.List(appmesh.KeyPrefix, "", 0)
		for _, kv := range kvs {
			if err := ops.CheckRecord(kv.Key, kv.Value); err != nil {
				t.Errorf("%s: %v", kv.Key, err)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func missing(all, have []string) []string {
	var out []string
	for _, a := range all {
		if !slices.Contains(have, a) {
			out = append(out, a)
		}
	}
	return out
}
