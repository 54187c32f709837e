package server

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Recomputing identities (the core's work, core.go): translate in
// parallel, marshal and intern by content, validate each distinct
// resource once, install the snapshots.

// result is one identity's translation, computed by a worker.
type result struct {
	closeErr error
	err      error
	grpc     bool // translate.ForGRPC: the rules its resources are checked by
	items    [numTypes][]item
	deps     []appmesh.Ref
	eps      []nodeRef
	sources  []translate.EndpointSource
	// endpointsOnly: computeEndpoints rebuilt assignments, nothing was
	// translated; secretsOnly: only the secrets are rebuilt; routesOnly:
	// computeRoutes assembled route tables again, nothing was translated.
	endpointsOnly bool
	secretsOnly   bool
	routesOnly    bool
	// tables are the recipes of items[typeRoute] when recipes
	// (hostsonly.go); a result of neither kind keeps the proxy's.
	tables  []*tableRecipe
	recipes bool
	whole   bool // a translation: tables and recipes replace the proxy's
	// same[t]: type t is prev's, as it was (items[t] is not built);
	// prev is the snapshot the result was computed from (routesOnly).
	same [numTypes]bool
	prev *snapshot
	// secrets and leafDNS are what the secrets are built from; cert and
	// certErr what they hold (snapshot.cert, certErr).
	secrets []translate.SecretRef
	leafDNS []string
	cert    *CertificateStatus
	certErr string
}

// task is one identity to recompute.
type task struct {
	id translate.Identity
	// eps, when set, are the nodes whose Cloud Map endpoints changed,
	// and nothing else id reads did since its snapshot was translated:
	// only the assignments built from them are rebuilt. Shared by the
	// tasks of a batch; only read.
	eps map[nodeRef]struct{}
	// secretsOnly: nothing id reads changed, only its secrets are rebuilt
	// (a leaf renewal, a CA change).
	secretsOnly bool
	// routes: only what its egress route tables' hosts hold changed
	// (hostsonly.go).
	routes bool
}

// whole is a task per identity, each translated whole.
func whole(ids []translate.Identity) []task {
	tasks := make([]task, len(ids))
	for i, id := range ids {
		tasks[i].id = id
	}
	return tasks
}

// item is one marshalled resource before interning.
type item struct {
	name  string
	sum   [sha256.Size]byte
	value []byte // nil when an entry with sum already exists
	key   bool   // entry.key
	// facts is what translate.CheckResource found, nil until checked;
	// msg is the resource to check meanwhile.
	facts *translate.Facts
	msg   proto.Message
	check *checkJob // the check that fills facts
}

// recompute runs the tasks and installs their snapshots. The
// translations run in parallel (they only read the views, the proxies and
// the interned entries), then the checks of the resources not seen
// before, in parallel too; installing is sequential. at is the commit
// time of the writes that caused it, zero when none did (a proxy
// connecting).
func (c *machine) recompute(tasks []task, at, now time.Time) {
	if len(tasks) == 0 {
		return
	}
	// The results are the machine's, from batch to batch: a write that
	// affects every proxy would otherwise allocate one per proxy.
	if cap(c.results) < len(tasks) {
		c.results = make([]result, len(tasks))
	}
	results := c.results[:len(tasks)]
	defer clear(results) // no snapshot or message held past the batch
	built := &assignments{m: map[assignmentKey]*assignment{}}
	// About ten messages per translated identity pass through sums.
	translated := 0
	for _, t := range tasks {
		if !t.secretsOnly && !t.routes && t.eps == nil {
			translated++
		}
	}
	sh := &shared{memo: translate.NewMemoKeeping(c.kept), sums: make(map[proto.Message]marshalled, 10*translated),
		kept: map[proto.Message][sha256.Size]byte{}}
	ws := c.scratch.workersFor(c.workers(len(tasks)))
	defer func() {
		for i := range ws {
			ws[i].done()
		}
	}()
	c.run(len(tasks), func(w, i int) {
		if tasks[i].secretsOnly {
			results[i] = c.sameResources(tasks[i].id, &ws[w])
		} else if tasks[i].routes {
			results[i] = c.computeRoutes(tasks[i].id, sh, &ws[w])
		} else if tasks[i].eps != nil {
			results[i] = c.computeEndpoints(tasks[i].id, tasks[i].eps, built, sh, &ws[w])
		} else {
			results[i] = c.compute(tasks[i].id, sh, &ws[w])
		}
	})
	c.metrics.sharedEgress.Add(float64(sh.memo.Shared()))
	c.keepSums(sh.kept)
	c.check(results)
	c.preissue(tasks, results, now)
	for i := range results {
		if r := &results[i]; r.err == nil && r.closeErr == nil {
			c.buildSecrets(tasks[i].id, r, now)
		}
	}
	// References are dropped only once every result is installed: a
	// result carries no bytes for a resource that was interned when it
	// was computed, so no entry may disappear before the whole batch
	// holds its references.
	drops := c.scratch.drops[:0]
	c.emit() // the slice the last Ready returned, if any, reused
	c.out = slices.Grow(c.out, len(tasks))
	for i, t := range tasks {
		drops = c.install(t.id, &results[i], at, drops)
	}
	for _, d := range drops {
		c.release(d.s, d.next)
	}
	clear(drops)
	c.scratch.drops = drops[:0]
	c.metrics.interned.Set(float64(len(c.entries)))
}

// shared is what the translations of one batch share: the translator's
// Memo, and the marshalled form of each message it handed to several
// identities (the same pointer), so that each is marshalled and hashed
// once.
type shared struct {
	memo *translate.Memo
	mu   sync.Mutex
	sums map[proto.Message]marshalled
	// kept are the sums of kept messages marshalled in this batch, for
	// machine.keptSums.
	kept map[proto.Message][sha256.Size]byte
	// hosts are the encodings of the virtual hosts of the route tables
	// assembled in this batch (assemble.go).
	hosts map[*routev3.VirtualHost]*hostEncoding
	// recipes are the recipes of the batch's route tables, and tables
	// the tables assembled again (hostsonly.go).
	recipes map[*routev3.RouteConfiguration]*tableRecipe
	tables  rebuilt
}

// keepSums adds the batch's sums of kept messages to c.keptSums, and
// drops those whose message is no longer kept when they outnumber the
// kept ones (each identity keeps a handful).
func (c *machine) keepSums(add map[proto.Message][sha256.Size]byte) {
	for m, sum := range add {
		c.keptSums[m] = sum
	}
	if len(add) == 0 || len(c.keptSums) <= 8*c.kept.Len()+64 {
		return
	}
	for m := range c.keptSums {
		if !c.kept.Holds(m) {
			delete(c.keptSums, m)
		}
	}
}

// compute translates one identity and marshals its resources, in w's
// buffer (grown as needed). It must not write to the machine's state:
// it runs on a worker.
func (c *machine) compute(id translate.Identity, sh *shared, w *worker) (r result) {
	// A translator bug met by one mesh's input must not take the control
	// plane down: the proxy keeps its configuration and shows the error.
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("translate panicked: %v", p)}
		}
	}()
	k := meshKey{id.MeshOwner, id.Mesh}
	ms := c.meshes[k]
	if !ms.exists(id) {
		r.closeErr = status.Errorf(codes.NotFound, "%s %s in mesh %s was deleted", id.Kind, id.Name, id.Mesh)
		return r
	}
	res, err := c.translate(ms.view, id, sh.memo)
	if errors.Is(err, translate.ErrNotFound) {
		r.closeErr = status.Error(codes.NotFound, err.Error())
		return r
	}
	if err != nil {
		r.err = fmt.Errorf("translate: %w", err)
		return r
	}
	r.grpc = translate.ForGRPC(res)
	r.sources = res.EndpointSources
	r.secrets, r.leafDNS = res.Secrets, res.LeafDNSNames
	// Each type's list is walked as the translator typed it: no list of
	// proto.Message is made.
	if r.items[typeCluster], err = itemsOf(c, typeCluster, res.Clusters, sh, w, r.grpc); err != nil {
		r.err = err
		return r
	}
	if r.items[typeEndpoint], err = itemsOf(c, typeEndpoint, res.Endpoints, sh, w, r.grpc); err != nil {
		r.err = err
		return r
	}
	if r.items[typeListener], err = itemsOf(c, typeListener, res.Listeners, sh, w, r.grpc); err != nil {
		r.err = err
		return r
	}
	if r.items[typeRoute], err = itemsOf(c, typeRoute, res.Routes, sh, w, r.grpc); err != nil {
		r.err = err
		return r
	}
	r.whole = true
	r.tables, r.recipes = sh.recipesOf(r.items[typeRoute])
	// The identity's own resource and its mesh are dependencies whatever
	// the translator reports: their deletion must reach the proxy.
	// translate.Translate lists both; a copy is made only for a
	// translator that does not (res.Deps is not ours to append to).
	r.deps = res.Deps
	for _, own := range [...]appmesh.Ref{
		{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindMesh, Name: id.Mesh},
		{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: id.Kind, Name: id.Name},
	} {
		if !slices.Contains(r.deps, own) {
			r.deps = append(slices.Clip(r.deps), own)
		}
	}
	p := c.proxies[id]
	if p != nil && equalSlices(p.deps, r.deps) {
		r.deps = p.deps // most writes change no dependency: keep one copy
	}
	if p != nil && sameEndpointsOf(p.eps, k, res.EndpointsOf) {
		r.eps = p.eps
		return r
	}
	for _, n := range res.EndpointsOf {
		r.eps = append(r.eps, nodeRef{k, n})
	}
	return r
}

// computeEndpoints is compute for an identity whose Cloud Map endpoints
// alone changed, on the nodes in changed: its snapshot's resources, with
// the assignments built from those nodes' endpoints rebuilt
// (translate.LoadAssignment). It must not write to the machine's state: it
// runs on a worker.
func (c *machine) computeEndpoints(id translate.Identity, changed map[nodeRef]struct{}, built *assignments, sh *shared, w *worker) (r result) {
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("build endpoints panicked: %v", p)}
		}
	}()
	k := meshKey{id.MeshOwner, id.Mesh}
	p := c.proxies[id]
	for _, n := range p.eps {
		_, dirty := changed[n]
		if dirty && !slices.ContainsFunc(p.sources, func(s translate.EndpointSource) bool { return s.Node == n.name }) {
			// The translator read these endpoints but did not say where
			// they went: only a whole translation can follow them.
			return c.compute(id, sh, w)
		}
	}
	r = result{grpc: p.grpc, deps: p.deps, eps: p.eps, sources: p.sources, secrets: p.secrets, leafDNS: p.leafDNS, endpointsOnly: true}
	g := index(p.grpc)
	for t := range numTypes {
		if t == typeSecret {
			continue // rebuilt by buildSecrets
		}
		old := p.snap.types[t].entries
		r.items[t] = w.take(len(old))
		for i, e := range old {
			if c.checkResource != nil && e.facts[g] == nil {
				// Not checked as this proxy's kind (validation was off
				// when it was interned): translate whole, which checks.
				return c.compute(id, sh, w)
			}
			r.items[t][i] = item{name: e.name, sum: e.sum, facts: e.facts[g]}
		}
	}
	for i := range r.items[typeEndpoint] {
		it := &r.items[typeEndpoint][i]
		j, ok := slices.BinarySearchFunc(p.sources, it.name, func(s translate.EndpointSource, name string) int { return strings.Compare(s.Cluster, name) })
		if !ok {
			continue // read no endpoints
		}
		src := p.sources[j]
		if _, ok := changed[nodeRef{k, src.Node}]; !ok {
			continue
		}
		a := built.get(k, src, c.meshes[k].view.Endpoints[src.Node])
		if a.err != nil {
			r.err = a.err
			return r
		}
		*it = item{name: it.name, sum: a.sum, msg: a.msg}
		if e := c.entries[it.sum]; e != nil {
			it.facts = e.facts[g]
		} else {
			it.value = a.value
		}
	}
	return r
}

// assignments are the ClusterLoadAssignments rebuilt in one batch, each
// once, however many proxies hold it. Safe for concurrent use.
type assignments struct {
	mu sync.Mutex // protects m
	m  map[assignmentKey]*assignment
}

type assignmentKey struct {
	mesh meshKey
	src  translate.EndpointSource
}

// assignment is one rebuilt ClusterLoadAssignment, marshalled; never
// modified once built.
type assignment struct {
	msg   proto.Message
	value []byte
	sum   [sha256.Size]byte
	err   error
}

// get returns the assignment src describes for the endpoints eps of its
// node in mesh k, building it on first use.
func (as *assignments) get(k meshKey, src translate.EndpointSource, eps []translate.Endpoint) *assignment {
	key := assignmentKey{k, src}
	as.mu.Lock()
	defer as.mu.Unlock()
	if a := as.m[key]; a != nil {
		return a
	}
	a := &assignment{msg: translate.LoadAssignment(src, eps)}
	if a.value, a.err = (proto.MarshalOptions{Deterministic: true}).Marshal(a.msg); a.err != nil {
		a.err = fmt.Errorf("marshal %s: %w", typeName(typeEndpoint), a.err)
	}
	a.sum = sha256.Sum256(a.value)
	as.m[key] = a
	return a
}

// index is 1 for true: entry.facts is indexed by the gRPC flag.
func index(b bool) int {
	if b {
		return 1
	}
	return 0
}

// drop is a snapshot whose references to interned entries are to be
// released, except for the types it shares with next.
type drop struct{ s, next *snapshot }

// install makes r the identity's snapshot and returns drops with the
// snapshot it replaced, for the caller to release after the batch.
func (c *machine) install(id translate.Identity, r *result, at time.Time, drops []drop) []drop {
	p := c.proxies[id]
	if p == nil {
		return drops
	}
	switch {
	case r.closeErr != nil:
		if p.snap != nil {
			drops = append(drops, drop{p.snap, nil})
		}
		p.snap = newSnapshot()
		p.snap.closeErr = r.closeErr
		c.emit(update{id: id, snap: p.snap})
		return drops
	case r.err != nil:
		c.metrics.translateErr.Inc()
		if msg := r.err.Error(); msg != p.err {
			p.err = msg
			c.log.Error("proxy configuration not updated", "mesh", id.Mesh, "kind", id.Kind, "name", id.Name, "proxyless", id.Proxyless, "error", r.err)
		}
		c.emit(update{id: id, err: r.err})
		return drops
	}
	switch {
	case r.endpointsOnly:
		c.metrics.epUpdates.Inc()
	case r.routesOnly:
		c.metrics.routeUpdates.Inc()
	case r.secretsOnly:
	default:
		c.metrics.translations.Inc()
	}
	// Secrets alone do not fix a failed translation: its error stays.
	keepErr := r.secretsOnly && p.err != ""
	if !keepErr {
		p.err = ""
	}
	p.grpc, p.sources = r.grpc, r.sources
	p.secrets, p.leafDNS = r.secrets, r.leafDNS
	if r.whole {
		p.tables, p.recipes = r.tables, r.recipes
	}
	snap := newSnapshot()
	snap.cert, snap.certErr = r.cert, r.certErr
	var prev *snapshot // the snapshot replaced, if it served resources
	if p.snap != nil && p.snap.closeErr == nil {
		prev = p.snap
	}
	g := index(r.grpc)
	for t := range numTypes {
		if r.same[t] && prev != nil {
			snap.types[t] = prev.types[t]
			continue
		}
		salt := ""
		if t == typeEndpoint {
			// EDS follows every cluster change, even when the endpoints
			// are the same: Envoy re-warms a changed cluster and waits for
			// its endpoints (App Mesh roadmap #192).
			salt = snap.types[typeCluster].version
		}
		if prev != nil && sameItems(prev.types[t].entries, r.items[t]) && (t != typeEndpoint || prev.types[typeCluster].version == salt) {
			// The same names and contents (and, for EDS, the same
			// clusters): the same version, without hashing it again.
			snap.types[t] = prev.types[t]
			continue
		}
		version := versionOfItems(r.items[t], salt)
		if prev != nil && prev.types[t].version == version {
			// Unchanged: share the type with the previous snapshot (never
			// modified); release below leaves its references alone.
			snap.types[t] = prev.types[t]
			continue
		}
		ts := &typeSnapshot{version: version}
		snap.types[t] = ts
		ts.changedAt = at
		var names *nameSet
		if prev != nil && prev.types[t].full != nil && sameNamesAs(prev.types[t].entries, r.items[t]) {
			names = prev.types[t].full.names // a route write's: the same tables
		} else {
			names = &nameSet{}
		}
		ts.full = &fullResponse{names: names}
		ts.entries = make([]*entry, len(r.items[t]))
		if len(r.items[t]) > smallType {
			ts.byName = make(map[string]*entry, len(r.items[t]))
		}
		for i, it := range r.items[t] {
			e := c.entries[it.sum]
			if e == nil {
				e = newEntry(t, it.name, it.sum, it.key, it.value)
				c.entries[it.sum] = e
			}
			if e.facts[g] == nil {
				e.facts[g] = it.facts
			}
			e.refs++
			ts.entries[i] = e
			if ts.byName != nil {
				ts.byName[e.name] = e
			}
		}
	}
	c.setDeps(id, p, r.deps, r.eps)
	p.snap = snap
	c.emit(update{id: id, snap: snap, keepErr: keepErr})
	if prev != nil {
		drops = append(drops, drop{prev, snap})
	}
	return drops
}

// sameNamesAs reports whether items name the same resources as entries,
// in the same order, whatever their contents.
func sameNamesAs(entries []*entry, items []item) bool {
	if len(entries) != len(items) {
		return false
	}
	for i, e := range entries {
		if e.name != items[i].name {
			return false
		}
	}
	return true
}

// sameItems reports whether items name the same resources with the same
// contents as entries, in the same order.
func sameItems(entries []*entry, items []item) bool {
	if len(entries) != len(items) {
		return false
	}
	for i, e := range entries {
		if e.name != items[i].name || e.sum != items[i].sum {
			return false
		}
	}
	return true
}

// release drops a snapshot's references to interned entries, except for
// the types it shares with next (nil: none).
func (c *machine) release(s, next *snapshot) {
	for t := range numTypes {
		if next != nil && next.types[t].version == s.types[t].version {
			continue // shared: install shares a type whose version is unchanged
		}
		for _, e := range s.types[t].entries {
			if e.refs--; e.refs == 0 {
				delete(c.entries, e.sum)
			}
		}
	}
}

// equalSlices is slices.Equal, without comparing a slice with itself
// element by element (the translator hands out an identity's kept
// dependency list again when the set is the same).
func equalSlices[T comparable](a, b []T) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.Equal(a, b)
}

// sameEndpointsOf reports whether eps are the nodes names of mesh k, in
// order.
func sameEndpointsOf(eps []nodeRef, k meshKey, names []string) bool {
	if len(eps) != len(names) {
		return false
	}
	for i, n := range names {
		if eps[i] != (nodeRef{k, n}) {
			return false
		}
	}
	return true
}
