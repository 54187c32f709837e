package server

import (
	"crypto/sha256"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// machine is the xDS server's state machine, in the shape of etcd raft's
// RawNode: it takes steps (a store snapshot, a batch of store changes, a
// stream attaching or detaching, a renewal time reached) and says what
// the streams must be told (Ready). It keeps every mesh's View, the Cloud
// Map index, which proxy identity depends on what, the interned
// resources and the issued leaves. It starts no goroutine, reads no clock
// and does no I/O: the runner (runner.go) owns the store watch, the
// streams, time, and the goroutines translations run on (parallel).
//
// A core is used by one goroutine at a time.
type machine struct {
	translate     TranslateFunc
	checkResource func(proto.Message, bool) (translate.Facts, error)
	// checkAssembled checks route tables in checkResource's stead, with
	// one HostChecks per batch; nil: checkResource does.
	checkAssembled func(*translate.HostChecks, *routev3.RouteConfiguration, bool) (translate.Facts, error)
	checkRefs      func(translate.Summary) error
	log            *slog.Logger
	metrics        *metrics
	// parallel calls fn(w, i) for i in [0, n) and returns when every call
	// has; w < workers(n) numbers the caller's worker. The runner's runs
	// them on goroutines; nil calls them in turn.
	parallel func(n int, fn func(w, i int))
	workers  func(n int) int
	// entropy is the randomness of leaf keys (crypto/rand's Reader).
	entropy io.Reader

	rev     store.Revision // of the store state the snapshots reflect
	meshes  map[meshKey]*meshState
	disc    Discovery // nil without Cloud Map
	byCMSvc map[CloudMapService]map[nodeRef]struct{}
	proxies map[translate.Identity]*proxy
	// The dependency index: which proxy identities read which resource,
	// and whose endpoints. Built from translate.Resources.Deps and
	// EndpointsOf.
	deps    map[appmesh.Ref]map[translate.Identity]struct{}
	epDeps  map[nodeRef]map[translate.Identity]struct{}
	entries map[[sha256.Size]byte]*entry // interned resources by content
	// kept carries each identity's ingress from batch to batch while its
	// node and mesh are unchanged (translate.Kept).
	kept *translate.Kept
	// keptSums holds the content sum of each kept message (kept.Holds)
	// met before: a message kept from batch to batch is marshalled and
	// hashed once. Read by the workers during a batch, extended after it.
	keptSums map[proto.Message][sha256.Size]byte

	// The CA the store holds (nil: none) and the leaves issued from it
	// (secrets.go).
	ca           *ca.State
	leaves       map[leafKey]*leafState
	trustDomain  string
	certLifetime time.Duration

	// out is what the steps since the last Ready produced, in order.
	out []update
	// skipped are the stored records the steps since the last Skipped
	// left out (mesh.go's set, Discovery.Apply), for the runner to log
	// and count.
	skipped []skippedRecord
	// results is recompute's, reused from batch to batch (cleared).
	results []result
	// scratch is Apply's and recompute's working memory.
	scratch scratch
}

// scratch is the working memory of one batch, cleared and reused from
// batch to batch. A write that affects every proxy would otherwise grow
// each of these anew: about 640 of the 1,620 bytes of garbage per proxy
// such a write made (BenchmarkRouteWriteEvery, docs/bench/xds.md round
// 17). Each keeps the size of the largest batch: a few bytes per proxy,
// and clearing the maps after a batch of 10,000 costs a small batch about
// 20 µs.
type scratch struct {
	affected, epOnly  map[translate.Identity]struct{}
	dirtyEps, changed map[nodeRef]struct{}
	tasks             []task
	drops             []drop
	// delivered is the slice the last Ready returned: its caller is done
	// with it at the next step, which appends to it again.
	delivered []update
	// workers are recompute's (worker); each ends its batch with done.
	workers []worker
}

// workersFor returns n workers' memory.
func (s *scratch) workersFor(n int) []worker {
	if len(s.workers) < n {
		s.workers = append(s.workers, make([]worker, n-len(s.workers))...)
	}
	return s.workers[:n]
}

// reset clears s for a new batch, making its maps on first use.
func (s *scratch) reset() {
	if s.affected == nil {
		s.affected, s.epOnly = map[translate.Identity]struct{}{}, map[translate.Identity]struct{}{}
		s.dirtyEps, s.changed = map[nodeRef]struct{}{}, map[nodeRef]struct{}{}
	}
	clear(s.affected)
	clear(s.epOnly)
	clear(s.dirtyEps)
	clear(s.changed)
	clear(s.tasks)
	s.tasks = s.tasks[:0]
}

// update is one thing the streams of an identity must learn, in the order
// the core produced them.
type update struct {
	id translate.Identity
	// snap, when set, is the identity's new snapshot; unless keepErr,
	// the identity's translation error is cleared.
	snap    *snapshot
	keepErr bool
	// err, when set, is a failed translation: the identity keeps its
	// snapshot and shows the error.
	err error
	// gone: the identity has no stream left; the streams' side forgets it.
	gone bool
}

// Ready is what the core's steps produced since the last call, for the
// streams (hub.deliver), and the store revision the snapshots now reflect.
// The updates are the caller's until the machine's next step, which
// reuses their slice.
func (c *machine) Ready() ([]update, store.Revision) {
	out := c.out
	c.out = nil
	if out != nil {
		c.scratch.delivered = out
	}
	return out, c.rev
}

// skippedRecord is a stored record the core (or readState) left out, and
// why.
type skippedRecord struct {
	key string
	err error
}

// skip notes a record left out, for Skipped.
func (c *machine) skip(key string, err error) {
	c.skipped = append(c.skipped, skippedRecord{key, err})
}

// Skipped returns the records the steps since the last call left out,
// in order; the slice is the caller's.
func (c *machine) Skipped() []skippedRecord {
	s := c.skipped
	c.skipped = nil
	return s
}

// emit appends u to what the next Ready returns, reusing the slice the
// last Ready returned (its caller is done with it: this is a later step).
func (c *machine) emit(u ...update) {
	if c.out == nil && c.scratch.delivered != nil {
		clear(c.scratch.delivered)
		c.out, c.scratch.delivered = c.scratch.delivered[:0], nil
	}
	c.out = append(c.out, u...)
}

// state is one store snapshot as the core loads it: the App Mesh
// resources, the CA, and the Cloud Map index. The runner reads it from
// the store (readState).
type state struct {
	appMesh []store.KV
	ca      *ca.State
	disc    Discovery
}

func newMachine(opts *Options, m *metrics, entropy io.Reader) *machine {
	td := opts.TrustDomain
	if td == "" {
		td = ca.DefaultTrustDomain
	}
	lifetime := opts.CertLifetime
	if lifetime == 0 {
		lifetime = ca.DefaultLeafLifetime
	}
	return &machine{
		translate:      opts.Translate,
		checkResource:  opts.CheckResource,
		checkAssembled: opts.CheckAssembled,
		checkRefs:      opts.CheckRefs,
		log:            opts.Log,
		metrics:        m,
		entropy:        entropy,
		workers:        func(int) int { return 1 },
		leaves:         map[leafKey]*leafState{},
		trustDomain:    td,
		certLifetime:   lifetime,
		meshes:         map[meshKey]*meshState{},
		byCMSvc:        map[CloudMapService]map[nodeRef]struct{}{},
		proxies:        map[translate.Identity]*proxy{},
		deps:           map[appmesh.Ref]map[translate.Identity]struct{}{},
		epDeps:         map[nodeRef]map[translate.Identity]struct{}{},
		entries:        map[[sha256.Size]byte]*entry{},
		kept:           translate.NewKept(),
		keptSums:       map[proto.Message][sha256.Size]byte{},
	}
}

// run calls fn for every i in [0, n) through c.parallel.
func (c *machine) run(n int, fn func(w, i int)) {
	if c.parallel == nil || n < 2 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	c.parallel(n, fn)
}

// proxy is one identity with at least one stream.
type proxy struct {
	refs int // attached streams
	snap *snapshot
	deps []appmesh.Ref
	eps  []nodeRef
	err  string // last translation error logged, to log each once
	// grpc and sources are translate.ForGRPC and EndpointSources of the
	// translation snap was made from.
	grpc    bool
	sources []translate.EndpointSource
	// secrets and leafDNS are translate.Resources.Secrets and
	// LeafDNSNames of that translation.
	secrets []translate.SecretRef
	leafDNS []string
	// tables are the recipes of snap's route tables, in order, when
	// recipes (hostsonly.go).
	tables  []*tableRecipe
	recipes bool
}

// Reset rebuilds every mesh from a store snapshot at revision rev and
// recomputes every attached proxy; versions are content hashes, so
// proxies whose configuration did not change are sent nothing. now is
// the time of the step (leaf issuance, and the time the pushes it causes
// are measured from).
func (c *machine) Reset(s state, rev store.Revision, now time.Time) {
	meshes := map[meshKey]*meshState{}
	for _, kv := range s.appMesh {
		ref, ok := appmesh.ParseKey(kv.Key)
		if !ok {
			continue
		}
		k := meshKey{ref.Owner, ref.Mesh}
		ms := meshes[k]
		if ms == nil {
			ms = newMeshState()
			meshes[k] = ms
		}
		if err := ms.set(ref, kv.Value); err != nil {
			c.skip(kv.Key, err)
		}
	}
	c.meshes, c.disc, c.ca = meshes, s.disc, s.ca
	c.byCMSvc = map[CloudMapService]map[nodeRef]struct{}{}
	for k, ms := range meshes {
		for name, vn := range ms.view.VirtualNodes {
			c.indexNode(nodeRef{k, name}, ms, vn)
			c.refreshEndpoints(nodeRef{k, name}, ms)
		}
	}
	ids := make([]translate.Identity, 0, len(c.proxies))
	for id := range c.proxies {
		ids = append(ids, id)
	}
	c.recompute(whole(ids), now, now)
	c.rev = rev
	c.log.Info("xds: store loaded", "revision", rev, "meshes", len(meshes))
}

// Apply follows a batch of store changes, in revision order, and
// recomputes the proxies they affect. at is the commit time of the
// first, which the pushes are measured from; now the time of the step.
func (c *machine) Apply(batch []store.Change, at, now time.Time) {
	if len(batch) == 0 {
		return
	}
	defer func() { c.rev = batch[len(batch)-1].Revision }()
	c.scratch.reset()
	affected, dirtyEps := c.scratch.affected, c.scratch.dirtyEps
	caChanged := false
	routes := routeChanges{hostsOnly: true, timeouts: true, proxyless: true}
	for _, ch := range batch {
		var cm []store.Event
		for _, ev := range ch.Events {
			switch {
			case strings.HasPrefix(ev.KV.Key, ca.KeyPrefix):
				caChanged = c.applyCA(ev) || caChanged
				routes.hostsOnly = false
			case strings.HasPrefix(ev.KV.Key, appmesh.KeyPrefix):
				c.applyAppMesh(ev, affected, dirtyEps, &routes)
			case strings.HasPrefix(ev.KV.Key, cloudmap.KeyPrefix):
				cm = append(cm, ev)
				routes.hostsOnly = false
			}
		}
		if len(cm) == 0 || c.disc == nil {
			continue
		}
		next, changed := c.disc.Apply(store.Change{Revision: ch.Revision, Events: cm}, c.skip)
		c.disc = next
		for _, svc := range changed {
			for n := range c.byCMSvc[svc] {
				dirtyEps[n] = struct{}{}
			}
		}
	}
	// A proxy that only reads the changed endpoints gets only its
	// assignments rebuilt (translate.EndpointSources), unless its last
	// translation failed: then it is translated whole.
	changed, epOnly := c.scratch.changed, c.scratch.epOnly
	for n := range dirtyEps {
		if !c.refreshEndpoints(n, c.meshes[n.mesh]) {
			continue
		}
		changed[n] = struct{}{}
		for id := range c.epDeps[n] {
			if _, whole := affected[id]; whole {
				continue
			}
			if p := c.proxies[id]; p != nil && p.snap != nil && p.snap.closeErr == nil && p.err == "" {
				epOnly[id] = struct{}{}
			} else {
				affected[id] = struct{}{}
			}
		}
	}
	tasks := slices.Grow(c.scratch.tasks, len(affected)+len(epOnly))
	hostsOnly := routes.hostsOnly && routes.any && len(dirtyEps) == 0 && !caChanged
	for id := range affected {
		tasks = append(tasks, task{id: id, routes: hostsOnly && c.hostsOnly(id, routes)})
	}
	for id := range epOnly {
		tasks = append(tasks, task{id: id, eps: changed})
	}
	if caChanged {
		// Every task rebuilds its secrets; the other identities that
		// serve secrets rebuild them alone.
		for _, id := range c.secretUsers() {
			_, a := affected[id]
			_, e := epOnly[id]
			if !a && !e {
				tasks = append(tasks, task{id: id, secretsOnly: true})
			}
		}
	}
	c.scratch.tasks = tasks
	c.recompute(tasks, at, now)
}

// applyAppMesh applies one App Mesh event to its mesh and collects the
// proxies that read the resource; routes learns what changed.
func (c *machine) applyAppMesh(ev store.Event, affected map[translate.Identity]struct{}, dirtyEps map[nodeRef]struct{}, routes *routeChanges) {
	ref, ok := appmesh.ParseKey(ev.KV.Key)
	if !ok {
		return // bookkeeping (tags, tokens)
	}
	k := meshKey{ref.Owner, ref.Mesh}
	ms := c.meshes[k]
	if ms == nil {
		ms = newMeshState()
		c.meshes[k] = ms
	}
	var value []byte
	if ev.Type == store.EventPut {
		value = ev.KV.Value
	}
	var oldRoute *appmesh.RouteData
	if ref.Kind == appmesh.KindRoute {
		oldRoute = ms.routes[ref.Parent][ref.Name]
	}
	if err := ms.set(ref, value); err != nil {
		// Left out, as if deleted: its readers are recomputed without it.
		c.skip(ev.KV.Key, err)
		routes.hostsOnly = false
	} else if ref.Kind == appmesh.KindRoute {
		routes.note(ref, oldRoute, ms.routes[ref.Parent][ref.Name])
	} else {
		routes.hostsOnly = false
	}
	// Proxies that read this resource, and those that read every resource
	// of its kind (and parent): translate.Resources.Deps holds such a Ref
	// with an empty Name, e.g. "the routes of router r".
	wild := ref
	wild.Name = ""
	for _, r := range []appmesh.Ref{ref, wild} {
		for id := range c.deps[r] {
			affected[id] = struct{}{}
		}
	}
	switch ref.Kind {
	case appmesh.KindVirtualNode:
		n := nodeRef{k, ref.Name}
		c.indexNode(n, ms, ms.view.VirtualNodes[ref.Name])
		dirtyEps[n] = struct{}{}
	case appmesh.KindMesh:
		if ms.view.Mesh == nil {
			// A deleted mesh: its proxies must learn it even if the
			// translator did not list the mesh as a dependency.
			for id := range c.proxies {
				if id.MeshOwner == k.owner && id.Mesh == k.mesh {
					affected[id] = struct{}{}
				}
			}
			if len(ms.view.VirtualNodes)+len(ms.view.VirtualGateways)+len(ms.view.VirtualServices)+len(ms.view.VirtualRouters) == 0 {
				delete(c.meshes, k)
			}
		}
	}
}

// indexNode records which Cloud Map service a node's endpoints come from.
func (c *machine) indexNode(n nodeRef, ms *meshState, vn *appmesh.VirtualNodeData) {
	if old, ok := ms.nodeServices[n.name]; ok {
		delete(c.byCMSvc[old.svc], n)
		if len(c.byCMSvc[old.svc]) == 0 {
			delete(c.byCMSvc, old.svc)
		}
		delete(ms.nodeServices, n.name)
	}
	sel, ok := selector(vn)
	if !ok {
		return
	}
	ms.nodeServices[n.name] = sel
	set := c.byCMSvc[sel.svc]
	if set == nil {
		set = map[nodeRef]struct{}{}
		c.byCMSvc[sel.svc] = set
	}
	set[n] = struct{}{}
}

// refreshEndpoints re-reads a node's endpoints and reports whether they
// changed.
func (c *machine) refreshEndpoints(n nodeRef, ms *meshState) bool {
	if ms == nil {
		return false
	}
	var eps []translate.Endpoint
	if sel, ok := ms.nodeServices[n.name]; ok && c.disc != nil {
		eps = c.disc.Endpoints(sel.svc.Namespace, sel.svc.Service, sel.attrs)
	}
	old, had := ms.view.Endpoints[n.name]
	if eps == nil {
		delete(ms.view.Endpoints, n.name)
	} else {
		ms.view.Endpoints[n.name] = eps
	}
	return had != (eps != nil) || !slices.Equal(old, eps)
}

// Attach counts a new stream of each identity, translating together
// those that need it, and returns each one's error: a gRPC status
// NotFound when its mesh or resource does not exist.
func (c *machine) Attach(ids []translate.Identity, now time.Time) []error {
	errs := make([]error, len(ids))
	var fresh []translate.Identity
	seen := map[translate.Identity]bool{} // replicas in one batch: translate once
	for i, id := range ids {
		var f bool
		f, errs[i] = c.count(id)
		if f && !seen[id] {
			seen[id] = true
			fresh = append(fresh, id)
		}
	}
	c.recompute(whole(fresh), time.Time{}, now)
	return errs
}

// count counts a new stream of id, or fails with NotFound when id's mesh or
// resource does not exist. fresh says that id has no snapshot yet.
func (c *machine) count(id translate.Identity) (fresh bool, err error) {
	ms := c.meshes[meshKey{id.MeshOwner, id.Mesh}]
	if ms == nil || ms.view.Mesh == nil {
		return false, status.Errorf(codes.NotFound, "mesh %s (owner %s) not found", id.Mesh, id.MeshOwner)
	}
	if !ms.exists(id) {
		return false, status.Errorf(codes.NotFound, "%s %s not found in mesh %s", id.Kind, id.Name, id.Mesh)
	}
	p := c.proxies[id]
	if p == nil {
		p = &proxy{}
		c.proxies[id] = p
	}
	p.refs++
	return p.snap == nil || p.snap.closeErr != nil, nil
}

// Detach uncounts a stream of id; the last one takes the identity's
// snapshot and dependencies with it.
func (c *machine) Detach(id translate.Identity) {
	p := c.proxies[id]
	if p == nil {
		return
	}
	if p.refs--; p.refs > 0 {
		return
	}
	c.setDeps(id, p, nil, nil)
	c.useLeaf(id, false)
	if p.snap != nil {
		c.release(p.snap, nil)
	}
	delete(c.proxies, id)
	c.kept.Forget(id)
	c.emit(update{id: id, gone: true})
}

// setDeps replaces an identity's entries in the dependency index.
func (c *machine) setDeps(id translate.Identity, p *proxy, deps []appmesh.Ref, eps []nodeRef) {
	if equalSlices(p.deps, deps) && equalSlices(p.eps, eps) {
		return // most writes change no dependency
	}
	for _, d := range p.deps {
		if set := c.deps[d]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(c.deps, d)
			}
		}
	}
	for _, n := range p.eps {
		if set := c.epDeps[n]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(c.epDeps, n)
			}
		}
	}
	p.deps, p.eps = deps, eps
	for _, d := range deps {
		set := c.deps[d]
		if set == nil {
			set = map[translate.Identity]struct{}{}
			c.deps[d] = set
		}
		set[id] = struct{}{}
	}
	for _, n := range eps {
		set := c.epDeps[n]
		if set == nil {
			set = map[translate.Identity]struct{}{}
			c.epDeps[n] = set
		}
		set[id] = struct{}{}
	}
}
