package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// loop is the push loop: the one goroutine that follows the store, keeps
// every mesh's View, knows which proxy depends on what, translates the
// affected proxies and hands their snapshots to the hub.
//
// Everything below the channels is owned by run's goroutine.
type loop struct {
	st            store.Store
	loadDiscovery LoadDiscovery
	translate     TranslateFunc
	checkResource func(proto.Message, bool) (translate.Facts, error)
	checkRefs     func(translate.Summary) error
	hub           *hub
	log           *slog.Logger
	metrics       *metrics

	attachCh chan attachReq          // from stream goroutines; run reads
	detachCh chan translate.Identity // from stream goroutines; run reads
	done     chan struct{}           // closed when run returns
	// applied is the store revision the proxies' snapshots reflect;
	// written by run, read by anyone.
	applied atomic.Int64

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

	// The CA the store holds (nil: none), the leaves issued from it, and
	// the renewal timer (secrets.go).
	ca           *ca.State
	leaves       map[leafKey]*leafState
	clock        Clock
	trustDomain  string
	certLifetime time.Duration
	renewC       <-chan time.Time // nil: no leaf to renew
	renewAt      time.Time        // what renewC is armed for
}

type attachReq struct {
	id    translate.Identity
	reply chan error // buffered: run never waits on the requester
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
}

func newLoop(opts *Options, c *hub, m *metrics) *loop {
	clock := opts.Clock
	if clock == nil {
		clock = systemClock{}
	}
	td := opts.TrustDomain
	if td == "" {
		td = ca.DefaultTrustDomain
	}
	lifetime := opts.CertLifetime
	if lifetime == 0 {
		lifetime = ca.DefaultLeafLifetime
	}
	return &loop{
		leaves:        map[leafKey]*leafState{},
		clock:         clock,
		trustDomain:   td,
		certLifetime:  lifetime,
		st:            opts.Store,
		loadDiscovery: opts.LoadDiscovery,
		translate:     opts.Translate,
		checkResource: opts.CheckResource,
		checkRefs:     opts.CheckRefs,
		hub:           c,
		log:           opts.Log,
		metrics:       m,
		attachCh:      make(chan attachReq),
		detachCh:      make(chan translate.Identity),
		done:          make(chan struct{}),
		proxies:       map[translate.Identity]*proxy{},
		deps:          map[appmesh.Ref]map[translate.Identity]struct{}{},
		epDeps:        map[nodeRef]map[translate.Identity]struct{}{},
		entries:       map[[sha256.Size]byte]*entry{},
	}
}

// requestAttach is called by a stream goroutine; see hub.attach.
func (l *loop) requestAttach(ctx context.Context, id translate.Identity) error {
	r := attachReq{id: id, reply: make(chan error, 1)}
	select {
	case l.attachCh <- r:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-l.done:
		return status.Error(codes.Unavailable, "xDS server is shutting down")
	}
	// Once run has the request it counts the stream: wait for the answer
	// even if ctx ends, so that the count and the stream agree.
	select {
	case err := <-r.reply:
		return err
	case <-l.done:
		return status.Error(codes.Unavailable, "xDS server is shutting down")
	}
}

// requestDetach is called by a stream goroutine when an attached stream ends.
func (l *loop) requestDetach(id translate.Identity) {
	select {
	case l.detachCh <- id:
	case <-l.done:
	}
}

// run follows the store until ctx ends. After a lost watch (compaction,
// or a watcher that fell behind) it reads a fresh snapshot and carries on.
func (l *loop) run(ctx context.Context) error {
	defer close(l.done)
	for {
		rev, err := l.resync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ch, err := l.st.Watch(ctx, "", rev)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch store: %w", err)
		}
		l.follow(ctx, ch)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("store watch ended; reading a fresh snapshot")
	}
}

// follow applies changes as they come, in batches of whatever is already
// queued (no timer: a lone write is pushed at once), and serves attach and
// detach requests in between. It returns when ctx ends or ch closes.
func (l *loop) follow(ctx context.Context, ch <-chan store.Change) {
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-ch:
			if !ok {
				return
			}
			// Measure from the commit: the write is what the user waits on.
			at := c.Committed
			if at.IsZero() {
				at = time.Now()
			}
			batch := []store.Change{c}
			closed := false
		drain:
			for {
				select {
				case c, ok := <-ch:
					if !ok {
						closed = true
						break drain
					}
					batch = append(batch, c)
				default:
					break drain
				}
			}
			start := time.Now()
			l.apply(batch, at)
			l.metrics.recompute.Observe(time.Since(start).Seconds())
			l.applied.Store(int64(batch[len(batch)-1].Revision))
			l.hub.signal()
			if closed {
				return
			}
		case r := <-l.attachCh:
			// Take every attach already waiting: after a restart, proxies
			// reconnect by the thousand, and a batch translates in parallel.
			batch := []attachReq{r}
		more:
			for len(batch) < 1024 {
				select {
				case r := <-l.attachCh:
					batch = append(batch, r)
				default:
					break more
				}
			}
			l.attachBatch(batch)
		case id := <-l.detachCh:
			l.detach(id)
		case <-l.renewC:
			l.renew()
		}
	}
}

// resync rebuilds every mesh from a store snapshot and recomputes every
// attached proxy; versions are content hashes, so proxies whose
// configuration did not change are sent nothing.
func (l *loop) resync(ctx context.Context) (store.Revision, error) {
	meshes := map[meshKey]*meshState{}
	var disc Discovery
	var authority *ca.State
	rev, err := l.st.View(ctx, func(tx store.Tx) error {
		var err error
		if authority, err = loadCA(tx); err != nil {
			l.log.Error("ignoring undecodable CA state", "error", err)
		}
		kvs, err := tx.List(appmesh.KeyPrefix, "", 0)
		if err != nil {
			return err
		}
		if l.loadDiscovery != nil {
			// In the same snapshot as App Mesh, so that following the
			// watch from its revision misses nothing.
			if disc, err = l.loadDiscovery(tx); err != nil {
				return fmt.Errorf("load cloud map: %w", err)
			}
		}
		for _, kv := range kvs {
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
				l.log.Error("skipping undecodable resource", "key", kv.Key, "error", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read store: %w", err)
	}
	l.meshes, l.disc, l.ca = meshes, disc, authority
	l.byCMSvc = map[CloudMapService]map[nodeRef]struct{}{}
	for k, ms := range meshes {
		for name, vn := range ms.view.VirtualNodes {
			l.indexNode(nodeRef{k, name}, ms, vn)
			l.refreshEndpoints(nodeRef{k, name}, ms)
		}
	}
	ids := make([]translate.Identity, 0, len(l.proxies))
	for id := range l.proxies {
		ids = append(ids, id)
	}
	l.recompute(whole(ids), time.Now())
	l.applied.Store(int64(rev))
	l.hub.signal()
	l.log.Info("xds: store loaded", "revision", rev, "meshes", len(meshes))
	return rev, nil
}

// apply follows a batch of changes and pushes to the proxies they affect.
func (l *loop) apply(batch []store.Change, at time.Time) {
	affected := map[translate.Identity]struct{}{}
	dirtyEps := map[nodeRef]struct{}{}
	caChanged := false
	for _, c := range batch {
		var cm []store.Event
		for _, ev := range c.Events {
			switch {
			case strings.HasPrefix(ev.KV.Key, ca.KeyPrefix):
				caChanged = l.applyCA(ev) || caChanged
			case strings.HasPrefix(ev.KV.Key, appmesh.KeyPrefix):
				l.applyAppMesh(ev, affected, dirtyEps)
			case strings.HasPrefix(ev.KV.Key, cloudmap.KeyPrefix):
				cm = append(cm, ev)
			}
		}
		if len(cm) == 0 || l.disc == nil {
			continue
		}
		next, changed := l.disc.Apply(store.Change{Revision: c.Revision, Events: cm})
		l.disc = next
		for _, svc := range changed {
			for n := range l.byCMSvc[svc] {
				dirtyEps[n] = struct{}{}
			}
		}
	}
	// A proxy that only reads the changed endpoints gets only its
	// assignments rebuilt (translate.EndpointSources), unless its last
	// translation failed: then it is translated whole.
	changed := map[nodeRef]struct{}{}
	epOnly := map[translate.Identity]struct{}{}
	for n := range dirtyEps {
		if !l.refreshEndpoints(n, l.meshes[n.mesh]) {
			continue
		}
		changed[n] = struct{}{}
		for id := range l.epDeps[n] {
			if _, whole := affected[id]; whole {
				continue
			}
			if p := l.proxies[id]; p != nil && p.snap != nil && p.snap.closeErr == nil && p.err == "" {
				epOnly[id] = struct{}{}
			} else {
				affected[id] = struct{}{}
			}
		}
	}
	tasks := make([]task, 0, len(affected)+len(epOnly))
	for id := range affected {
		tasks = append(tasks, task{id: id})
	}
	for id := range epOnly {
		tasks = append(tasks, task{id: id, eps: changed})
	}
	if caChanged {
		// Every task rebuilds its secrets; the other identities that
		// serve secrets rebuild them alone.
		for _, id := range l.secretUsers() {
			_, a := affected[id]
			_, e := epOnly[id]
			if !a && !e {
				tasks = append(tasks, task{id: id, secretsOnly: true})
			}
		}
	}
	l.recompute(tasks, at)
}

// applyAppMesh applies one App Mesh event to its mesh and collects the
// proxies that read the resource.
func (l *loop) applyAppMesh(ev store.Event, affected map[translate.Identity]struct{}, dirtyEps map[nodeRef]struct{}) {
	ref, ok := appmesh.ParseKey(ev.KV.Key)
	if !ok {
		return // bookkeeping (tags, tokens)
	}
	k := meshKey{ref.Owner, ref.Mesh}
	ms := l.meshes[k]
	if ms == nil {
		ms = newMeshState()
		l.meshes[k] = ms
	}
	var value []byte
	if ev.Type == store.EventPut {
		value = ev.KV.Value
	}
	if err := ms.set(ref, value); err != nil {
		l.log.Error("skipping undecodable resource", "key", ev.KV.Key, "error", err)
		return
	}
	// Proxies that read this resource, and those that read every resource
	// of its kind (and parent): translate.Resources.Deps holds such a Ref
	// with an empty Name, e.g. "the routes of router r".
	wild := ref
	wild.Name = ""
	for _, r := range []appmesh.Ref{ref, wild} {
		for id := range l.deps[r] {
			affected[id] = struct{}{}
		}
	}
	switch ref.Kind {
	case appmesh.KindVirtualNode:
		n := nodeRef{k, ref.Name}
		l.indexNode(n, ms, ms.view.VirtualNodes[ref.Name])
		dirtyEps[n] = struct{}{}
	case appmesh.KindMesh:
		if ms.view.Mesh == nil {
			// A deleted mesh: its proxies must learn it even if the
			// translator did not list the mesh as a dependency.
			for id := range l.proxies {
				if id.MeshOwner == k.owner && id.Mesh == k.mesh {
					affected[id] = struct{}{}
				}
			}
			if len(ms.view.VirtualNodes)+len(ms.view.VirtualGateways)+len(ms.view.VirtualServices)+len(ms.view.VirtualRouters) == 0 {
				delete(l.meshes, k)
			}
		}
	}
}

// indexNode records which Cloud Map service a node's endpoints come from.
func (l *loop) indexNode(n nodeRef, ms *meshState, vn *appmesh.VirtualNodeData) {
	if old, ok := ms.nodeServices[n.name]; ok {
		delete(l.byCMSvc[old.svc], n)
		if len(l.byCMSvc[old.svc]) == 0 {
			delete(l.byCMSvc, old.svc)
		}
		delete(ms.nodeServices, n.name)
	}
	sel, ok := selector(vn)
	if !ok {
		return
	}
	ms.nodeServices[n.name] = sel
	set := l.byCMSvc[sel.svc]
	if set == nil {
		set = map[nodeRef]struct{}{}
		l.byCMSvc[sel.svc] = set
	}
	set[n] = struct{}{}
}

// refreshEndpoints re-reads a node's endpoints and reports whether they
// changed.
func (l *loop) refreshEndpoints(n nodeRef, ms *meshState) bool {
	if ms == nil {
		return false
	}
	var eps []translate.Endpoint
	if sel, ok := ms.nodeServices[n.name]; ok && l.disc != nil {
		eps = l.disc.Endpoints(sel.svc.Namespace, sel.svc.Service, sel.attrs)
	}
	old, had := ms.view.Endpoints[n.name]
	if eps == nil {
		delete(ms.view.Endpoints, n.name)
	} else {
		ms.view.Endpoints[n.name] = eps
	}
	return had != (eps != nil) || !slices.Equal(old, eps)
}

// attachBatch attaches each request's identity, translating those that
// need it together, and answers every request.
func (l *loop) attachBatch(batch []attachReq) {
	errs := make([]error, len(batch))
	var ids []translate.Identity
	seen := map[translate.Identity]bool{} // replicas in one batch: translate once
	for i, r := range batch {
		var fresh bool
		fresh, errs[i] = l.count(r.id)
		if fresh && !seen[r.id] {
			seen[r.id] = true
			ids = append(ids, r.id)
		}
	}
	l.recompute(whole(ids), time.Time{})
	for i, r := range batch {
		r.reply <- errs[i]
	}
}

// attach counts a new stream of id, translating id if it is the first.
func (l *loop) attach(id translate.Identity) error {
	fresh, err := l.count(id)
	if fresh {
		l.recompute([]task{{id: id}}, time.Time{})
	}
	return err
}

// count counts a new stream of id, or fails with NotFound when id's mesh or
// resource does not exist. fresh says that id has no snapshot yet.
func (l *loop) count(id translate.Identity) (fresh bool, err error) {
	ms := l.meshes[meshKey{id.MeshOwner, id.Mesh}]
	if ms == nil || ms.view.Mesh == nil {
		return false, status.Errorf(codes.NotFound, "mesh %s (owner %s) not found", id.Mesh, id.MeshOwner)
	}
	if !ms.exists(id) {
		return false, status.Errorf(codes.NotFound, "%s %s not found in mesh %s", id.Kind, id.Name, id.Mesh)
	}
	p := l.proxies[id]
	if p == nil {
		p = &proxy{}
		l.proxies[id] = p
	}
	p.refs++
	return p.snap == nil || p.snap.closeErr != nil, nil
}

// detach uncounts a stream; the last one takes the identity's snapshot and
// dependencies with it.
func (l *loop) detach(id translate.Identity) {
	p := l.proxies[id]
	if p == nil {
		return
	}
	if p.refs--; p.refs > 0 {
		return
	}
	l.setDeps(id, p, nil, nil)
	l.useLeaf(id, false)
	if p.snap != nil {
		l.release(p.snap, nil)
	}
	delete(l.proxies, id)
	l.hub.dropIdentity(id)
}

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
	// translated; secretsOnly: only the secrets are rebuilt.
	endpointsOnly bool
	secretsOnly   bool
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

// checkJob is one translate.CheckResource call, shared by every item
// with the same content and gRPC flag.
type checkJob struct {
	msg   proto.Message
	grpc  bool
	facts translate.Facts
	err   error
}

type checkKey struct {
	sum  [sha256.Size]byte
	grpc bool
}

// recompute runs the tasks and installs their snapshots. The
// translations run in parallel (they only read the views, the proxies and
// the interned entries), then the checks of the resources not seen
// before, in parallel too; installing is sequential. at is the commit
// time of the writes that caused it, zero when none did (a proxy
// connecting).
func (l *loop) recompute(tasks []task, at time.Time) {
	if len(tasks) == 0 {
		return
	}
	results := make([]result, len(tasks))
	built := &assignments{m: map[assignmentKey]*assignment{}}
	sh := &shared{memo: translate.NewMemo(), sums: map[proto.Message]marshalled{}}
	// One marshalling buffer per worker: most resources are already
	// interned and need no bytes of their own.
	bufs := make([][]byte, workers(len(tasks)))
	parallel(len(tasks), func(w, i int) {
		if tasks[i].secretsOnly {
			results[i] = l.sameResources(tasks[i].id)
		} else if tasks[i].eps != nil {
			results[i] = l.computeEndpoints(tasks[i].id, tasks[i].eps, built, sh, &bufs[w])
		} else {
			results[i] = l.compute(tasks[i].id, sh, &bufs[w])
		}
	})
	l.metrics.sharedEgress.Add(float64(sh.memo.Shared()))
	l.check(results)
	now := l.clock.Now()
	l.preissue(tasks, results, now)
	for i := range results {
		if r := &results[i]; r.err == nil && r.closeErr == nil {
			l.buildSecrets(tasks[i].id, r, now)
		}
	}
	// References are dropped only once every result is installed: a
	// result carries no bytes for a resource that was interned when it
	// was computed, so no entry may disappear before the whole batch
	// holds its references.
	var drops []drop
	for i, t := range tasks {
		drops = l.install(t.id, &results[i], at, drops)
	}
	for _, d := range drops {
		l.release(d.s, d.next)
	}
	l.metrics.interned.Set(float64(len(l.entries)))
	l.armRenewal()
}

// workers is how many goroutines parallel runs for n calls.
func workers(n int) int { return max(min(runtime.GOMAXPROCS(0), n), 1) }

// parallel calls fn(w, 0) ... fn(w, n-1) on workers(n) goroutines, w
// being the goroutine's number, and returns when every call has.
func parallel(n int, fn func(w, i int)) {
	nw := workers(n)
	if nw == 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := range nw {
		wg.Go(func() { // ends when next is closed below
			for i := range next {
				fn(w, i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// shared is what the translations of one batch share: the translator's
// Memo, and the marshalled form of each message it handed to several
// identities (the same pointer), so that each is marshalled and hashed
// once.
type shared struct {
	memo *translate.Memo
	mu   sync.Mutex
	sums map[proto.Message]marshalled
}

type marshalled struct {
	sum   [sha256.Size]byte
	value []byte // nil when the message was already interned
}

// compute translates one identity and marshals its resources, in buf
// (the worker's, grown as needed). It must not write to the loop's state:
// it runs on a worker.
func (l *loop) compute(id translate.Identity, sh *shared, buf *[]byte) (r result) {
	// A translator bug met by one mesh's input must not take the control
	// plane down: the proxy keeps its configuration and shows the error.
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("translate panicked: %v", p)}
		}
	}()
	k := meshKey{id.MeshOwner, id.Mesh}
	ms := l.meshes[k]
	if !ms.exists(id) {
		r.closeErr = status.Errorf(codes.NotFound, "%s %s in mesh %s was deleted", id.Kind, id.Name, id.Mesh)
		return r
	}
	res, err := l.translate(ms.view, id, sh.memo)
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
	lists := [numTypes][]proto.Message{
		typeCluster:  make([]proto.Message, 0, len(res.Clusters)),
		typeEndpoint: make([]proto.Message, 0, len(res.Endpoints)),
		typeListener: make([]proto.Message, 0, len(res.Listeners)),
		typeRoute:    make([]proto.Message, 0, len(res.Routes)),
	}
	for _, m := range res.Clusters {
		lists[typeCluster] = append(lists[typeCluster], m)
	}
	for _, m := range res.Endpoints {
		lists[typeEndpoint] = append(lists[typeEndpoint], m)
	}
	for _, m := range res.Listeners {
		lists[typeListener] = append(lists[typeListener], m)
	}
	for _, m := range res.Routes {
		lists[typeRoute] = append(lists[typeRoute], m)
	}
	for t, list := range lists {
		r.items[t] = make([]item, 0, len(list))
		for _, m := range list {
			sh.mu.Lock()
			mm, ok := sh.sums[m]
			sh.mu.Unlock()
			if !ok {
				// Deterministic, so that equal resources hash equal.
				b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend((*buf)[:0], m)
				if err != nil {
					r.err = fmt.Errorf("marshal %s: %w", typeName(t), err)
					return r
				}
				*buf = b
				mm.sum = sha256.Sum256(b)
				if l.entries[mm.sum] == nil {
					mm.value = slices.Clone(b)
				}
				sh.mu.Lock()
				sh.sums[m] = mm
				sh.mu.Unlock()
			}
			it := item{name: cache.GetResourceName(m), sum: mm.sum, msg: m}
			if e := l.entries[it.sum]; e != nil {
				it.facts = e.facts[index(r.grpc)]
			} else {
				it.value = mm.value
			}
			r.items[t] = append(r.items[t], it)
		}
		slices.SortFunc(r.items[t], func(a, b item) int { return strings.Compare(a.name, b.name) })
	}
	// The identity's own resource and its mesh are dependencies whatever
	// the translator reports: their deletion must reach the proxy.
	r.deps = append(slices.Clone(res.Deps),
		appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindMesh, Name: id.Mesh},
		appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: id.Kind, Name: id.Name})
	for _, n := range res.EndpointsOf {
		r.eps = append(r.eps, nodeRef{k, n})
	}
	return r
}

// computeEndpoints is compute for an identity whose Cloud Map endpoints
// alone changed, on the nodes in changed: its snapshot's resources, with
// the assignments built from those nodes' endpoints rebuilt
// (translate.LoadAssignment). It must not write to the loop's state: it
// runs on a worker.
func (l *loop) computeEndpoints(id translate.Identity, changed map[nodeRef]struct{}, built *assignments, sh *shared, buf *[]byte) (r result) {
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("build endpoints panicked: %v", p)}
		}
	}()
	k := meshKey{id.MeshOwner, id.Mesh}
	p := l.proxies[id]
	for _, n := range p.eps {
		_, dirty := changed[n]
		if dirty && !slices.ContainsFunc(p.sources, func(s translate.EndpointSource) bool { return s.Node == n.name }) {
			// The translator read these endpoints but did not say where
			// they went: only a whole translation can follow them.
			return l.compute(id, sh, buf)
		}
	}
	r = result{grpc: p.grpc, deps: p.deps, eps: p.eps, sources: p.sources, secrets: p.secrets, leafDNS: p.leafDNS, endpointsOnly: true}
	g := index(p.grpc)
	for t := range numTypes {
		if t == typeSecret {
			continue // rebuilt by buildSecrets
		}
		old := p.snap.types[t].entries
		r.items[t] = make([]item, len(old))
		for i, e := range old {
			if l.checkResource != nil && e.facts[g] == nil {
				// Not checked as this proxy's kind (validation was off
				// when it was interned): translate whole, which checks.
				return l.compute(id, sh, buf)
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
		a := built.get(k, src, l.meshes[k].view.Endpoints[src.Node])
		if a.err != nil {
			r.err = a.err
			return r
		}
		*it = item{name: it.name, sum: a.sum, msg: a.msg}
		if e := l.entries[it.sum]; e != nil {
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

// check validates the results: translate.CheckResource, the costly part,
// once per distinct resource (by content and gRPC flag) that no interned
// entry has been checked as, in parallel; then translate.CheckRefs on each
// result. A result that fails gets err and is not installed.
func (l *loop) check(results []result) {
	if l.checkResource == nil {
		return
	}
	jobs := map[checkKey]*checkJob{}
	var list []*checkJob
	for i := range results {
		r := &results[i]
		if r.err != nil || r.closeErr != nil || r.secretsOnly {
			continue
		}
		for t := range numTypes {
			if t == typeSecret {
				continue // built after the checks, from the CA
			}
			for j := range r.items[t] {
				it := &r.items[t][j]
				if it.facts != nil {
					continue
				}
				k := checkKey{it.sum, r.grpc}
				job := jobs[k]
				if job == nil {
					job = &checkJob{msg: it.msg, grpc: r.grpc}
					jobs[k] = job
					list = append(list, job)
				}
				it.check = job
			}
		}
	}
	parallel(len(list), func(_, i int) { list[i].run(l.checkResource) })
	l.metrics.checks.Add(float64(len(list)))
	for i := range results {
		r := &results[i]
		if r.err != nil || r.closeErr != nil || r.secretsOnly {
			continue
		}
		var errs []error
		var s translate.Summary
		lists := [numTypes]*[]*translate.Facts{
			typeCluster: &s.Clusters, typeEndpoint: &s.Endpoints, typeListener: &s.Listeners, typeRoute: &s.Routes,
		}
		for t := range numTypes {
			if lists[t] == nil {
				continue // secrets: not checked
			}
			*lists[t] = make([]*translate.Facts, len(r.items[t]))
			for j := range r.items[t] {
				it := &r.items[t][j]
				if it.check != nil {
					if it.check.err != nil {
						errs = append(errs, it.check.err)
					}
					it.facts = &it.check.facts
				}
				(*lists[t])[j] = it.facts
			}
		}
		if l.checkRefs != nil && len(errs) == 0 {
			errs = append(errs, l.checkRefs(s))
		}
		if err := errors.Join(errs...); err != nil {
			r.err = fmt.Errorf("validate: %w", err)
		}
	}
}

// run calls check on the job's resource; a panic is the job's error, as
// a translator's is the translation's.
func (j *checkJob) run(check func(proto.Message, bool) (translate.Facts, error)) {
	defer func() {
		if p := recover(); p != nil {
			j.err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	j.facts, j.err = check(j.msg, j.grpc)
}

// index is 1 for true: entry.facts is indexed by the gRPC flag.
func index(b bool) int {
	if b {
		return 1
	}
	return 0
}

// install interns a result's resources, swaps the identity's snapshot and
// dependencies, and hands the snapshot to the hub.
// drop is a snapshot whose references to interned entries are to be
// released, except for the types it shares with next.
type drop struct{ s, next *snapshot }

// install makes r the identity's snapshot and returns drops with the
// snapshot it replaced, for the caller to release after the batch.
func (l *loop) install(id translate.Identity, r *result, at time.Time, drops []drop) []drop {
	p := l.proxies[id]
	if p == nil {
		return drops
	}
	switch {
	case r.closeErr != nil:
		if p.snap != nil {
			drops = append(drops, drop{p.snap, nil})
		}
		p.snap = &snapshot{closeErr: r.closeErr}
		l.hub.setSnapshot(id, p.snap, false)
		return drops
	case r.err != nil:
		l.metrics.translateErr.Inc()
		if msg := r.err.Error(); msg != p.err {
			p.err = msg
			l.log.Error("proxy configuration not updated", "mesh", id.Mesh, "kind", id.Kind, "name", id.Name, "proxyless", id.Proxyless, "error", r.err)
		}
		l.hub.setError(id, r.err)
		return drops
	}
	switch {
	case r.endpointsOnly:
		l.metrics.epUpdates.Inc()
	case r.secretsOnly:
	default:
		l.metrics.translations.Inc()
	}
	// Secrets alone do not fix a failed translation: its error stays.
	keepErr := r.secretsOnly && p.err != ""
	if !keepErr {
		p.err = ""
	}
	p.grpc, p.sources = r.grpc, r.sources
	p.secrets, p.leafDNS = r.secrets, r.leafDNS
	snap := &snapshot{cert: r.cert, certErr: r.certErr}
	var prev *snapshot // the snapshot replaced, if it served resources
	if p.snap != nil && p.snap.closeErr == nil {
		prev = p.snap
	}
	g := index(r.grpc)
	for t := range numTypes {
		salt := ""
		if t == typeEndpoint {
			// EDS follows every cluster change, even when the endpoints
			// are the same: Envoy re-warms a changed cluster and waits for
			// its endpoints (App Mesh roadmap #192).
			salt = snap.types[typeCluster].version
		}
		version := versionOfItems(r.items[t], salt)
		if prev != nil && prev.types[t].version == version {
			// Unchanged: share the type with the previous snapshot (never
			// modified); release below leaves its references alone.
			snap.types[t] = prev.types[t]
			continue
		}
		ts := &snap.types[t]
		ts.version = version
		ts.changedAt = at
		ts.full = &fullResponse{}
		ts.entries = make([]*entry, len(r.items[t]))
		ts.byName = make(map[string]*entry, len(r.items[t]))
		for i, it := range r.items[t] {
			e := l.entries[it.sum]
			if e == nil {
				e = &entry{name: it.name, sum: it.sum, key: it.key, any: &anypb.Any{TypeUrl: typeURL(t), Value: it.value}}
				l.entries[it.sum] = e
			}
			if e.facts[g] == nil {
				e.facts[g] = it.facts
			}
			e.refs++
			ts.entries[i] = e
			ts.byName[e.name] = e
		}
	}
	l.setDeps(id, p, r.deps, r.eps)
	p.snap = snap
	l.hub.setSnapshot(id, snap, keepErr)
	if prev != nil {
		drops = append(drops, drop{prev, snap})
	}
	return drops
}

// release drops a snapshot's references to interned entries, except for
// the types it shares with next (nil: none).
func (l *loop) release(s, next *snapshot) {
	for t := range numTypes {
		if next != nil && next.types[t].version == s.types[t].version {
			continue // shared: install shares a type whose version is unchanged
		}
		for _, e := range s.types[t].entries {
			if e.refs--; e.refs == 0 {
				delete(l.entries, e.sum)
			}
		}
	}
}

// setDeps replaces an identity's entries in the dependency index.
func (l *loop) setDeps(id translate.Identity, p *proxy, deps []appmesh.Ref, eps []nodeRef) {
	if slices.Equal(p.deps, deps) && slices.Equal(p.eps, eps) {
		return // most writes change no dependency
	}
	for _, d := range p.deps {
		if set := l.deps[d]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(l.deps, d)
			}
		}
	}
	for _, n := range p.eps {
		if set := l.epDeps[n]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(l.epDeps, n)
			}
		}
	}
	p.deps, p.eps = deps, eps
	for _, d := range deps {
		set := l.deps[d]
		if set == nil {
			set = map[translate.Identity]struct{}{}
			l.deps[d] = set
		}
		set[id] = struct{}{}
	}
	for _, n := range eps {
		set := l.epDeps[n]
		if set == nil {
			set = map[translate.Identity]struct{}{}
			l.epDeps[n] = set
		}
		set[id] = struct{}{}
	}
}
