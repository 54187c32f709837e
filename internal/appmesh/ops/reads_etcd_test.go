package ops

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// On etcd a create reads everything it checks in one request before its
// commit: one read Txn and the commit Txn, no Range, whatever the kind
// (parent, references, quota, client token); an update two at most; and
// they still decide as before: a name taken is a ConflictException, a
// token used again replays the first answer.
func TestWriteReadsOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: "/ops"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{time.Unix(1800000000, 0)}
	svc := New(st, Config{Region: "us-east-1", Now: clk.now}, nil)
	caller := Caller{Account: "111122223333"}
	member := c.Members[0].ClientURL
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	creates := []struct {
		what string
		fn   func() error
	}{
		{"mesh", func() error {
			_, err := checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m"), ClientToken: s("t-mesh")})
			return err
		}},
		{"virtual node", func() error {
			_, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
				Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("t-vn"),
				Tags: []appmesh.TagRef{{Key: s("k"), Value: s("v")}}})
			return err
		}},
		{"virtual router", func() error {
			_, err := checked(ctx, svc.CreateVirtualRouter, caller, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
				Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}})
			return err
		}},
		{"route", func() error {
			_, err := checked(ctx, svc.CreateRoute, caller, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
				Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
					Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(1)}}}}},
				ClientToken: s("t-route")})
			return err
		}},
		{"virtual service", func() error {
			_, err := checked(ctx, svc.CreateVirtualService, caller, &appmesh.CreateVirtualServiceInput{MeshName: s("m"), VirtualServiceName: s("s.local"),
				Spec: &appmesh.VirtualServiceSpec{Provider: &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: s("vr")}}}})
			return err
		}},
	}
	for i, cr := range creates {
		if i == 1 {
			// More live client tokens than a write lists expiries of: its
			// own expiry entry sorts after them all.
			for j := range 50 {
				if _, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"),
					VirtualNodeName: s(fmt.Sprintf("pad%d", j)), Spec: &appmesh.VirtualNodeSpec{Listeners: listener},
					ClientToken: s(fmt.Sprintf("t-pad%d", j))}); err != nil {
					t.Fatal(err)
				}
				clk.t = clk.t.Add(time.Second)
			}
		}
		ranges, txns := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
		if err := cr.fn(); err != nil {
			t.Fatalf("create %s: %v", cr.what, err)
		}
		if r, x := etcdtest.Handled(t, member, "Range")-ranges, etcdtest.Handled(t, member, "Txn")-txns; r != 0 || x != 2 {
			t.Errorf("create %s: %.0f Range and %.0f Txn requests, want 0 and 2 (one read, one commit)", cr.what, r, x)
		}
		clk.t = clk.t.Add(time.Second)
	}

	// An update reads the token, the resource, the expiries and what its
	// new spec names at once, then what its old spec named and that did
	// not cover: one read and the commit when the references stay (a
	// route's weights).
	for _, name := range []string{"vn3", "vn4"} {
		if _, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s(name),
			Spec: &appmesh.VirtualNodeSpec{Listeners: listener}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, up := range []struct {
		what         string
		ranges, txns float64
		fn           func() error
	}{
		{"virtual node", 0, 2, func() error {
			_, err := checked(ctx, svc.UpdateVirtualNode, caller, &appmesh.UpdateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
				Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("u-vn")})
			return err
		}},
		{"route's weights", 0, 2, func() error {
			_, err := checked(ctx, svc.UpdateRoute, caller, &appmesh.UpdateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
				Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
					Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(2)}}}}},
				ClientToken: s("u-route")})
			return err
		}},
		// The routes it must keep fitting (appmesh.CheckRouterKeepsRoutes)
		// are read with the rest.
		{"virtual router", 0, 2, func() error {
			_, err := checked(ctx, svc.UpdateVirtualRouter, caller, &appmesh.UpdateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
				Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}, ClientToken: s("u-vr")})
			return err
		}},
		// The old target's index key, alone, is read by itself.
		{"route's targets", 1, 2, func() error {
			_, err := checked(ctx, svc.UpdateRoute, caller, &appmesh.UpdateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
				Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
					Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn3"), Weight: p(1)}, {VirtualNode: s("vn4"), Weight: p(1)}}}}},
				ClientToken: s("u-route2")})
			return err
		}},
	} {
		ranges, txns := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
		if err := up.fn(); err != nil {
			t.Fatalf("update %s: %v", up.what, err)
		}
		if r, x := etcdtest.Handled(t, member, "Range")-ranges, etcdtest.Handled(t, member, "Txn")-txns; r != up.ranges || x != up.txns {
			t.Errorf("update %s: %.0f Range and %.0f Txn requests, want %.0f and %.0f", up.what, r, x, up.ranges, up.txns)
		}
	}

	// The same token and request: the first answer again.
	first, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn2"),
		Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("t-vn2")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn2"),
		Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("t-vn2")})
	if err != nil || *again.VirtualNode.Metadata.Uid != *first.VirtualNode.Metadata.Uid {
		t.Errorf("create made again with its client token: %v, want the first answer", err)
	}
	// A name taken, without a token: ConflictException.
	_, err = checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
		Spec: &appmesh.VirtualNodeSpec{Listeners: listener}})
	var ae *appmesh.Error
	if !errors.As(err, &ae) || ae.Code != appmesh.CodeConflict {
		t.Errorf("create of a node that exists: %v, want ConflictException", err)
	}
}

// Creates whose reads were all made up front, through three replicas
// at once, still decide on what etcd holds when they commit: of 15
// creates of 12 names under a quota of 5 nodes, exactly 5 names are
// created, none twice, and the other creates answer LimitExceededException
// or (a name asked for twice) ConflictException. The same when each
// replica reads from its mirror (it watches every key, as weft server
// does): the reads are then of a snapshot no request confirmed.
func TestConcurrentCreatesOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	for _, mirrored := range []bool{false, true} {
		t.Run(fmt.Sprintf("mirrored=%v", mirrored), func(t *testing.T) { concurrentCreates(t, c, mirrored) })
	}
}

func concurrentCreates(t *testing.T, c *etcdtest.Cluster, mirrored bool) {
	ctx := context.Background()
	limits := appmesh.DefaultLimits()
	limits.VirtualNodesPerMesh = 5
	clk := &clock{time.Unix(1800000000, 0)}
	caller := Caller{Account: "111122223333"}
	var svcs []*Service
	for range 3 {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("/race%v", mirrored)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if mirrored {
			etcdtest.FollowAll(t, st)
		}
		svcs = append(svcs, New(st, Config{Region: "us-east-1", Now: clk.now, Limits: &limits}, nil))
	}
	if _, err := checked(ctx, svcs[0].CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m")}); err != nil {
		t.Fatal(err)
	}
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "a", "b", "c"}
	errs := make([]error, len(names))
	start := make(chan struct{})
	done := make(chan struct{})
	for i, name := range names {
		go func() { // ends when the create has an answer
			defer func() { done <- struct{}{} }()
			<-start
			_, errs[i] = checked(ctx, svcs[i%3].CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"),
				VirtualNodeName: s(name), Spec: &appmesh.VirtualNodeSpec{Listeners: listener}})
		}()
	}
	close(start)
	for range names {
		<-done
	}
	created := map[string]int{}
	for i, err := range errs {
		var ae *appmesh.Error
		switch {
		case err == nil:
			created[names[i]]++
		case errors.As(err, &ae) && (ae.Code == appmesh.CodeLimitExceeded || ae.Code == appmesh.CodeConflict):
		default:
			t.Errorf("create %s: %v, want success, LimitExceededException or ConflictException", names[i], err)
		}
	}
	for name, n := range created {
		if n != 1 {
			t.Errorf("%s created %d times", name, n)
		}
	}
	out, err := svcs[1].ListVirtualNodes(ctx, caller, &appmesh.ListVirtualNodesInput{MeshName: s("m")})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 5 || len(out.VirtualNodes) != 5 {
		t.Errorf("%d names created, %d listed; want 5 and 5 (the quota)", len(created), len(out.VirtualNodes))
	}
}

// On a replica that keeps a mirror of the store (one that watches every
// key, as weft server does), a write reads what it checks from the
// mirror: the tutorial's writes are one etcd request each, the commit.
func TestWritesFromMirrorOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: "/mirror"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	caughtUp := etcdtest.FollowAll(t, st)
	clk := &clock{time.Unix(1800000000, 0)}
	svc := New(st, Config{Region: "us-east-1", Now: clk.now}, nil)
	caller := Caller{Account: "111122223333"}
	member := c.Members[0].ClientURL
	listener := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	route := func(weight int64, token string) func() error {
		return func() error {
			_, err := checked(ctx, svc.UpdateRoute, caller, &appmesh.UpdateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
				Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
					Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(weight)}}}}},
				ClientToken: s(token)})
			return err
		}
	}
	for _, w := range []struct {
		what string
		// watchTxn: the watch may read the values a delete removed in
		// one more Txn (when its event arrives before the commit's
		// answer), which is not the write's.
		watchTxn bool
		fn       func() error
	}{
		{"create mesh", false, func() error {
			_, err := checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m"), ClientToken: s("t-mesh")})
			return err
		}},
		{"create virtual node", false, func() error {
			_, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
				Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("t-vn"),
				Tags: []appmesh.TagRef{{Key: s("k"), Value: s("v")}}})
			return err
		}},
		{"create virtual router", false, func() error {
			_, err := checked(ctx, svc.CreateVirtualRouter, caller, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
				Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{{PortMapping: listener[0].PortMapping}}}})
			return err
		}},
		{"create route", false, func() error {
			_, err := checked(ctx, svc.CreateRoute, caller, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"),
				Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
					Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(1)}}}}},
				ClientToken: s("t-route")})
			return err
		}},
		{"update route's weights", false, route(2, "u-route")},
		{"update route's weights again", false, route(3, "u-route2")},
		{"update virtual node", false, func() error {
			_, err := checked(ctx, svc.UpdateVirtualNode, caller, &appmesh.UpdateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
				Spec: &appmesh.VirtualNodeSpec{Listeners: listener}, ClientToken: s("u-vn")})
			return err
		}},
		{"delete virtual router's route", true, func() error {
			_, err := svc.DeleteRoute(ctx, caller, &appmesh.DeleteRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r")})
			return err
		}},
	} {
		caughtUp()
		ranges, txns := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
		if err := w.fn(); err != nil {
			t.Fatalf("%s: %v", w.what, err)
		}
		if r, x := etcdtest.Handled(t, member, "Range")-ranges, etcdtest.Handled(t, member, "Txn")-txns; r != 0 || x != 1 && !(w.watchTxn && x == 2) {
			t.Errorf("%s: %.0f Range and %.0f Txn requests, want 0 and 1 (the commit)", w.what, r, x)
		}
		clk.t = clk.t.Add(time.Second)
	}
	// The same weight again with the first token: the first answer,
	// from the mirror too, with no commit (nothing to write) and so a
	// second run on etcd's state: two reads, no commit.
	caughtUp()
	ranges, txns := etcdtest.Handled(t, member, "Range"), etcdtest.Handled(t, member, "Txn")
	if err := route(2, "u-route")(); err != nil {
		var ae *appmesh.Error
		if !errors.As(err, &ae) {
			t.Fatalf("update replayed with its token: %v", err)
		}
	}
	t.Logf("a replayed update (nothing written): %.0f Range and %.0f Txn requests",
		etcdtest.Handled(t, member, "Range")-ranges, etcdtest.Handled(t, member, "Txn")-txns)
}
