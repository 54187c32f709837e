package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestKeptIngressFollowsChanges: a write that changes only a route's
// weights changes only every sidecar's route tables, assembled without a
// translation; one that changes its targets keeps every sidecar's
// ingress (translate.Kept); a write to what an ingress reads (a node's listener port, a
// backend added to a node, the mesh's IP preference) reaches every
// identity it concerns. After each write every proxy's configuration
// equals a translation from scratch of the store's state.
func TestKeptIngressFollowsChanges(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	putNamespace(t, st)
	putMesh(t, st, "m")
	const clients = 8
	putNode(t, st, "m", "a")
	putNode(t, st, "m", "b")
	putRaw(t, st, ref("m", appmesh.KindVirtualRouter, "", "r"),
		`{"meshName":"m","virtualRouterName":"r","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`)
	route := func(wa int) {
		putRaw(t, st, ref("m", appmesh.KindRoute, "r", "rt"), fmt.Sprintf(
			`{"meshName":"m","virtualRouterName":"r","routeName":"rt","spec":{"httpRoute":{"match":{"prefix":"/"},
			"action":{"weightedTargets":[{"virtualNode":"a","weight":%d},{"virtualNode":"b","weight":%d}]}}}}`, wa, 100-wa))
	}
	route(50)
	putRaw(t, st, ref("m", appmesh.KindVirtualService, "", "s"),
		`{"meshName":"m","virtualServiceName":"s","spec":{"provider":{"virtualRouter":{"virtualRouterName":"r"}}}}`)
	putService(t, st, "m", "other", "b")
	var ids []translate.Identity
	for i := range clients {
		name := fmt.Sprintf("c%d", i)
		putNode(t, st, "m", name, "s")
		ids = append(ids, translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: name})
	}

	log := slog.New(slog.DiscardHandler)
	opts := &Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: log}
	l := newTestMachine(opts, nil)
	rev, err := l.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := st.Watch(wctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := l.attach(id); err != nil {
			t.Fatal(err)
		}
	}
	follow := func() {
		t.Helper()
		for {
			select {
			case c := <-changes:
				l.apply([]store.Change{c}, time.Now())
				if c.Revision == st.Revision() {
					return
				}
			case <-time.After(wait):
				t.Fatal("no change from the store")
			}
		}
	}
	versions := func() map[translate.Identity][numTypes]string {
		out := map[translate.Identity][numTypes]string{}
		for _, id := range ids {
			var v [numTypes]string
			for typ := range numTypes {
				v[typ] = l.proxies[id].snap.types[typ].version
			}
			out[id] = v
		}
		return out
	}
	// sameAsFull compares every proxy with a fresh machine's.
	sameAsFull := func(step string) {
		t.Helper()
		full := newTestMachine(opts, nil)
		if _, err := full.resync(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if err := full.attach(id); err != nil {
				t.Fatal(err)
			}
			p, fp := l.proxies[id], full.proxies[id]
			for typ := range numTypes {
				if typ == typeSecret {
					continue
				}
				if got, want := p.snap.types[typ].version, fp.snap.types[typ].version; got != want {
					t.Fatalf("after %s: %s of %s: version %s, from scratch %s", step, typeName(typ), id.Name, got, want)
				}
				if err := sameBytes(p.snap.types[typ].entries, fp.snap.types[typ].entries); err != nil {
					t.Fatalf("after %s: %s of %s: %v", step, typeName(typ), id.Name, err)
				}
			}
		}
	}
	changed := func(step string, before map[translate.Identity][numTypes]string, typ int, want bool) {
		t.Helper()
		after := versions()
		for _, id := range ids {
			if got := before[id][typ] != after[id][typ]; got != want {
				t.Fatalf("after %s: %s of %s changed: %t, want %t", step, typeName(typ), id.Name, got, want)
			}
		}
	}

	// A route's weights: every client's route tables change, nothing
	// else, and no client is translated: its route tables are assembled
	// again from the new virtual host (hostsonly.go).
	before := versions()
	translations, routeUpdates := testutil.ToFloat64(l.metrics.translations), testutil.ToFloat64(l.metrics.routeUpdates)
	route(80)
	follow()
	changed("a route write", before, typeRoute, true)
	changed("a route write", before, typeListener, false)
	changed("a route write", before, typeCluster, false)
	if got := testutil.ToFloat64(l.metrics.translations) - translations; got != 0 {
		t.Fatalf("a weights write: %v translations, want none", got)
	}
	if got := testutil.ToFloat64(l.metrics.routeUpdates) - routeUpdates; got != clients {
		t.Fatalf("a weights write: %v route-only updates, want %d", got, clients)
	}
	sameAsFull("a route write")
	// A route's targets: translated, and every client took its ingress
	// as kept.
	before, reused := versions(), l.kept.Reused()
	putRaw(t, st, ref("m", appmesh.KindRoute, "r", "rt"),
		`{"meshName":"m","virtualRouterName":"r","routeName":"rt","spec":{"httpRoute":{"match":{"prefix":"/"},
		"action":{"weightedTargets":[{"virtualNode":"a","weight":1}]}}}}`)
	follow()
	changed("a route's targets", before, typeRoute, true)
	changed("a route's targets", before, typeListener, false)
	if got := l.kept.Reused() - reused; got != clients {
		t.Fatalf("a route's targets: %d clients took their ingress as kept, want %d", got, clients)
	}
	sameAsFull("a route's targets")
	// The kept messages' sums are kept with them: the next batch neither
	// marshals nor hashes them.
	if len(l.keptSums) < clients {
		t.Fatalf("%d sums of kept messages, want one or more per client", len(l.keptSums))
	}
	route(30)
	lreused := l.kept.ListenersReused()
	follow()
	sameAsFull("a second route write")
	// The egress listener names the route table, not its weights: kept.
	if l.kept.ListenersReused() == lreused {
		t.Fatal("a route write built the egress listener again")
	}

	// The router's listener port, then the service's provider switched
	// from the router to a node and back: each reaches every client.
	before = versions()
	putRaw(t, st, ref("m", appmesh.KindVirtualRouter, "", "r"),
		`{"meshName":"m","virtualRouterName":"r","spec":{"listeners":[{"portMapping":{"port":8081,"protocol":"http"}}]}}`)
	follow()
	changed("the router's port", before, typeListener, true)
	changed("the router's port", before, typeRoute, true)
	sameAsFull("the router's port")
	putRaw(t, st, ref("m", appmesh.KindVirtualService, "", "s"),
		`{"meshName":"m","virtualServiceName":"s","spec":{"provider":{"virtualNode":{"virtualNodeName":"b"}}}}`)
	follow()
	sameAsFull("the provider switched to a node")
	putRaw(t, st, ref("m", appmesh.KindVirtualService, "", "s"),
		`{"meshName":"m","virtualServiceName":"s","spec":{"provider":{"virtualRouter":{"virtualRouterName":"r"}}}}`)
	follow()
	sameAsFull("the provider switched back to the router")

	// Each client's listener port, then a backend added to each.
	before = versions()
	for _, id := range ids {
		vn := nodeData("m", id.Name, "s")
		vn.Spec.Listeners[0].PortMapping.Port = ptr(int64(9090))
		put(t, st, ref("m", appmesh.KindVirtualNode, "", id.Name).Key(), vn)
	}
	follow()
	changed("listener ports", before, typeListener, true)
	changed("listener ports", before, typeCluster, true) // the local cluster's port
	sameAsFull("listener ports")
	before = versions()
	for _, id := range ids {
		vn := nodeData("m", id.Name, "s", "other")
		vn.Spec.Listeners[0].PortMapping.Port = ptr(int64(9090))
		put(t, st, ref("m", appmesh.KindVirtualNode, "", id.Name).Key(), vn)
	}
	follow()
	changed("a backend added", before, typeRoute, true)
	sameAsFull("a backend added")

	// The mesh's IP preference: every listener binds anew.
	before = versions()
	put(t, st, appmesh.MeshKey(owner, "m"), appmesh.MeshData{MeshName: ptr("m"), Spec: &appmesh.MeshSpec{
		ServiceDiscovery: &appmesh.MeshServiceDiscovery{IpPreference: appmesh.IpPreferenceIpv6Preferred}}})
	follow()
	changed("the mesh's IP preference", before, typeListener, true)
	sameAsFull("the mesh's IP preference")

	// A client gone: its kept ingress goes with it.
	n := l.kept.Len()
	l.detach(ids[0])
	if got := l.kept.Len(); got != n-1 {
		t.Fatalf("%d identities kept after a detach, want %d", got, n-1)
	}
}
