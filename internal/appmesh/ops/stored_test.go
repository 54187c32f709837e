package ops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestCheckRecord: every key the operations write passes the check a
// restore makes; the same keys spelt otherwise, and values they never
// write there, are refused.
func TestCheckRecord(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	c := Caller{Account: "111122223333"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	tags := []appmesh.TagRef{{Key: s("k"), Value: s("v")}}
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	must(checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("m"), Tags: tags, ClientToken: s("t 1/2")}))
	must(checked(ctx, svc.CreateVirtualNode, c, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"), Tags: tags,
		Spec: &appmesh.VirtualNodeSpec{Listeners: listener}}))
	must(checked(ctx, svc.CreateVirtualRouter, c, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}}))
	must(checked(ctx, svc.CreateRoute, c, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"), ClientToken: s("t2"),
		Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
			Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(1)}}}}}}))
	must(checked(ctx, svc.CreateVirtualService, c, &appmesh.CreateVirtualServiceInput{MeshName: s("m"), VirtualServiceName: s("s.local"),
		Spec: &appmesh.VirtualServiceSpec{Provider: &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: s("vr")}}}}))
	written := keys(t, st)
	var refKey, tagKey, tokKey, expKey string
	for key, val := range written {
		if err := CheckRecord(key, val); err != nil {
			t.Errorf("%s, as the operations wrote it: %v", key, err)
		}
		switch {
		case strings.HasPrefix(key, refsPrefix+"111122223333/m/virtualNode/"):
			refKey = key
		case strings.HasPrefix(key, tagsPrefix):
			tagKey = key
		case strings.HasPrefix(key, tokenPrefix):
			tokKey = key
		case strings.HasPrefix(key, tokenExpPrefix):
			expKey = key
		}
	}
	if refKey == "" || tagKey == "" || tokKey == "" || expKey == "" {
		t.Fatalf("a bookkeeping key is missing: refs %q tags %q token %q expiry %q", refKey, tagKey, tokKey, expKey)
	}

	for _, tc := range []struct{ key, value, want string }{
		{"appmesh/mesh/111122223333/%6D", string(written["appmesh/mesh/111122223333/m"]), "not the key of mesh m"},
		{"appmesh/other/x", "", "not a key weft's App Mesh writes"},
		{refKey, "x", "an index key holds none"},
		{refsPrefix + "111122223333/m/virtualNode/vn", "", "not an in-use index key"},
		{refsPrefix + "111122223333/m/route/vn/route/vr/r", "", "not an in-use index key"},
		{refsPrefix + "111122223333/m/virtualNode/vn/mesh/m", "", "not an in-use index key"},
		{tagKey, "[]", "no tags"},
		{tagKey, `[{"key":"k"}]`, "Member must not be null"},
		{tagsPrefix + "other/x", `[{"key":"k","value":"v"}]`, "not the tags key of a resource"},
		{tokKey, `{"hash":"h","expires":1}`, "result missing"},
		{tokKey, `{"hash":"h","expires":1,"result":{},"more":1}`, `unknown field "more"`},
		{tokenPrefix + "111122223333", `{}`, "not a client token key"},
		{tokenExpPrefix + "123/111122223333/t2", "", "not a client token expiry key"},
		{expKey, "x", "an index key holds none"},
	} {
		err := CheckRecord(tc.key, []byte(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %q: %v; want an error saying %q", tc.key, tc.value, err, tc.want)
		}
	}
}
