package translate

import (
	"encoding/json"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Memo shares, between translations of the same Views, the part of a
// sidecar's configuration that does not depend on which node asks: its
// egress (listener 15001, route tables, egress clusters and their
// assignments) follows from the node's backends, backend defaults,
// logging and IP preference alone, and nodes that agree on those (a
// service's many callers) get the very same messages. The xDS server
// makes one per batch of translations: a write that changes a route
// then builds each distinct egress once instead of once per caller, and
// marshals each shared message once.
//
// The messages a Memo hands out are shared between Resources: callers
// must not modify them (nothing in weft does). Safe for concurrent use.
type Memo struct {
	mu sync.Mutex
	// parts holds each egress built for a second node; a key whose value
	// is nil has been met once.
	parts  map[memoKey]*egressPart
	shared int // translations that took their egress from parts
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo { return &Memo{parts: map[memoKey]*egressPart{}} }

// memoKey names an egress: the View it was built from (a Memo may serve
// several meshes) and everything of the node it reads.
type memoKey struct {
	v     *View
	owner string
	spec  string // egressInputs as JSON
	// sdsSocket: sds secrets are the agent's (Identity.SDSSocket).
	sdsSocket bool
	// egressPort: the egress listener's port (Identity.EgressPort).
	egressPort uint32
}

// egressInputs is what nodeEgress reads of its node and identity beyond
// the View: callerPolicy reads Backends and BackendDefaults, the access
// logs come from Logging, the listener's address from the IP preference.
type egressInputs struct {
	Backends        []appmesh.Backend        `json:"b,omitempty"`
	BackendDefaults *appmesh.BackendDefaults `json:"d,omitempty"`
	Logging         *appmesh.Logging         `json:"l,omitempty"`
	DualStack       bool                     `json:"s,omitempty"`
}

// egressPart is one egress as built: what nodeEgress added to its build.
type egressPart struct {
	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	sources   map[string]EndpointSource
	deps      map[appmesh.Ref]struct{}
	eps       map[string]struct{}
	secrets   map[string]SecretRole
	err       error
}

// TranslateWith is Translate sharing what it can with the other
// translations made with m (nil: none). Its results are the same as
// Translate's.
func TranslateWith(v *View, id Identity, m *Memo) (*Resources, error) {
	return translate(v, id, m)
}

// egress adds the node's egress to b, from m when an equal egress was
// built before.
func (b *build) egress(vn *appmesh.VirtualNodeData, logs []*accesslogv3.AccessLog, dualStack bool) {
	if b.memo == nil || vn.Spec == nil {
		b.nodeEgress(vn, logs, dualStack)
		return
	}
	in, err := json.Marshal(egressInputs{Backends: vn.Spec.Backends, BackendDefaults: vn.Spec.BackendDefaults, Logging: vn.Spec.Logging, DualStack: dualStack})
	if err != nil {
		b.nodeEgress(vn, logs, dualStack)
		return
	}
	k := memoKey{v: b.v, owner: b.id.MeshOwner, spec: string(in), sdsSocket: b.id.SDSSocket, egressPort: b.egressPort()}
	b.memo.mu.Lock()
	p, seen := b.memo.parts[k]
	if !seen {
		b.memo.parts[k] = nil
	}
	b.memo.mu.Unlock()
	if !seen {
		// The first node with these inputs builds its egress in place:
		// an egress no other node shares costs nothing more than its key.
		b.nodeEgress(vn, logs, dualStack)
		return
	}
	reused := p != nil
	if p == nil {
		// Built on a build of its own so that exactly what the egress
		// adds is kept. Two workers may build the same part at once;
		// both results are equal, and the first stored is kept.
		c := newBuild(b.v, b.id)
		c.nodeEgress(vn, logs, dualStack)
		p = &egressPart{listeners: c.listeners, routes: c.routes, clusters: c.clusters,
			endpoints: c.endpoints, sources: c.sources, deps: c.deps, eps: c.eps, secrets: c.secrets, err: c.err}
		b.memo.mu.Lock()
		if q := b.memo.parts[k]; q != nil {
			p = q
		} else {
			b.memo.parts[k] = p
		}
		b.memo.mu.Unlock()
	}
	if reused {
		b.memo.mu.Lock()
		b.memo.shared++
		b.memo.mu.Unlock()
	}
	b.merge(p)
}

// Shared is how many translations took their egress from the Memo instead
// of building it.
func (m *Memo) Shared() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shared
}

// merge adds a part's output to b as if b had built it.
func (b *build) merge(p *egressPart) {
	for n, l := range p.listeners {
		b.listeners[n] = l
	}
	for n, r := range p.routes {
		b.routes[n] = r
	}
	for n, c := range p.clusters {
		b.clusters[n] = c
	}
	for n, e := range p.endpoints {
		b.endpoints[n] = e
		delete(b.sources, n)
	}
	for n, s := range p.sources {
		b.sources[n] = s
	}
	for d := range p.deps {
		b.deps[d] = struct{}{}
	}
	for n := range p.eps {
		b.eps[n] = struct{}{}
	}
	for n, r := range p.secrets {
		b.secrets[n] |= r
	}
	if b.err == nil {
		b.err = p.err
	}
}
