package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/quota"
	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// kind is what the generic operations need to know about one resource
// kind: S is its spec, D its Data shape (what the store holds), R the
// shape List returns for it.
type kind[S, D, R any] struct {
	k appmesh.Kind

	// wrap builds the stored Data from its parts; unwrap takes it apart.
	wrap   func(r appmesh.Ref, spec *S, md *appmesh.ResourceMetadata, status string) *D
	unwrap func(d *D) (*S, *appmesh.ResourceMetadata)
	// listRef is what List returns for one resource.
	listRef func(d *listItem) R
	// emptySpec is the spec stored when the client sent none (meshes only).
	emptySpec func() *S

	// check runs the rules that read the store, such as references that
	// must exist; nil when there are none.
	check func(s *Service, tx store.Tx, r appmesh.Ref, spec *S) error
	// keeps runs, on an update only, the rules between a router's or a
	// gateway's new spec and the routes it already has (a create has
	// none); nil for other kinds.
	keeps func(s *Service, tx store.Tx, r appmesh.Ref, spec *S) error
	// childQuota is the quota of the children keeps reads (a router's
	// routes, a gateway's gateway routes): prefetchUpdateFirst reads that
	// many of them with the rest. nil when keeps is.
	childQuota func(l appmesh.Limits) int
	// refs returns the resources spec refers to that cannot be deleted
	// while it does; nil when there are none.
	refs func(r appmesh.Ref, spec *S) []appmesh.Ref
	// quota returns the limit on resources of this kind in one mesh (one
	// account for meshes, one parent for routes and gateway routes).
	quota func(l appmesh.Limits) int
	// inUse returns the ResourceInUseException that stops r's deletion, or
	// nil; the in-use index (refs) is checked before it.
	inUse func(tx store.Tx, r appmesh.Ref) error
}

// parentKind is the kind of the parent of routes and gateway routes.
func parentKind(k appmesh.Kind) appmesh.Kind {
	switch k {
	case appmesh.KindRoute:
		return appmesh.KindVirtualRouter
	case appmesh.KindGatewayRoute:
		return appmesh.KindVirtualGateway
	}
	return ""
}

// label names a kind as App Mesh's messages do: "VirtualNode".
func label(k appmesh.Kind) string {
	if k == "" {
		return ""
	}
	return strings.ToUpper(string(k[:1])) + string(k[1:])
}

func notFound(r appmesh.Ref) error {
	if r.Kind == appmesh.KindMesh {
		return appmesh.NotFound("Mesh with name %s does not exist for owner %s", r.Mesh, r.Owner)
	}
	return appmesh.NotFound("%s with name %s does not exist in mesh %s", label(r.Kind), r.Name, r.Mesh)
}

func getData[D any](tx store.Tx, r appmesh.Ref) (*D, bool, error) {
	kv, ok, err := tx.Get(r.Key())
	if err != nil || !ok {
		return nil, false, err
	}
	d, err := decodeData[D](kv.Value)
	if err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", r.Key(), err)
	}
	return d, true, nil
}

// prefetcher is a store transaction that can read several keys in one
// round trip (etcd's); later Gets of those keys answer from what it read.
type prefetcher interface {
	Prefetch(keys ...string) error
}

// prefetchUpdate reads at once, on a store that can, the keys an update
// of r reads one after the other next: its parent (checked), the
// resources its new spec refers to (checked), and its old references'
// index keys (replaced).
func (k *kind[S, D, R]) prefetchUpdate(tx store.Tx, r appmesh.Ref, spec *S, old *D) error {
	p, ok := tx.(prefetcher)
	if !ok {
		return nil
	}
	var keys []string
	if pk := parentKind(r.Kind); pk != "" {
		keys = append(keys, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: pk, Name: r.Parent}.Key())
	}
	if k.refs != nil {
		for _, to := range k.refs(r, spec) {
			keys = append(keys, to.Key())
		}
		oldSpec, _ := k.unwrap(old)
		for _, to := range k.refs(r, oldSpec) {
			keys = append(keys, refKey(r, to))
		}
	}
	return p.Prefetch(keys...)
}

// batchReader is a store transaction that can make, in one round trip,
// the reads a transaction is about to make (etcd's): keys it will Get,
// prefixes it will Count, prefixes it will List from their start (with
// the limit given); made first, it is the transaction's first read.
type batchReader interface {
	PrefetchReads(keys, counts []string, lists map[string]int) error
}

// prefetchCreate reads at once, on a store that can, everything a create
// of r reads, before its first read: the client token's record, the mesh
// and the parent (checked), the resource's own key (must be absent), the
// resources its spec refers to (checked), the resources counted for the
// quota, and the first client token expiries (remember). The create is
// then one read round trip and its commit, which compares all it read.
func (k *kind[S, D, R]) prefetchCreate(tx store.Tx, s *Service, c Caller, r appmesh.Ref, spec *S, req request) error {
	p, ok := tx.(batchReader)
	if !ok {
		return nil
	}
	keys, lists := tokenReads(s, c, req)
	var counts []string
	if r.Kind != appmesh.KindMesh {
		keys = append(keys, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: appmesh.KindMesh, Name: r.Mesh}.Key())
	}
	if pk := parentKind(r.Kind); pk != "" {
		keys = append(keys, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: pk, Name: r.Parent}.Key())
	}
	keys = append(keys, r.Key())
	if k.refs != nil {
		for _, to := range k.refs(r, spec) {
			keys = append(keys, to.Key())
		}
	}
	if prefix, _, ok := k.quotaScope(s, r); ok {
		counts = append(counts, prefix)
	}
	return p.PrefetchReads(keys, counts, lists)
}

// prefetchUpdateFirst reads at once, on a store that can, what an update
// of r reads first: the client token's record, the resource, the first
// client token expiries (remember), what the new spec names (its parent,
// the resources it refers to, their index keys), and a router's or a
// gateway's routes up to their quota (keeps). prefetchUpdate
// then reads what the old spec names and this did not read: nothing
// when an update keeps the references (a route's weights), so that such
// an update is one read round trip and its commit.
func (k *kind[S, D, R]) prefetchUpdateFirst(tx store.Tx, s *Service, c Caller, r appmesh.Ref, spec *S, req request) error {
	p, ok := tx.(batchReader)
	if !ok {
		return nil
	}
	keys, lists := tokenReads(s, c, req)
	keys = append(keys, r.Key())
	if pk := parentKind(r.Kind); pk != "" {
		keys = append(keys, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: pk, Name: r.Parent}.Key())
	}
	if k.refs != nil {
		for _, to := range k.refs(r, spec) {
			keys = append(keys, to.Key(), refKey(r, to))
		}
	}
	if k.childQuota != nil {
		if prefix, ok := inUsePrefix(r); ok {
			if lists == nil {
				lists = map[string]int{}
			}
			lists[prefix] = max(k.childQuota(s.limits), 0)
		}
	}
	return p.PrefetchReads(keys, nil, lists)
}

// prefetchDelete reads at once, on a store that can, everything a delete
// of r reads before it knows r's spec, as its first read: the resource,
// its tags (deleted with it), the first resources that refer to it and
// the first of the children that keep it (ResourceInUse). Only the index
// keys of what its spec refers to are left (prefetchRefs): a delete of a
// resource that refers to nothing, or to one resource, is one read round
// trip and its commit, which compares all it read.
func prefetchDelete(tx store.Tx, r appmesh.Ref) error {
	p, ok := tx.(batchReader)
	if !ok {
		return nil
	}
	lists := map[string]int{refsTo(r): referrersNamed}
	if prefix, ok := inUsePrefix(r); ok {
		lists[prefix] = 1
	}
	return p.PrefetchReads([]string{r.Key(), tagsKey(r)}, nil, lists)
}

// prefetchRefs reads at once, on a store that can, the index keys of the
// references from r to refs, which a delete removes one by one.
func prefetchRefs(tx store.Tx, r appmesh.Ref, refs []appmesh.Ref) error {
	p, ok := tx.(prefetcher)
	if !ok || len(refs) == 0 {
		return nil
	}
	keys := make([]string, 0, len(refs))
	for _, to := range refs {
		keys = append(keys, refKey(r, to))
	}
	return p.Prefetch(keys...)
}

// tokenReads are the reads of a write's client token: its record (replay),
// the first expiries and the expiry entry remember will write (a List
// reads the keys a transaction wrote under its prefix); none without a
// token.
func tokenReads(s *Service, c Caller, req request) (keys []string, lists map[string]int) {
	if req.token == "" {
		return nil, nil
	}
	exp := tokenExpKey(req.now.Add(s.tokenTTL).UnixNano(), c.Account, req.token)
	return []string{tokenKey(c.Account, req.token), exp}, map[string]int{tokenExpPrefix: expiredPerWrite}
}

// mustExist returns the NotFoundException for r if r does not exist.
func mustExist(tx store.Tx, r appmesh.Ref) error {
	_, ok, err := tx.Get(r.Key())
	if err != nil {
		return err
	}
	if !ok {
		return notFound(r)
	}
	return nil
}

// ancestors checks that the mesh and, for routes and gateway routes, the
// parent of r exist.
func ancestors(tx store.Tx, r appmesh.Ref) error {
	if r.Kind == appmesh.KindMesh {
		return nil
	}
	if err := mustExist(tx, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: appmesh.KindMesh, Name: r.Mesh}); err != nil {
		return err
	}
	if pk := parentKind(r.Kind); pk != "" {
		return mustExist(tx, appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: pk, Name: r.Parent})
	}
	return nil
}

func (k *kind[S, D, R]) metadata(s *Service, r appmesh.Ref, c Caller, req request) *appmesh.ResourceMetadata {
	arn := appmesh.ARN(s.region, r)
	t := shape.NewTime(req.now)
	version := int64(1)
	owner, resOwner, uid := r.Owner, c.Account, req.uid
	return &appmesh.ResourceMetadata{
		Arn: &arn, CreatedAt: t, LastUpdatedAt: t, MeshOwner: &owner,
		ResourceOwner: &resOwner, Uid: &uid, Version: &version,
	}
}

// create makes a new resource.
func (k *kind[S, D, R]) create(ctx context.Context, s *Service, c Caller, r appmesh.Ref, spec *S, tags []appmesh.TagRef, req request) (*D, error) {
	if spec == nil && k.emptySpec != nil {
		spec = k.emptySpec()
	}
	prefetch := func(tx store.Tx) error { return k.prefetchCreate(tx, s, c, r, spec, req) }
	return write(ctx, s, c, req, prefetch, func(tx store.Tx) (*D, error) {
		if err := ancestors(tx, r); err != nil {
			return nil, err
		}
		if _, ok, err := tx.Get(r.Key()); err != nil {
			return nil, err
		} else if ok {
			return nil, appmesh.Conflict("%s with name %s already exists", label(k.k), r.Name)
		}
		if err := k.checkQuota(s, tx, r); err != nil {
			return nil, err
		}
		if k.check != nil {
			if err := k.check(s, tx, r, spec); err != nil {
				return nil, err
			}
		}
		d := k.wrap(r, spec, k.metadata(s, r, c, req), "ACTIVE")
		if k.refs != nil {
			if err := setRefs(tx, r, nil, k.refs(r, spec)); err != nil {
				return nil, err
			}
		}
		if len(tags) > 0 {
			if err := putTags(tx, r, mergeTags(nil, tags)); err != nil {
				return nil, err
			}
		}
		return d, putData(tx, r, d)
	})
}

// quotaScope returns the prefix of the resources counted for r's quota
// and how a message names it; ok=false when r's kind has no quota.
func (k *kind[S, D, R]) quotaScope(s *Service, r appmesh.Ref) (prefix, where string, ok bool) {
	if k.quota(s.limits) <= 0 {
		return "", "", false
	}
	prefix = appmesh.ChildrenPrefix(r.Owner, r.Mesh, r.Kind, r.Parent)
	where = "mesh " + r.Mesh
	switch r.Kind {
	case appmesh.KindMesh:
		prefix, where = meshesPrefix(r.Owner), "account "+r.Owner
	case appmesh.KindRoute, appmesh.KindGatewayRoute:
		where = label(parentKind(r.Kind)) + " " + r.Parent
	}
	return prefix, where, true
}

// checkQuota fails when a new resource r would pass its kind's quota in
// its scope (quotaScope): the account's meshes, a mesh's resources of
// r's kind, a parent's routes or gateway routes.
//
// It counts through quota.Reader: a quota above quota.ExactMax is a
// bound on etcd, not an exact count. At App Mesh's defaults the account's
// meshes (15), a mesh's virtual gateways (3) and a gateway's gateway
// routes (10) are exact; a mesh's virtual nodes, services and routers
// (200) and a router's routes (50) are bounds. Guarded, those counts made
// a virtual node's create conflict with every change to another node of
// the mesh (a route's with every change of weights under its router),
// and once the mesh held about 100 nodes with any write at all. No key a
// create already reads and writes orders the creates of one scope, as a
// Cloud Map service's record orders its registrations: a route's create
// reads its router's record, but no route write changes it. A count kept
// in the mesh's or the parent's record would keep the quota exact, but
// every create of the scope would write that record and conflict on it
// again.
func (k *kind[S, D, R]) checkQuota(s *Service, tx store.Tx, r appmesh.Ref) error {
	prefix, where, ok := k.quotaScope(s, r)
	if !ok {
		return nil
	}
	max := k.quota(s.limits)
	n, err := quota.Reader(tx, max).Count(prefix)
	if err != nil {
		return err
	}
	if n >= max {
		return appmesh.LimitExceeded("The limit of %d %s resources in %s has been reached", max, label(k.k), where)
	}
	return nil
}

func meshesPrefix(owner string) string {
	return strings.TrimSuffix(appmesh.MeshKey(owner, "x"), "x")
}

func putData(tx store.Tx, r appmesh.Ref, d any) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode %s: %w", r.Key(), err)
	}
	return tx.Put(r.Key(), b)
}

// write runs a write in a transaction, replaying the first result of a
// request made again with the same client token. prefetch, when not nil,
// runs first in every run of the transaction (prefetchCreate).
func write[D any](ctx context.Context, s *Service, c Caller, req request, prefetch func(tx store.Tx) error, fn func(tx store.Tx) (*D, error)) (*D, error) {
	replayed := false // set by the transaction's last run
	d, err := update(ctx, s, func(tx store.Tx) (*D, error) {
		if prefetch != nil {
			if err := prefetch(tx); err != nil {
				return nil, err
			}
		}
		prior, err := replay(tx, c, req)
		if err != nil {
			return nil, err
		}
		replayed = prior != nil
		if prior != nil {
			d := new(D)
			if err := json.Unmarshal(prior, d); err != nil {
				return nil, fmt.Errorf("decode replayed result: %w", err)
			}
			return d, nil
		}
		d, err := fn(tx)
		if err != nil {
			return nil, err
		}
		if req.token != "" {
			b, err := json.Marshal(d)
			if err != nil {
				return nil, err
			}
			if err := remember(tx, c, req, s.tokenTTL, b); err != nil {
				return nil, err
			}
		}
		return d, nil
	})
	if err == nil && replayed {
		s.log.Debug("client token replayed", "op", req.op, "account", c.Account, "token", req.token)
	}
	return d, err
}

// describe returns a resource.
func (k *kind[S, D, R]) describe(ctx context.Context, s *Service, r appmesh.Ref) (*D, error) {
	return view(ctx, s, func(tx store.Tx) (*D, error) {
		d, ok, err := getData[D](tx, r)
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := ancestors(tx, r); err != nil {
				return nil, err
			}
			return nil, notFound(r)
		}
		return d, nil
	})
}

// update replaces a resource's spec: version +1, lastUpdatedAt now.
func (k *kind[S, D, R]) update(ctx context.Context, s *Service, c Caller, r appmesh.Ref, spec *S, req request) (*D, error) {
	if spec == nil && k.emptySpec != nil {
		spec = k.emptySpec()
	}
	prefetch := func(tx store.Tx) error { return k.prefetchUpdateFirst(tx, s, c, r, spec, req) }
	return write(ctx, s, c, req, prefetch, func(tx store.Tx) (*D, error) {
		old, ok, err := getData[D](tx, r)
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := ancestors(tx, r); err != nil {
				return nil, err
			}
			return nil, notFound(r)
		}
		if err := k.prefetchUpdate(tx, r, spec, old); err != nil {
			return nil, err
		}
		if k.check != nil {
			if err := k.check(s, tx, r, spec); err != nil {
				return nil, err
			}
		}
		if k.keeps != nil {
			if err := k.keeps(s, tx, r, spec); err != nil {
				return nil, err
			}
		}
		oldSpec, oldMD := k.unwrap(old)
		md := *oldMD // a restore refuses a record without metadata (readItem)
		version := int64(1)
		if md.Version != nil {
			version = *md.Version + 1
		}
		md.Version = &version
		md.LastUpdatedAt = shape.NewTime(req.now)
		if k.refs != nil {
			if err := setRefs(tx, r, k.refs(r, oldSpec), k.refs(r, spec)); err != nil {
				return nil, err
			}
		}
		d := k.wrap(r, spec, &md, "ACTIVE")
		return d, putData(tx, r, d)
	})
}

// delete removes a resource that nothing depends on and returns it with
// status DELETED.
func (k *kind[S, D, R]) delete(ctx context.Context, s *Service, r appmesh.Ref, now time.Time) (*D, error) {
	return update(ctx, s, func(tx store.Tx) (*D, error) {
		if err := prefetchDelete(tx, r); err != nil {
			return nil, err
		}
		old, ok, err := getData[D](tx, r)
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := ancestors(tx, r); err != nil {
				return nil, err
			}
			return nil, notFound(r)
		}
		if err := k.checkInUse(tx, r); err != nil {
			return nil, err
		}
		spec, oldMD := k.unwrap(old)
		if k.refs != nil {
			if err := prefetchRefs(tx, r, k.refs(r, spec)); err != nil {
				return nil, err
			}
			if err := setRefs(tx, r, k.refs(r, spec), nil); err != nil {
				return nil, err
			}
		}
		if err := tx.Delete(tagsKey(r)); err != nil {
			return nil, err
		}
		if err := tx.Delete(r.Key()); err != nil {
			return nil, err
		}
		md := *oldMD // a restore refuses a record without metadata (readItem)
		md.LastUpdatedAt = shape.NewTime(now)
		return k.wrap(r, spec, &md, "DELETED"), nil
	})
}

// referrersNamed is how many referrers a ResourceInUseException names.
const referrersNamed = 10

func (k *kind[S, D, R]) checkInUse(tx store.Tx, r appmesh.Ref) error {
	from, err := referrers(tx, r, referrersNamed)
	if err != nil {
		return err
	}
	if len(from) > 0 {
		return inUseBy(r, from)
	}
	if k.inUse != nil {
		return k.inUse(tx, r)
	}
	return nil
}

// inUseBy words the ResourceInUseException for a resource others refer to.
func inUseBy(r appmesh.Ref, from []appmesh.Ref) error {
	switch from[0].Kind {
	case appmesh.KindVirtualService:
		return appmesh.InUse("%s with name %s cannot be deleted because it is a VirtualService provider: %s", label(r.Kind), r.Name, from[0].Name)
	case appmesh.KindRoute:
		return appmesh.InUse("%s with name %s cannot be deleted because it is the target of one or more routes: %s", label(r.Kind), r.Name, names(from))
	}
	return appmesh.InUse("%s %s is being referenced in the following: GATEWAY_ROUTE: [%s]", label(r.Kind), r.Name, names(from))
}

func names(refs []appmesh.Ref) string {
	var out []string
	for _, r := range refs {
		n := r.Name
		if r.Parent != "" {
			n = r.Parent + "/" + n
		}
		out = append(out, n)
	}
	return strings.Join(out, ", ")
}
