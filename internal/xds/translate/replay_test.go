package translate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// A case is a folder of App Mesh inputs and a steps.json listing the calls
// that build its mesh, in the format of the shared conformance corpus
// (testdata/*/steps.json). Only "setup" is replayed: "cleanup" deletes
// everything.
type caseSteps struct {
	Case     string `json:"case"`
	MeshName string `json:"meshName"`
	Setup    []struct {
		Op      string `json:"op"`
		Input   string `json:"input"`
		Account string `json:"account"`
	} `json:"setup"`
}

// callInput is what every App Mesh call input holds: the names that
// identify the resource and its spec.
type callInput struct {
	MeshName           string          `json:"meshName"`
	MeshOwner          string          `json:"meshOwner"`
	VirtualNodeName    string          `json:"virtualNodeName"`
	VirtualServiceName string          `json:"virtualServiceName"`
	VirtualRouterName  string          `json:"virtualRouterName"`
	RouteName          string          `json:"routeName"`
	VirtualGatewayName string          `json:"virtualGatewayName"`
	GatewayRouteName   string          `json:"gatewayRouteName"`
	Spec               json.RawMessage `json:"spec"`
}

// defaultAccount owns meshes whose creating step names no account.
const defaultAccount = "111122223333"

// replay applies a case's setup calls to an empty mesh, in memory, as the
// API would store them, and returns the mesh's View and owner.
func replay(t *testing.T, dir string) (*View, string) {
	t.Helper()
	var cs caseSteps
	readJSON(t, filepath.Join(dir, "steps.json"), &cs)
	v := &View{
		VirtualNodes: map[string]*appmesh.VirtualNodeData{}, VirtualServices: map[string]*appmesh.VirtualServiceData{},
		VirtualRouters: map[string]*appmesh.VirtualRouterData{}, Routes: map[string][]*appmesh.RouteData{},
		VirtualGateways: map[string]*appmesh.VirtualGatewayData{}, GatewayRoutes: map[string][]*appmesh.GatewayRouteData{},
		Endpoints: map[string][]Endpoint{},
	}
	owner := defaultAccount
	for _, st := range cs.Setup {
		var in callInput
		readJSON(t, filepath.Join(dir, st.Input), &in)
		if st.Op == "create-mesh" && st.Account != "" {
			owner = st.Account
		}
		if err := apply(v, st.Op, in); err != nil {
			t.Fatalf("%s: %s %s: %v", cs.Case, st.Op, st.Input, err)
		}
	}
	if v.Mesh == nil {
		t.Fatalf("%s: no mesh after setup", cs.Case)
	}
	return v, owner
}

func apply(v *View, op string, in callInput) error {
	verb, kind, _ := strings.Cut(op, "-")
	del := verb == "delete"
	spec := func(dst any) error {
		if len(in.Spec) == 0 {
			return nil
		}
		return json.Unmarshal(in.Spec, dst)
	}
	switch kind {
	case "mesh":
		if del {
			v.Mesh = nil
			return nil
		}
		d := &appmesh.MeshData{MeshName: &in.MeshName, Spec: &appmesh.MeshSpec{}}
		v.Mesh = d
		return spec(d.Spec)
	case "virtual-node":
		d := &appmesh.VirtualNodeData{MeshName: &in.MeshName, VirtualNodeName: &in.VirtualNodeName, Spec: &appmesh.VirtualNodeSpec{}}
		return put(v.VirtualNodes, in.VirtualNodeName, d, del, func() error { return spec(d.Spec) })
	case "virtual-service":
		d := &appmesh.VirtualServiceData{MeshName: &in.MeshName, VirtualServiceName: &in.VirtualServiceName, Spec: &appmesh.VirtualServiceSpec{}}
		return put(v.VirtualServices, in.VirtualServiceName, d, del, func() error { return spec(d.Spec) })
	case "virtual-router":
		d := &appmesh.VirtualRouterData{MeshName: &in.MeshName, VirtualRouterName: &in.VirtualRouterName, Spec: &appmesh.VirtualRouterSpec{}}
		return put(v.VirtualRouters, in.VirtualRouterName, d, del, func() error { return spec(d.Spec) })
	case "virtual-gateway":
		d := &appmesh.VirtualGatewayData{MeshName: &in.MeshName, VirtualGatewayName: &in.VirtualGatewayName, Spec: &appmesh.VirtualGatewaySpec{}}
		return put(v.VirtualGateways, in.VirtualGatewayName, d, del, func() error { return spec(d.Spec) })
	case "route":
		d := &appmesh.RouteData{MeshName: &in.MeshName, VirtualRouterName: &in.VirtualRouterName, RouteName: &in.RouteName, Spec: &appmesh.RouteSpec{}}
		if err := spec(d.Spec); err != nil {
			return err
		}
		v.Routes[in.VirtualRouterName] = putChild(v.Routes[in.VirtualRouterName], d, del, func(o *appmesh.RouteData) bool { return *o.RouteName == in.RouteName })
		return nil
	case "gateway-route":
		d := &appmesh.GatewayRouteData{MeshName: &in.MeshName, VirtualGatewayName: &in.VirtualGatewayName, GatewayRouteName: &in.GatewayRouteName, Spec: &appmesh.GatewayRouteSpec{}}
		if err := spec(d.Spec); err != nil {
			return err
		}
		v.GatewayRoutes[in.VirtualGatewayName] = putChild(v.GatewayRoutes[in.VirtualGatewayName], d, del, func(o *appmesh.GatewayRouteData) bool { return *o.GatewayRouteName == in.GatewayRouteName })
		return nil
	}
	return fmt.Errorf("unknown operation %q", op)
}

func put[T any](m map[string]*T, name string, d *T, del bool, decode func() error) error {
	if del {
		delete(m, name)
		return nil
	}
	m[name] = d
	return decode()
}

// putChild replaces, adds or deletes a route in its parent's list, keeping
// creation order as the store's listing would not guarantee any.
func putChild[T any](list []*T, d *T, del bool, same func(*T) bool) []*T {
	for i, o := range list {
		if same(o) {
			if del {
				return append(list[:i:i], list[i+1:]...)
			}
			list[i] = d
			return list
		}
	}
	if del {
		return list
	}
	return append(list, d)
}

// addEndpoints gives every Cloud Map node two synthetic instances with both
// address families: 10.0.<n>.11 and .12, fd00::<n>:11 and :12, where n
// counts nodes in name order.
func addEndpoints(v *View) {
	for i, name := range sortedKeys(v.VirtualNodes) {
		vn := v.VirtualNodes[name]
		if vn.Spec == nil || vn.Spec.ServiceDiscovery == nil || vn.Spec.ServiceDiscovery.AwsCloudMap == nil {
			continue
		}
		for _, host := range []int{11, 12} {
			v.Endpoints[name] = append(v.Endpoints[name], Endpoint{
				IPv4: fmt.Sprintf("10.0.%d.%d", i+1, host),
				IPv6: fmt.Sprintf("fd00::%d:%d", i+1, host),
			})
		}
	}
}

func readJSON(t *testing.T, path string, dst any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
