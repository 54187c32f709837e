package ops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// TestCheckRecord: every key the operations write passes the check a
// restore makes, and so do values they never write but read all the
// same; the same keys spelt otherwise, and values the operations cannot
// read, are refused.
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

	mesh := "appmesh/mesh/111122223333/m"
	for _, tc := range []struct{ key, value string }{
		{refKey, "x"},
		{expKey, "x"},
		{tagKey, "[]"},
		{tagKey, `[{"key":"k"}]`},
		{tagKey, `[{"value":"v","colour":"blue"}]`},
		{tokKey, `{"hash":"h","expires":1}`},
		{tokKey, `{"hash":"h","expires":1,"result":{},"more":1}`},
		{mesh, `{"meshName":"m","metadata":{"meshOwner":"111122223333"},"spec":{"egressFilter":{"type":"SOMETIMES"}},"more":1}`},
	} {
		if err := CheckRecord(tc.key, []byte(tc.value)); err != nil {
			t.Errorf("%s = %s, which the operations read: %v", tc.key, tc.value, err)
		}
	}
	for _, tc := range []struct{ key, value, want string }{
		{"appmesh/mesh/111122223333/%6D", string(written[mesh]), "not the key of mesh m"},
		{"appmesh/other/x", "", "not a key weft's App Mesh writes"},
		{refsPrefix + "111122223333/m/virtualNode/vn", "", "not an in-use index key"},
		{refsPrefix + "111122223333/m/route/vn/route/vr/r", "", "not an in-use index key"},
		{refsPrefix + "111122223333/m/virtualNode/vn/mesh/m", "", "not an in-use index key"},
		{tagKey, `[{"key":1}]`, "cannot unmarshal number"},
		{tagKey, `{}`, "not a tag list"},
		{tagsPrefix + "other/x", `[{"key":"k","value":"v"}]`, "not the tags key of a resource"},
		{tokKey, `{"hash":"h","expires":"soon"}`, "cannot unmarshal string"},
		{tokKey, `{"hash":"h"} x`, "not a client token record"},
		{tokenPrefix + "111122223333", `{}`, "not a client token key"},
		{tokenExpPrefix + "123/111122223333/t2", "", "not a client token expiry key"},
		{mesh, `{"meshName":"m","spec":{}}`, "no metadata"},
		{mesh, `{"meshName":"m","metadata":{"meshOwner":"444455556666"}}`, `metadata.meshOwner is "444455556666"`},
		{mesh, `{"meshName":"n","metadata":{"meshOwner":"111122223333"}}`, `meshName is "n"`},
		{mesh, `{"meshName":"m","metadata":{"meshOwner":"111122223333"},"spec":[]}`, "not a valid mesh"},
	} {
		err := CheckRecord(tc.key, []byte(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %q: %v; want an error saying %q", tc.key, tc.value, err, tc.want)
		}
	}
}

// TestOperationsReadWhatRestoreTakes: records CheckRecord takes although
// the operations never write them (no version, no spec, a tag without a
// key) are read by the operations that change them, which panicked on
// each.
func TestOperationsReadWhatRestoreTakes(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	c := Caller{Account: "111122223333"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("m")}))
	must(checked(ctx, svc.CreateVirtualRouter, c, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}}}))
	must(checked(ctx, svc.CreateVirtualGateway, c, &appmesh.CreateVirtualGatewayInput{MeshName: s("m"), VirtualGatewayName: s("gw"),
		Spec: &appmesh.VirtualGatewaySpec{Listeners: []appmesh.VirtualGatewayListener{{PortMapping: &appmesh.VirtualGatewayPortMapping{Port: p(80), Protocol: appmesh.VirtualGatewayPortProtocolHttp}}}}}))
	mesh := appmesh.Ref{Owner: c.Account, Mesh: "m", Kind: appmesh.KindMesh, Name: "m"}
	route := appmesh.Ref{Owner: c.Account, Mesh: "m", Kind: appmesh.KindRoute, Parent: "vr", Name: "r"}
	gwRoute := appmesh.Ref{Owner: c.Account, Mesh: "m", Kind: appmesh.KindGatewayRoute, Parent: "gw", Name: "g"}
	md := `"metadata":{"meshOwner":"111122223333"}`
	records := map[string]string{
		mesh.Key():    `{"meshName":"m",` + md + `,"spec":{}}`,
		route.Key():   `{"meshName":"m","virtualRouterName":"vr","routeName":"r",` + md + `}`,
		gwRoute.Key(): `{"meshName":"m","virtualGatewayName":"gw","gatewayRouteName":"g",` + md + `}`,
		tagsKey(mesh): `[{"value":"no key"}]`,
	}
	_, err := st.Update(ctx, func(tx store.Tx) error {
		for k, v := range records {
			if err := CheckRecord(k, []byte(v)); err != nil {
				t.Errorf("%s = %s: %v", k, v, err)
			}
			if err := tx.Put(k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	up, err := checked(ctx, svc.UpdateMesh, c, &appmesh.UpdateMeshInput{MeshName: s("m"), Spec: &appmesh.MeshSpec{}})
	if err != nil || up.Mesh.Metadata.Version == nil || *up.Mesh.Metadata.Version != 1 {
		t.Errorf("update of a mesh stored without a version: %+v, %v", up, err)
	}
	if _, err := checked(ctx, svc.TagResource, c, &appmesh.TagResourceInput{ResourceArn: s(appmesh.ARN("us-east-1", mesh)),
		Tags: []appmesh.TagRef{{Key: s("k"), Value: s("v")}}}); err != nil {
		t.Errorf("tag a mesh whose stored tag has no key: %v", err)
	}
	if _, err := svc.DeleteRoute(ctx, c, &appmesh.DeleteRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r")}); err != nil {
		t.Errorf("delete a route stored without a spec: %v", err)
	}
	if _, err := svc.DeleteGatewayRoute(ctx, c, &appmesh.DeleteGatewayRouteInput{MeshName: s("m"), VirtualGatewayName: s("gw"), GatewayRouteName: s("g")}); err != nil {
		t.Errorf("delete a gateway route stored without a spec: %v", err)
	}
}
