package translate

import (
	"sync"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Kept carries, from one batch of translations to the next, the parts of
// a proxy's configuration whose inputs the writes in between did not
// replace. A sidecar's ingress (its ingress listener, the local clusters
// and the ingress route tables) follows from its identity, its virtual
// node and its mesh alone; when a write changes a route that every proxy
// uses, each proxy's route tables change but its ingress does not, and
// the next translation takes the ingress as built, the very same
// messages, instead of building it again.
//
// A kept part is valid while the View holds the same *VirtualNodeData
// and *MeshData it was built from: the View's resources are never
// modified, a change replaces them (the xDS server decodes each new
// value into a new struct), so a pointer stands for one content.
//
// Long-lived, unlike a Memo: the xDS server holds one and gives it to
// each batch's Memo (NewMemoKeeping); Forget drops an identity that has
// no proxy left. Safe for concurrent use.
type Kept struct {
	mu      sync.Mutex
	ingress map[Identity]*keptPart
	reused  int // translations that took their ingress from a kept part
	// msgs holds every message of the kept parts (Holds).
	msgs map[any]struct{}
	// ports holds each virtual service's resolution (resolve.go).
	ports       map[portsKey]*resolution
	portsReused int
	// listeners holds sidecar egress listeners (keptegress.go).
	listeners       map[listenerKey]*keptListener
	listenersReused int
	// specs holds each sidecar's egress inputs as JSON (keptegress.go).
	specs map[Identity]keptSpec
	// orders holds each identity's sorted names and dependencies
	// (keptorder.go).
	orders map[Identity]*keptOrder
}

// keptPart is a part and the inputs it was built from.
type keptPart struct {
	node *appmesh.VirtualNodeData
	mesh *appmesh.MeshData
	part *egressPart
}

// NewKept returns an empty Kept.
func NewKept() *Kept {
	return &Kept{ingress: map[Identity]*keptPart{}, msgs: map[any]struct{}{}, ports: map[portsKey]*resolution{},
		listeners: map[listenerKey]*keptListener{}, specs: map[Identity]keptSpec{}, orders: map[Identity]*keptOrder{}}
}

// NewMemoKeeping returns an empty Memo whose translations also take, and
// leave for the next batches, the parts k keeps.
func NewMemoKeeping(k *Kept) *Memo {
	m := NewMemo()
	m.kept = k
	return m
}

// Forget drops what k keeps for id.
func (k *Kept) Forget(id Identity) {
	k.mu.Lock()
	k.drop(k.ingress[id])
	delete(k.ingress, id)
	delete(k.specs, id)
	delete(k.orders, id)
	k.mu.Unlock()
}

// Holds reports whether m is a message of a part k keeps: the next
// translations hand out this very message while its inputs stand, so a
// caller may keep what it derives from it (its encoding) by pointer.
func (k *Kept) Holds(m any) bool {
	k.mu.Lock()
	_, ok := k.msgs[m]
	k.mu.Unlock()
	return ok
}

// keep records kp's messages in k.msgs, and drop forgets them; called
// with mu held.
func (k *Kept) keep(kp *keptPart) {
	for _, m := range kp.part.messages() {
		k.msgs[m] = struct{}{}
	}
}

func (k *Kept) drop(kp *keptPart) {
	if kp == nil {
		return
	}
	for _, m := range kp.part.messages() {
		delete(k.msgs, m)
	}
}

// Len is how many identities k keeps a part for.
func (k *Kept) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ingress)
}

// Reused is how many translations took their ingress from k.
func (k *Kept) Reused() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reused
}

// addIngress adds the sidecar's ingress to b: the part kept for b's identity
// when it was built from vn and the View's mesh, else built by fill (on a
// build of its own) and kept. A part whose build met an error is not
// kept: the next translation must meet it again.
func (k *Kept) addIngress(b *build, vn *appmesh.VirtualNodeData, fill func(c *build)) {
	k.mu.Lock()
	kp := k.ingress[b.id]
	if kp != nil && kp.node == vn && kp.mesh == b.v.Mesh {
		k.reused++
		k.mu.Unlock()
		b.merge(kp.part)
		return
	}
	k.mu.Unlock()
	c := newBuild(b.v, b.id)
	c.memo = b.memo
	fill(c)
	p := c.part()
	b.merge(p)
	if c.err != nil {
		return
	}
	kp = &keptPart{node: vn, mesh: b.v.Mesh, part: p}
	k.mu.Lock()
	k.drop(k.ingress[b.id])
	k.ingress[b.id] = kp
	k.keep(kp)
	k.mu.Unlock()
}

// messages lists the part's messages.
func (p *egressPart) messages() []any {
	out := make([]any, 0, len(p.listeners)+len(p.routes)+len(p.clusters)+len(p.endpoints))
	for _, m := range p.listeners {
		out = append(out, m.v)
	}
	for _, m := range p.routes {
		out = append(out, m.v)
	}
	for _, m := range p.clusters {
		out = append(out, m.v)
	}
	for _, m := range p.endpoints {
		out = append(out, m.v)
	}
	return out
}
