package ops

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// hookStore runs after its transactions' up-front batch read, in each run
// of a write, a hook given the run's number: a window between a write's
// reads and its commit, where another replica's write can land.
type hookStore struct {
	store.Store
	hook func(run int)
}

func (h *hookStore) Update(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	run := 0
	return h.Store.Update(ctx, func(tx store.Tx) error {
		run++
		return fn(&hookTx{Tx: tx, run: run, hook: h.hook})
	})
}

// hookTx is a transaction that can batch its reads when the store's can.
type hookTx struct {
	store.Tx
	run  int
	hook func(run int)
}

func (t *hookTx) PrefetchReads(keys, counts []string, lists map[string]int) error {
	b, ok := t.Tx.(batchReader)
	if !ok {
		return errors.New("the store's transaction cannot batch reads")
	}
	if err := b.PrefetchReads(keys, counts, lists); err != nil {
		return err
	}
	t.hook(t.run)
	return nil
}

func (t *hookTx) Prefetch(keys ...string) error { return t.Tx.(prefetcher).Prefetch(keys...) }

func openEtcd(t *testing.T, c *etcdtest.Cluster, prefix string) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := etcd.Open(ctx, etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A delete on etcd reads what it checks in one request before its commit
// (the resource, its tags, its referrers, its children), and the index
// keys of what it refers to in one more when there are several; what it
// read still decides at the commit: a route created through another
// replica after the delete of its target node read its referrers makes
// the commit fail, and the delete, run again, answers
// ResourceInUseException; a tag written meanwhile is deleted with the
// node.
func TestDeleteReadsOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	clk := &clock{time.Unix(1800000000, 0)}
	caller := Caller{Account: "111122223333"}
	var hook func(run int)
	hooked := &hookStore{Store: openEtcd(t, c, "/del"), hook: func(run int) {
		if hook != nil {
			hook(run)
		}
	}}
	svc := New(hooked, Config{Region: "us-east-1", Now: clk.now}, nil)
	other := New(openEtcd(t, c, "/del"), Config{Region: "us-east-1", Now: clk.now}, nil)
	member := c.Members[0].ClientURL
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m")}))
	for _, n := range []string{"a", "b", "c"} {
		must(checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s(n),
			Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, Tags: []appmesh.TagRef{{Key: s("k"), Value: s("v")}}}))
	}
	must(checked(ctx, svc.CreateVirtualRouter, caller, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}}))
	route := func(name string, targets ...string) *appmesh.CreateRouteInput {
		var wt []appmesh.WeightedTarget
		for _, n := range targets {
			wt = append(wt, appmesh.WeightedTarget{VirtualNode: s(n), Weight: p(1)})
		}
		return &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s(name),
			Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/" + name)},
				Action: &appmesh.HttpRouteAction{WeightedTargets: wt}}}}
	}
	must(checked(ctx, svc.CreateRoute, caller, route("one", "a")))
	must(checked(ctx, svc.CreateRoute, caller, route("two", "a", "b")))

	requests := func(what string, ranges, txns float64, fn func() error) {
		t.Helper()
		r0, x0 := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if r, x := etcdtest.Handled(t, member, "Range")-r0, etcdtest.Handled(t, member, "Txn")-x0; r != ranges || x != txns {
			t.Errorf("%s: %.0f Range and %.0f Txn requests, want %.0f and %.0f", what, r, x, ranges, txns)
		}
	}
	requests("delete of a route with one target", 1, 2, func() error {
		_, err := svc.DeleteRoute(ctx, caller, &appmesh.DeleteRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("one")})
		return err
	})
	requests("delete of a route with two targets", 0, 3, func() error {
		_, err := svc.DeleteRoute(ctx, caller, &appmesh.DeleteRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("two")})
		return err
	})
	requests("delete of a node nothing refers to", 0, 2, func() error {
		_, err := svc.DeleteVirtualNode(ctx, caller, &appmesh.DeleteVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("c")})
		return err
	})

	// A route to node a lands through the other replica between the
	// delete's reads and its commit.
	runs := 0
	hook = func(run int) {
		runs = run
		if run == 1 {
			must(checked(ctx, other.CreateRoute, caller, route("late", "a")))
		}
	}
	_, err := svc.DeleteVirtualNode(ctx, caller, &appmesh.DeleteVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("a")})
	var ae *appmesh.Error
	if !errors.As(err, &ae) || ae.Code != appmesh.CodeResourceInUse {
		t.Fatalf("delete of a node a route was created to meanwhile: %v, want ResourceInUseException", err)
	}
	if runs < 2 {
		t.Fatalf("the delete ran %d time(s): its commit did not fail", runs)
	}
	if _, err := svc.DescribeVirtualNode(ctx, caller, &appmesh.DescribeVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("a")}); err != nil {
		t.Fatalf("the node a route refers to is gone: %v", err)
	}

	// Node b's tags change through the other replica meanwhile: the delete
	// runs again and removes the new tags with the node.
	runs = 0
	arn := appmesh.ARN("us-east-1", appmesh.Ref{Owner: caller.Account, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "b"})
	hook = func(run int) {
		runs = run
		if run == 1 {
			must(checked(ctx, other.TagResource, caller, &appmesh.TagResourceInput{ResourceArn: s(arn), Tags: []appmesh.TagRef{{Key: s("late"), Value: s("1")}}}))
		}
	}
	if _, err := svc.DeleteVirtualNode(ctx, caller, &appmesh.DeleteVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("b")}); err != nil {
		t.Fatal(err)
	}
	if runs < 2 {
		t.Fatalf("the delete ran %d time(s): its commit did not fail", runs)
	}
	hook = nil
	for k := range keys(t, hooked) {
		if k == tagsKey(appmesh.Ref{Owner: caller.Account, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: "b"}) {
			t.Fatalf("node b deleted, its tags left: %s", k)
		}
	}
}
