package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newService(t *testing.T, clk *clock) (*Service, store.Store) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st, Config{Region: "us-east-1", Now: clk.now}, nil), st
}

// checked runs a write operation as a Go caller must: the input is validated
// first (appmesh.Check), since the operation takes it only as a Valid.
func checked[In, Out any](ctx context.Context, op func(context.Context, Caller, appmesh.Valid[In]) (*Out, error), c Caller, in *In) (*Out, error) {
	v, err := appmesh.Check(in)
	if err != nil {
		return nil, err
	}
	return op(ctx, c, v)
}

func s(v string) *string { return &v }

func p(v int64) *int64 { return &v }

func keys(t *testing.T, st store.Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	_, err := st.View(context.Background(), func(tx store.Tx) error {
		kvs, err := tx.List(appmesh.KeyPrefix, "", 0)
		for _, kv := range kvs {
			out[kv.Key] = kv.Value
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStoreLayout checks the contract with the store's readers: each
// resource key holds exactly the Data that Describe returns, bookkeeping
// keys are not taken for resources, and deletes leave nothing behind but
// remembered client tokens.
func TestStoreLayout(t *testing.T) {
	ctx := context.Background()
	clk := &clock{time.Unix(1800000000, 0)}
	svc, st := newService(t, clk)
	c := Caller{Account: "111122223333"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	tags := []appmesh.TagRef{{Key: s("k"), Value: s("v")}}
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	must(checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("m"), Tags: tags, ClientToken: s("t1")}))
	must(checked(ctx, svc.CreateVirtualNode, c, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"), Tags: tags,
		Spec: &appmesh.VirtualNodeSpec{Listeners: listener}}))
	must(checked(ctx, svc.CreateVirtualRouter, c, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}}))
	must(checked(ctx, svc.CreateRoute, c, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
		Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
			Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(1)}}}}}}))
	must(checked(ctx, svc.CreateVirtualService, c, &appmesh.CreateVirtualServiceInput{MeshName: s("m"), VirtualServiceName: s("s.local"),
		Spec: &appmesh.VirtualServiceSpec{Provider: &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: s("vr")}}}}))

	resources := 0
	for key, val := range keys(t, st) {
		ref, ok := appmesh.ParseKey(key)
		if !ok {
			for _, prefix := range []string{tagsPrefix, refsPrefix, tokenPrefix, tokenExpPrefix} {
				ok = ok || strings.HasPrefix(key, prefix)
			}
			if !ok {
				t.Errorf("key %s is neither a resource nor bookkeeping", key)
			}
			continue
		}
		resources++
		var out any
		var err error
		switch ref.Kind {
		case appmesh.KindMesh:
			var o *appmesh.DescribeMeshOutput
			o, err = svc.DescribeMesh(ctx, c, &appmesh.DescribeMeshInput{MeshName: &ref.Mesh})
			out = o.Mesh
		case appmesh.KindVirtualNode:
			var o *appmesh.DescribeVirtualNodeOutput
			o, err = svc.DescribeVirtualNode(ctx, c, &appmesh.DescribeVirtualNodeInput{MeshName: &ref.Mesh, VirtualNodeName: &ref.Name})
			out = o.VirtualNode
		case appmesh.KindVirtualRouter:
			var o *appmesh.DescribeVirtualRouterOutput
			o, err = svc.DescribeVirtualRouter(ctx, c, &appmesh.DescribeVirtualRouterInput{MeshName: &ref.Mesh, VirtualRouterName: &ref.Name})
			out = o.VirtualRouter
		case appmesh.KindRoute:
			var o *appmesh.DescribeRouteOutput
			o, err = svc.DescribeRoute(ctx, c, &appmesh.DescribeRouteInput{MeshName: &ref.Mesh, VirtualRouterName: &ref.Parent, RouteName: &ref.Name})
			out = o.Route
		case appmesh.KindVirtualService:
			var o *appmesh.DescribeVirtualServiceOutput
			o, err = svc.DescribeVirtualService(ctx, c, &appmesh.DescribeVirtualServiceInput{MeshName: &ref.Mesh, VirtualServiceName: &ref.Name})
			out = o.VirtualService
		}
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(out)
		if !bytes.Equal(val, want) {
			t.Errorf("%s holds\n%s\ndescribe returns\n%s", key, val, want)
		}
	}
	if resources != 5 {
		t.Errorf("%d resource keys, want 5", resources)
	}

	must(svc.DeleteVirtualService(ctx, c, &appmesh.DeleteVirtualServiceInput{MeshName: s("m"), VirtualServiceName: s("s.local")}))
	must(svc.DeleteRoute(ctx, c, &appmesh.DeleteRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r")}))
	must(svc.DeleteVirtualRouter(ctx, c, &appmesh.DeleteVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr")}))
	must(svc.DeleteVirtualNode(ctx, c, &appmesh.DeleteVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn")}))
	must(svc.DeleteMesh(ctx, c, &appmesh.DeleteMeshInput{MeshName: s("m")}))
	for key := range keys(t, st) {
		if !strings.HasPrefix(key, tokenPrefix) && !strings.HasPrefix(key, tokenExpPrefix) {
			t.Errorf("left behind: %s", key)
		}
	}
}

// TestClientTokenExpiry checks that a token is remembered for the TTL
// (replayed, or a conflict with another request), then forgotten, and that
// later writes remove its records.
func TestClientTokenExpiry(t *testing.T) {
	ctx := context.Background()
	clk := &clock{time.Unix(1800000000, 0)}
	svc, st := newService(t, clk)
	c := Caller{Account: "111122223333"}
	first, err := checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("a"), ClientToken: s("tok")})
	if err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(23 * time.Hour)
	again, err := checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("a"), ClientToken: s("tok")})
	if err != nil || *again.Mesh.Metadata.Uid != *first.Mesh.Metadata.Uid {
		t.Fatalf("replay within the TTL: %v", err)
	}
	_, err = checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("b"), ClientToken: s("tok")})
	if e, ok := appmesh.AsError(err); !ok || e.Code != appmesh.CodeConflict {
		t.Fatalf("another request with the token: %v", err)
	}
	// Another account's token of the same value is another token.
	if _, err := checked(ctx, svc.CreateMesh, Caller{Account: "444455556666"}, &appmesh.CreateMeshInput{MeshName: s("b"), ClientToken: s("tok")}); err != nil {
		t.Fatal(err)
	}

	clk.t = clk.t.Add(2 * time.Hour) // 25 h after the first use
	if _, err := checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("b"), ClientToken: s("tok")}); err != nil {
		t.Fatalf("expired token still held: %v", err)
	}
	clk.t = clk.t.Add(25 * time.Hour)
	for i := range 3 {
		if _, err := checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s(string(rune('c' + i))), ClientToken: s(string(rune('x' + i)))}); err != nil {
			t.Fatal(err)
		}
	}
	tokens := 0
	for key := range keys(t, st) {
		if strings.HasPrefix(key, tokenPrefix) {
			tokens++
		}
	}
	if tokens != 3 {
		t.Errorf("%d token records, want the 3 unexpired ones", tokens)
	}
}
