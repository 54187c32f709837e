package server

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// A write that changes only what routes do with requests (weights,
// matches, timeouts, retry policies: translate.RouteHostsOnly) changes
// nothing of a sidecar's configuration but the virtual hosts of its
// egress route tables. The core then does not translate the sidecars it
// affects: each keeps its resources, versions and dependencies, and its
// egress route tables are assembled again (assemble.go) from the hosts
// of this batch, each host built once per batch (translate.Memo's
// EgressHost) and marshalled once, however many tables hold it.
//
// What makes that possible is each sidecar's table recipes, taken from
// its last whole translation: which hosts (translate.HostRef) each of its
// route tables is made of. A table with no such host (an ingress table)
// reads no route and is kept as it is. A gateway's are described the same
// way: its egress table holds the services' hosts, and its gateway route
// table, which holds none, reads of the routes only their per-request
// timeouts, so a gateway follows a batch this way when the batch keeps
// every timeout (translate.RouteTimeoutSame). A proxyless gRPC client's
// tables hold hosts of gRPC's flavour (translate.HostRef.GRPC), which
// leave out a route whose :method match excludes POST and the clusters
// of its targets with it: such a client follows a batch this way when
// the batch keeps the routes it keeps (translate.RouteProxylessSame). An
// identity whose tables cannot be described so (a table mixing egress
// hosts with others, such as a gateway's default_backend host), whose
// last translation failed, or whose snapshot holds a resource not checked
// as its kind, is translated whole.

// tableRecipe is what one route table of a sidecar is made of: its egress
// hosts, in order; none for a table that holds no egress host.
type tableRecipe struct {
	hosts []hostSlot
}

// hostSlot is one host of a table: rebuilt from ref in each batch, or,
// for a host that reads no route (ref.Fixed), fixed, as it was.
type hostSlot struct {
	ref   translate.HostRef
	fixed *routev3.VirtualHost
}

// recipesOf returns a recipe for each route table of items (the routes of
// one translation, in order), or false when a table mixes egress hosts
// with hosts the Memo does not name or is not assemblable, or when no
// table holds an egress host: the hosts are the translator's (translate.TranslateWith's)
// evidence that routes reach the proxy through them alone, and a
// translator that builds none (a test's) is always followed whole. The
// recipes of a table are made once per batch however many identities
// hold it.
func (sh *shared) recipesOf(items []item) ([]*tableRecipe, bool) {
	out := make([]*tableRecipe, len(items))
	hosts := false
	for i := range items {
		rc, ok := items[i].msg.(*routev3.RouteConfiguration)
		if !ok {
			return nil, false
		}
		sh.mu.Lock()
		rec, seen := sh.recipes[rc]
		sh.mu.Unlock()
		if !seen {
			rec = sh.recipe(rc)
			sh.mu.Lock()
			if sh.recipes == nil {
				sh.recipes = map[*routev3.RouteConfiguration]*tableRecipe{}
			}
			sh.recipes[rc] = rec
			sh.mu.Unlock()
		}
		if rec == nil {
			return nil, false
		}
		hosts = hosts || len(rec.hosts) > 0
		out[i] = rec
	}
	return out, hosts
}

// noHosts is the recipe of a table that holds no egress host.
var noHosts = &tableRecipe{}

// recipe describes rc; nil when it cannot be.
func (sh *shared) recipe(rc *routev3.RouteConfiguration) *tableRecipe {
	var slots []hostSlot
	rebuilt, others := 0, 0
	for _, vh := range rc.GetVirtualHosts() {
		ref, ok := sh.memo.EgressHostRef(vh)
		switch {
		case !ok:
			others++
		case ref.Fixed:
			slots = append(slots, hostSlot{ref: ref, fixed: vh})
		default:
			slots = append(slots, hostSlot{ref: ref})
			rebuilt++
		}
	}
	switch {
	case rebuilt == 0:
		return noHosts
	case others > 0 || !assemblable(rc):
		return nil
	}
	return &tableRecipe{hosts: slots}
}

// routeChanges follows whether every change of a batch is a route update
// that translate.RouteHostsOnly allows.
type routeChanges struct {
	hostsOnly bool // every App Mesh event so far was such an update
	any       bool // some event was
	// timeouts: no such update so far changed a per-request timeout
	// (translate.RouteTimeoutSame), so gateways may follow them too.
	timeouts bool
	// proxyless: no such update so far changed which routes a gRPC
	// client keeps (translate.RouteProxylessSame), so proxyless clients
	// may follow them too.
	proxyless bool
}

// note records one App Mesh event of the batch: ref changed from old
// (nil: created) to new (nil: deleted).
func (rc *routeChanges) note(ref appmesh.Ref, old, new *appmesh.RouteData) {
	if ref.Kind != appmesh.KindRoute || !translate.RouteHostsOnly(old, new) {
		rc.hostsOnly = false
		return
	}
	rc.any = true
	rc.timeouts = rc.timeouts && translate.RouteTimeoutSame(old, new)
	rc.proxyless = rc.proxyless && translate.RouteProxylessSame(old, new)
}

// hostsOnly reports whether id can follow the batch's route updates, rc,
// by re-assembling its route tables.
func (c *machine) hostsOnly(id translate.Identity, rc routeChanges) bool {
	p := c.proxies[id]
	kind := id.Kind == appmesh.KindVirtualNode || id.Kind == appmesh.KindVirtualGateway && rc.timeouts
	return kind && (!id.Proxyless || rc.proxyless) && p != nil && p.recipes &&
		p.snap != nil && p.snap.closeErr == nil && p.err == "" &&
		len(p.tables) == len(p.snap.types[typeRoute].entries)
}

// rebuiltTable is a route table assembled again in one batch.
type rebuiltTable struct {
	sum   [sha256.Size]byte
	value []byte
	msg   *routev3.RouteConfiguration
	err   error
}

// rebuilt holds the tables assembled again in a batch, by their previous
// content sum, mesh and flavour: a table's content names its hosts (each
// host's name and domains are its service's and port), so one previous
// sum is one recipe of a mesh and flavour. Tables of two meshes, or a
// sidecar's and a proxyless client's, may have the same content (no
// route in any host: the cluster names that tell meshes apart are in the
// routes) and be rebuilt differently.
type rebuilt struct {
	mu sync.Mutex
	m  map[rebuiltKey]*rebuiltTable
}

// rebuiltKey names a table assembled again: its previous content sum,
// its mesh, and whether it is a proxyless client's.
type rebuiltKey struct {
	was         [sha256.Size]byte
	owner, mesh string
	grpc        bool
}

// computeRoutes is compute for a sidecar whose routes changed only in
// what its egress hosts hold (hostsOnly): its snapshot's resources, with
// each egress route table assembled again from the batch's hosts. It
// must not write to the machine's state: it runs on a worker.
func (c *machine) computeRoutes(id translate.Identity, sh *shared, w *worker) (r result) {
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("assemble routes panicked: %v", p)}
		}
	}()
	p := c.proxies[id]
	ms := c.meshes[meshKey{id.MeshOwner, id.Mesh}]
	if !ms.exists(id) {
		return c.compute(id, sh, w)
	}
	r = result{grpc: p.grpc, deps: p.deps, eps: p.eps, sources: p.sources, secrets: p.secrets, leafDNS: p.leafDNS,
		routesOnly: true, recipes: true, tables: p.tables, prev: p.snap}
	g := index(p.grpc)
	for t := range numTypes {
		if t == typeSecret {
			continue // rebuilt by buildSecrets
		}
		for _, e := range p.snap.types[t].entries {
			if c.checkResource != nil && e.facts[g] == nil {
				// Not checked as this proxy's kind: translate whole,
				// which checks.
				return c.compute(id, sh, w)
			}
		}
		r.same[t] = t != typeRoute
	}
	old := p.snap.types[typeRoute].entries
	var items []item // made on the first table whose content changed
	for i, rec := range p.tables {
		if len(rec.hosts) == 0 {
			continue // reads no route
		}
		e := old[i]
		tb := sh.rebuildTable(id, ms.view, e.name, e.sum, rec, c.entries)
		if tb.err != nil {
			// The host is gone or failed to build: a whole translation
			// says what the proxy gets.
			return c.compute(id, sh, w)
		}
		if tb.sum == e.sum {
			continue
		}
		if items == nil {
			items = w.take(len(old))
			for j, e := range old {
				items[j] = item{name: e.name, sum: e.sum, facts: e.facts[g]}
			}
		}
		it := item{name: e.name, sum: tb.sum, msg: tb.msg}
		if n := c.entries[tb.sum]; n != nil {
			it.facts = n.facts[g]
		} else {
			it.value = tb.value
		}
		items[i] = it
	}
	r.items[typeRoute] = items
	r.same[typeRoute] = items == nil
	return r
}

// sameRouteFacts reports whether the route tables of r, a routesOnly
// result, have the facts its previous tables had.
func sameRouteFacts(r *result) bool {
	if r.same[typeRoute] {
		return true
	}
	g := index(r.grpc)
	old := r.prev.types[typeRoute].entries
	for i, it := range r.items[typeRoute] {
		a, b := old[i].facts[g], it.facts
		if a == b {
			continue
		}
		if a == nil || b == nil || a.Name != b.Name || a.Port != b.Port || a.EDS != b.EDS ||
			!slices.Equal(a.Routes, b.Routes) || !slices.Equal(a.Clusters, b.Clusters) {
			return false
		}
	}
	return true
}

// rebuildTable assembles the table name (previously of content sum was)
// from rec's hosts as v now makes them, once per batch.
func (sh *shared) rebuildTable(id translate.Identity, v *translate.View, name string, was [sha256.Size]byte, rec *tableRecipe, interned map[[sha256.Size]byte]*entry) *rebuiltTable {
	k := rebuiltKey{was: was, owner: id.MeshOwner, mesh: id.Mesh, grpc: id.Proxyless}
	sh.tables.mu.Lock()
	tb := sh.tables.m[k]
	sh.tables.mu.Unlock()
	if tb != nil {
		return tb
	}
	tb = &rebuiltTable{msg: &routev3.RouteConfiguration{Name: name, VirtualHosts: make([]*routev3.VirtualHost, len(rec.hosts))}}
	for i, h := range rec.hosts {
		if h.fixed != nil {
			tb.msg.VirtualHosts[i] = h.fixed
			continue
		}
		if tb.msg.VirtualHosts[i], tb.err = sh.memo.EgressHost(v, id, h.ref); tb.err != nil {
			break
		}
	}
	if tb.err == nil {
		tb.sum, tb.value, tb.err = sh.assembleRoute(tb.msg, interned)
	}
	sh.tables.mu.Lock()
	defer sh.tables.mu.Unlock()
	if q := sh.tables.m[k]; q != nil {
		return q // assembled twice at once: equal, keep the first
	}
	if sh.tables.m == nil {
		sh.tables.m = map[rebuiltKey]*rebuiltTable{}
	}
	sh.tables.m[k] = tb
	return tb
}
