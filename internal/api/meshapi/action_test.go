package meshapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

func TestAction(t *testing.T) {
	h := newHandler(t)
	const acct = "444455556666"
	arn := "arn:aws:appmesh:us-east-1:"
	for _, c := range []struct {
		method, target, body string
		action, resource     string
	}{
		{"PUT", "/v20190125/meshes", `{"meshName":"m"}`, "appmesh:CreateMesh", arn + acct + ":mesh/m"},
		{"GET", "/v20190125/meshes", ``, "appmesh:ListMeshes", "*"},
		{"PUT", "/v20190125/meshes/m/virtualNodes", `{"virtualNodeName":"n","spec":{}}`, "appmesh:CreateVirtualNode", arn + acct + ":mesh/m/virtualNode/n"},
		{"GET", "/v20190125/meshes/m/virtualNodes?meshOwner=111122223333", ``, "appmesh:ListVirtualNodes", arn + "111122223333:mesh/m"},
		{"PUT", "/v20190125/meshes/m/virtualRouter/r/routes", `{"routeName":"x","spec":{}}`, "appmesh:CreateRoute", arn + acct + ":mesh/m/virtualRouter/r/route/x"},
		{"GET", "/v20190125/meshes/m/virtualRouter/r/routes", ``, "appmesh:ListRoutes", arn + acct + ":mesh/m/virtualRouter/r"},
		{"GET", "/v20190125/meshes/m/virtualRouters", ``, "appmesh:ListVirtualRouters", arn + acct + ":mesh/m"},
		{"DELETE", "/v20190125/meshes/m/virtualGateway/g/gatewayRoutes/x", ``, "appmesh:DeleteGatewayRoute", arn + acct + ":mesh/m/virtualGateway/g/gatewayRoute/x"},
		{"GET", "/v20190125/meshes/m/virtualGateway/g/gatewayRoutes", ``, "appmesh:ListGatewayRoutes", arn + acct + ":mesh/m/virtualGateway/g"},
		{"GET", "/v20190125/meshes/m/virtualServices/s.local", ``, "appmesh:DescribeVirtualService", arn + acct + ":mesh/m/virtualService/s.local"},
		{"PUT", "/v20190125/tag?resourceArn=" + arn + "1:mesh/x", `{"tags":[]}`, "appmesh:TagResource", arn + "1:mesh/x"},
		// What the operation ignores is not what is authorized: the name
		// in the path wins over the body's, the body's over the query's,
		// a name in another case is not the name.
		{"PUT", "/v20190125/meshes/m/virtualNodes/n", `{"meshName":"other","spec":{}}`, "appmesh:UpdateVirtualNode", arn + acct + ":mesh/m/virtualNode/n"},
		{"PUT", "/v20190125/meshes?meshName=other", `{"meshName":"m"}`, "appmesh:CreateMesh", arn + acct + ":mesh/m"},
		{"PUT", "/v20190125/meshes", `{"MESHNAME":"other","meshName":"m"}`, "appmesh:CreateMesh", arn + acct + ":mesh/m"},
		{"GET", "/v20190125/meshes/m/virtualNodes", `{"meshOwner":"111122223333"}`, "appmesh:ListVirtualNodes", arn + acct + ":mesh/m"},
	} {
		r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
		action, resource, ok := h.Action(r, []byte(c.body), acct)
		if !ok || action != c.action || resource != c.resource {
			t.Errorf("%s %s %s: %s on %s (%t), want %s on %s", c.method, c.target, c.body, action, resource, ok, c.action, c.resource)
		}
	}
	if _, _, ok := h.Action(httptest.NewRequest("GET", "/v20190125/nowhere", nil), nil, acct); ok {
		t.Error("an unknown path named an operation")
	}
}

// TestEveryOperationHasAnAction: every operation of the model is named,
// and all but ListMeshes and the tag operations act on an App Mesh ARN.
func TestEveryOperationHasAnAction(t *testing.T) {
	h := newHandler(t)
	for name, op := range appmesh.Model().Operations {
		path := op.URI
		for strings.Contains(path, "{") {
			i, j := strings.IndexByte(path, '{'), strings.IndexByte(path, '}')
			path = path[:i] + "x" + path[j+1:]
		}
		body := `{"virtualNodeName":"x","virtualServiceName":"x","virtualRouterName":"x","routeName":"x","virtualGatewayName":"x","gatewayRouteName":"x","meshName":"x"}`
		action, resource, ok := h.Action(httptest.NewRequest(op.Method, path, strings.NewReader(body)), []byte(body), "111122223333")
		if !ok || action != "appmesh:"+name {
			t.Errorf("%s: %s %v", name, action, ok)
			continue
		}
		switch name {
		case "ListMeshes", "TagResource", "UntagResource", "ListTagsForResource":
			continue
		}
		if !strings.HasPrefix(resource, "arn:aws:appmesh:us-east-1:111122223333:mesh/x") || strings.Contains(resource, "//") || strings.HasSuffix(resource, "/") {
			t.Errorf("%s: resource %q", name, resource)
		}
	}
}
