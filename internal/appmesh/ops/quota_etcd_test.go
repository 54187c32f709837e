package ops

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/quota"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

const quotaOwner = "111122223333"

var quotaCaller = Caller{Account: quotaOwner}

// openReplicas opens n stores on one etcd prefix, as n weft replicas
// would.
func openReplicas(t *testing.T, c *etcdtest.Cluster, prefix string, n int) []*etcd.Store {
	t.Helper()
	var stores []*etcd.Store
	for range n {
		octx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	return stores
}

// create runs the create whose input in is, as quotaCaller.
func create(ctx context.Context, svc *Service, in any) error {
	var err error
	switch in := in.(type) {
	case *appmesh.CreateMeshInput:
		_, err = checked(ctx, svc.CreateMesh, quotaCaller, in)
	case *appmesh.CreateVirtualNodeInput:
		_, err = checked(ctx, svc.CreateVirtualNode, quotaCaller, in)
	case *appmesh.UpdateVirtualNodeInput:
		_, err = checked(ctx, svc.UpdateVirtualNode, quotaCaller, in)
	case *appmesh.CreateVirtualServiceInput:
		_, err = checked(ctx, svc.CreateVirtualService, quotaCaller, in)
	case *appmesh.CreateVirtualRouterInput:
		_, err = checked(ctx, svc.CreateVirtualRouter, quotaCaller, in)
	case *appmesh.CreateRouteInput:
		_, err = checked(ctx, svc.CreateRoute, quotaCaller, in)
	case *appmesh.CreateVirtualGatewayInput:
		_, err = checked(ctx, svc.CreateVirtualGateway, quotaCaller, in)
	case *appmesh.CreateGatewayRouteInput:
		_, err = checked(ctx, svc.CreateGatewayRoute, quotaCaller, in)
	default:
		err = fmt.Errorf("no operation takes a %T", in)
	}
	return err
}

// Inputs of the quota tests, as JSON: %s is the resource's name, %s
// after it the client token's member ("" for none).
const (
	meshIn    = `{"meshName":%q%s}`
	nodeIn    = `{"meshName":"m","virtualNodeName":%q,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]}%s}`
	routerIn  = `{"meshName":"m","virtualRouterName":%q,"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]}%s}`
	routeIn   = `{"meshName":"m","virtualRouterName":"vr","routeName":%q,"spec":{"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"target","weight":1}]}}}%s}`
	serviceIn = `{"meshName":"m","virtualServiceName":%q,"spec":{}%s}`
	gatewayIn = `{"meshName":"m","virtualGatewayName":%q,"spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}%s}`
	gwRouteIn = `{"meshName":"m","virtualGatewayName":"g","gatewayRouteName":%q,"spec":{"httpRoute":{"match":{"prefix":"/"},"action":{"target":{"virtualService":{"virtualServiceName":"s.local"}}}}}%s}`
)

// input decodes one create's input: the kind's JSON (above) with the
// resource's name and, when token is not "", a client token.
func input[In any](t *testing.T, format, name, token string) *In {
	t.Helper()
	tok := ""
	if token != "" {
		tok = fmt.Sprintf(`,"clientToken":%q`, token)
	}
	return decodeInput[In](t, fmt.Sprintf(format, name, tok))
}

// quotaCase is one quota, filled by creating resources of its kind in
// one scope.
type quotaCase struct {
	name   string
	limits appmesh.Limits // the quota tested; every other is 0, no limit
	max    int            // the quota's value in limits
	// setup returns the inputs of the creates that make the scope (its
	// mesh, its parent, what the resources refer to).
	setup func(t *testing.T) []any
	// create returns the input of a create of resource i.
	create func(t *testing.T, i int, token string) any
	prefix string // where the scope's resources are stored
}

func quotaCases() []quotaCase {
	defaults := appmesh.DefaultLimits()
	mesh := func(t *testing.T) []any { return []any{input[appmesh.CreateMeshInput](t, meshIn, "m", "")} }
	return []quotaCase{
		// Above quota.ExactMax: a bound on etcd.
		{name: "virtual nodes per mesh", limits: appmesh.Limits{VirtualNodesPerMesh: quota.ExactMax + 4}, max: quota.ExactMax + 4,
			setup: mesh,
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateVirtualNodeInput](t, nodeIn, fmt.Sprintf("vn%d", i), token)
			},
			prefix: appmesh.ChildrenPrefix(quotaOwner, "m", appmesh.KindVirtualNode, "")},
		{name: "routes per virtual router", limits: appmesh.Limits{RoutesPerVirtualRouter: quota.ExactMax + 2}, max: quota.ExactMax + 2,
			setup: func(t *testing.T) []any {
				return append(mesh(t), input[appmesh.CreateVirtualNodeInput](t, nodeIn, "target", ""),
					input[appmesh.CreateVirtualRouterInput](t, routerIn, "vr", ""))
			},
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateRouteInput](t, routeIn, fmt.Sprintf("r%d", i), token)
			},
			prefix: appmesh.ChildrenPrefix(quotaOwner, "m", appmesh.KindRoute, "vr")},
		// quota.ExactMax or less: exact. The first three at App Mesh's
		// defaults; the last the largest exact quota.
		{name: "meshes", limits: appmesh.Limits{Meshes: defaults.Meshes}, max: defaults.Meshes,
			setup: func(*testing.T) []any { return nil },
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateMeshInput](t, meshIn, fmt.Sprintf("m%d", i), token)
			},
			prefix: meshesPrefix(quotaOwner)},
		{name: "virtual gateways per mesh", limits: appmesh.Limits{VirtualGatewaysPerMesh: defaults.VirtualGatewaysPerMesh}, max: defaults.VirtualGatewaysPerMesh,
			setup: mesh,
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateVirtualGatewayInput](t, gatewayIn, fmt.Sprintf("g%d", i), token)
			},
			prefix: appmesh.ChildrenPrefix(quotaOwner, "m", appmesh.KindVirtualGateway, "")},
		{name: "gateway routes per virtual gateway", limits: appmesh.Limits{GatewayRoutesPerVirtualGateway: defaults.GatewayRoutesPerVirtualGateway},
			max: defaults.GatewayRoutesPerVirtualGateway,
			setup: func(t *testing.T) []any {
				return append(mesh(t), input[appmesh.CreateVirtualServiceInput](t, serviceIn, "s.local", ""),
					input[appmesh.CreateVirtualGatewayInput](t, gatewayIn, "g", ""))
			},
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateGatewayRouteInput](t, gwRouteIn, fmt.Sprintf("gr%d", i), token)
			},
			prefix: appmesh.ChildrenPrefix(quotaOwner, "m", appmesh.KindGatewayRoute, "g")},
		{name: "virtual nodes per mesh, exact", limits: appmesh.Limits{VirtualNodesPerMesh: quota.ExactMax}, max: quota.ExactMax,
			setup: mesh,
			create: func(t *testing.T, i int, token string) any {
				return input[appmesh.CreateVirtualNodeInput](t, nodeIn, fmt.Sprintf("vn%d", i), token)
			},
			prefix: appmesh.ChildrenPrefix(quotaOwner, "m", appmesh.KindVirtualNode, "")},
	}
}

// stored is how many keys st holds under prefix.
func stored(t *testing.T, st store.Store, prefix string) int {
	t.Helper()
	n := 0
	if _, err := st.View(t.Context(), func(tx store.Tx) error {
		var err error
		n, err = tx.Count(prefix)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func isLimitExceeded(err error) bool {
	var e *appmesh.Error
	return errors.As(err, &e) && e.Code == appmesh.CodeLimitExceeded
}

// TestQuotaSequential: on both stores, creates one after the other stop
// exactly at each quota, bound on etcd or not: the next is a
// LimitExceededException naming the quota, and changes nothing (its
// client token is not remembered: made again, it is refused again).
func TestQuotaSequential(t *testing.T) {
	c := etcdtest.Start(t, 1)
	stores := []struct {
		name string
		open func(t *testing.T, i int) store.Store
	}{
		{"bolt", func(t *testing.T, _ int) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
		{"etcd", func(t *testing.T, i int) store.Store { return openEtcd(t, c, fmt.Sprintf("/sequential%d", i)) }},
	}
	for _, sto := range stores {
		for i, tt := range quotaCases() {
			t.Run(sto.name+"/"+tt.name, func(t *testing.T) {
				ctx := t.Context()
				st := sto.open(t, i)
				svc := New(st, Config{Limits: &tt.limits}, nil)
				for _, in := range tt.setup(t) {
					if err := create(ctx, svc, in); err != nil {
						t.Fatal(err)
					}
				}
				for j := range tt.max {
					if err := create(ctx, svc, tt.create(t, j, fmt.Sprintf("tok%d", j))); err != nil {
						t.Fatalf("create %d of %d: %v", j+1, tt.max, err)
					}
				}
				before := keys(t, st)
				over := tt.create(t, tt.max, "over")
				for try := range 2 {
					err := create(ctx, svc, over)
					if !isLimitExceeded(err) || !strings.Contains(err.Error(), fmt.Sprintf("The limit of %d ", tt.max)) {
						t.Fatalf("create %d (try %d) past a quota of %d: %v, want LimitExceededException naming it", tt.max+1, try+1, tt.max, err)
					}
					if after := keys(t, st); !maps.EqualFunc(before, after, func(a, b []byte) bool { return string(a) == string(b) }) {
						t.Fatal("a create refused over the quota changed the store")
					}
				}
				if n := stored(t, st, tt.prefix); n != tt.max {
					t.Errorf("%d stored, want %d", n, tt.max)
				}
			})
		}
	}
}

// TestQuotaConcurrentOnEtcd: four creates of one kind in one scope that
// holds one resource less than its quota, each through its own replica,
// all read before any commits (a hookStore holds each first run after
// its reads until all have read: the worst case for a quota). A quota above
// quota.ExactMax is a bound: all four commit, passing it by three, the
// creates in flight less one, and no more (checkQuota). A quota of
// quota.ExactMax or less, as the account's meshes, a mesh's virtual
// gateways and a gateway's gateway routes are by default, is exact: one
// commits, the others conflict, run again and are refused. Either way
// the next create is refused.
func TestQuotaConcurrentOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	const writers = 4
	for i, tt := range quotaCases() {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			prefix := fmt.Sprintf("/concurrent%d", i)
			setup := New(openEtcd(t, c, prefix), Config{Limits: &tt.limits}, nil)
			for _, in := range tt.setup(t) {
				if err := create(ctx, setup, in); err != nil {
					t.Fatal(err)
				}
			}
			for j := range tt.max - 1 {
				if err := create(ctx, setup, tt.create(t, j, "")); err != nil {
					t.Fatal(err)
				}
			}

			arrived := make(chan struct{}, writers)
			release := make(chan struct{}) // closed once every writer has read
			defer func() {
				select {
				case <-release:
				default:
					close(release) // a failed wait must not leave the writers blocked
				}
			}()
			hold := func(run int) {
				if run == 1 {
					arrived <- struct{}{}
					<-release
				}
			}
			errs := make(chan error, writers)
			var wg sync.WaitGroup
			for w := range writers {
				svc := New(&hookStore{Store: openEtcd(t, c, prefix), hook: hold}, Config{Limits: &tt.limits}, nil)
				in := tt.create(t, tt.max-1+w, "")
				wg.Go(func() { errs <- create(ctx, svc, in) }) // ends when its create returns; waited for by wg
			}
			deadline := time.After(30 * time.Second)
			for range writers {
				select {
				case <-arrived:
				case <-deadline:
					t.Fatal("the writers did not all read within 30s")
				}
			}
			close(release)
			wg.Wait()
			close(errs)
			ok, refused := 0, 0
			for err := range errs {
				switch {
				case err == nil:
					ok++
				case isLimitExceeded(err):
					refused++
				default:
					t.Errorf("create: %v", err)
				}
			}
			want := tt.max
			if tt.max > quota.ExactMax {
				want += writers - 1
			}
			n := stored(t, setup.st, tt.prefix)
			t.Logf("%d created at once, %d refused; %d stored, the quota is %d", ok, refused, n, tt.max)
			if n != want || n != tt.max-1+ok || ok+refused != writers {
				t.Errorf("%d stored, %d creates answered success, %d LimitExceededException; want %d stored, as many as succeeded", n, ok, refused, want)
			}
			if err := create(ctx, setup, tt.create(t, tt.max+writers, "")); !isLimitExceeded(err) {
				t.Errorf("a create after the race: %v, want LimitExceededException", err)
			}
		})
	}
}

// TestCreatesDoNotConflictOnEtcd: with the default quotas, creates in a
// mesh holding more virtual nodes than a transaction can compare (150),
// made at once through four replicas, all commit on their first attempt:
// no conflict, and no commit guarded by the sequence key. They are 20
// virtual nodes of that mesh and 5 routes under one of its routers
// (which holds 30), while 5 of its nodes are updated and 5 nodes are
// created in another mesh, all with client tokens as the SDKs send. A
// create conflicts only with writes to what it reads itself (its name,
// the mesh, the parent, what it refers to, its client token), not with
// its siblings (checkQuota). The same with each replica keeping a mirror
// of the store, as weft server's do.
func TestCreatesDoNotConflictOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	for _, mirrored := range []bool{false, true} {
		t.Run(fmt.Sprintf("mirrored=%v", mirrored), func(t *testing.T) {
			testCreatesDoNotConflict(t, c, mirrored)
		})
	}
}

func testCreatesDoNotConflict(t *testing.T, c *etcdtest.Cluster, mirrored bool) {
	ctx := t.Context()
	const nodes, routes = 150, 30
	stores := openReplicas(t, c, fmt.Sprintf("/conflicts-%v", mirrored), 4)
	// Every write has a later clock than the one before, so that the
	// client tokens of the race expire after those made before it: a
	// write lists the first few expiries only (remember).
	clk := &clock{time.Unix(1800000000, 0)}
	var svcs []*Service
	for _, st := range stores {
		svcs = append(svcs, New(st, Config{Now: clk.now}, nil))
	}
	must := func(in any) {
		t.Helper()
		if err := create(ctx, svcs[0], in); err != nil {
			t.Fatal(err)
		}
		clk.t = clk.t.Add(time.Second)
	}
	must(input[appmesh.CreateMeshInput](t, meshIn, "m", "t-m"))
	must(input[appmesh.CreateMeshInput](t, meshIn, "other", "t-other"))
	for i := range nodes {
		must(input[appmesh.CreateVirtualNodeInput](t, nodeIn, fmt.Sprintf("old%03d", i), fmt.Sprintf("t-old%d", i)))
	}
	must(input[appmesh.CreateVirtualNodeInput](t, nodeIn, "target", "t-target"))
	must(input[appmesh.CreateVirtualRouterInput](t, routerIn, "vr", "t-vr"))
	for i := range routes {
		must(input[appmesh.CreateRouteInput](t, routeIn, fmt.Sprintf("old%d", i), fmt.Sprintf("t-r-old%d", i)))
	}
	otherNode := strings.Replace(nodeIn, `"meshName":"m"`, `"meshName":"other"`, 1)

	var writes []any
	for i := range 20 {
		writes = append(writes, input[appmesh.CreateVirtualNodeInput](t, nodeIn, fmt.Sprintf("new%d", i), fmt.Sprintf("t-new%d", i)))
	}
	for i := range 5 {
		writes = append(writes,
			input[appmesh.CreateRouteInput](t, routeIn, fmt.Sprintf("new%d", i), fmt.Sprintf("t-r-new%d", i)),
			input[appmesh.UpdateVirtualNodeInput](t, nodeIn, fmt.Sprintf("old%03d", 100+i), fmt.Sprintf("t-up%d", i)),
			input[appmesh.CreateVirtualNodeInput](t, otherNode, fmt.Sprintf("new%d", i), fmt.Sprintf("t-other%d", i)))
	}

	var fns []func() error
	for i, in := range writes {
		svc := svcs[i%len(svcs)]
		fns = append(fns, func() error { return create(ctx, svc, in) })
	}
	etcdtest.WritesDoNotConflict(t, stores, mirrored, fns)
}
