package translate

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Memo shares, between translations of the same Views, the parts of a
// proxy's configuration that do not depend on which proxy asks:
//
//   - a sidecar's egress (listener 15001, route tables, egress clusters
//     and their assignments) follows from the node's backends, backend
//     defaults, logging and IP preference alone, and nodes that agree on
//     those (a service's many callers) get the very same messages;
//   - an egress cluster (a target node's listener as a caller sees it)
//     follows from the target and the caller's client policy toward the
//     service alone, so callers whose backends differ still share the
//     clusters of the backends they have in common;
//   - the passthrough clusters (ALLOW_ALL, *.amazonaws.com) are the same
//     for every proxy of a mesh.
//
// The xDS server makes one per batch of translations: a write that
// changes a route then builds each distinct egress and cluster once
// instead of once per caller, and marshals each shared message once.
//
// The messages a Memo hands out are shared between Resources: callers
// must not modify them (nothing in weft does). Safe for concurrent use.
type Memo struct {
	mu sync.Mutex
	// parts holds each part (an egress, memoKey; a cluster, clusterKey;
	// a passthrough cluster, passthroughKey) built for a second
	// translation; a key whose value is nil has been met once.
	parts    map[any]*egressPart
	shared   int // translations that took their egress from parts
	clusters int // clusters taken from parts
	// hosts holds each virtual host of a virtual service in an egress
	// route table.
	hosts map[hostKey]*routev3.VirtualHost
	// hostRefs names each host of hosts (EgressHostRef).
	hostRefs map[*routev3.VirtualHost]HostRef
	// values holds messages that follow from their key alone (memoized).
	values map[any]any
	// kept, when set, carries parts across batches (kept.go).
	kept *Kept
	// tables holds each sidecar egress route table (egressTable).
	tables map[tableKey]*routev3.RouteConfiguration
	// ports holds each virtual service's resolution (resolve.go).
	ports map[portsKey]*resolution
}

// tableKey names a sidecar's egress route table: its name and port, its
// virtual hosts (each a hostKey but for the port, which is domainPort
// here), and whether the mesh lets unknown hosts through (allow_all).
type tableKey struct {
	v        *View
	owner    string
	mesh     string
	name     string
	port     uint32
	allowAll bool
	services string // each host's service and port, in order
}

func (b *build) tableKey(name string, sps []svcPort, p uint32, allowAll bool) tableKey {
	var services strings.Builder
	for _, sp := range sps {
		services.WriteString(sp.service)
		services.WriteByte(':')
		services.WriteString(strconv.FormatUint(uint64(sp.port), 10))
		services.WriteByte(' ')
	}
	return tableKey{v: b.v, owner: b.id.MeshOwner, mesh: b.id.Mesh, name: name, port: p, allowAll: allowAll, services: services.String()}
}

// tablePartKey names a sidecar's egress route table with what building
// it adds (the clusters of its routes' targets, their assignments and
// dependencies), for callers with no client policy toward its services:
// those clusters then follow from the targets and where the caller's
// sds secrets come from alone (clusterKey).
type tablePartKey struct {
	table     tableKey
	sdsSocket bool
}

// addEgressTable adds the route table of a sidecar's egress port p to b.
// A caller with no client policy toward the table's services takes it
// as a part, built once per Memo: one merge instead of building each
// target's cluster name and looking it up. Others share the table alone
// (egressTable).
func (b *build) addEgressTable(name string, sps []svcPort, p uint32, allowAll bool) {
	if b.memo != nil && !b.anyCallerPolicy(sps) {
		k := tablePartKey{table: b.tableKey(name, sps, p, allowAll), sdsSocket: b.id.SDSSocket}
		if added, _ := b.memo.part(b, k, func(c *build) { c.addRoute(c.egressTable(name, sps, p, allowAll)) }); added {
			return
		}
	}
	b.addRoute(b.egressTable(name, sps, p, allowAll))
}

// anyCallerPolicy reports whether b's proxy has a client policy toward
// one of the services.
func (b *build) anyCallerPolicy(sps []svcPort) bool {
	for _, sp := range sps {
		if node, gateway := b.callerPolicySpec(sp.service); node != nil || gateway != nil {
			return true
		}
	}
	return false
}

// egressTable is the route table of a sidecar's egress port p, built
// once per Memo for the same hosts: callers whose backends differ
// still share the table of the services they have in common on a port.
// What building it adds to the build is the clusters of its routes'
// targets (as in virtualHost), which a caller taking a built table adds
// itself.
func (b *build) egressTable(name string, sps []svcPort, p uint32, allowAll bool) *routev3.RouteConfiguration {
	newTable := func() *routev3.RouteConfiguration {
		var extra []*routev3.VirtualHost
		if allowAll {
			vh := b.allowAllVirtualHost()
			if b.memo != nil {
				b.memo.fixedHost(vh)
			}
			extra = append(extra, vh)
		}
		return b.egressRouteConfig(name, sps, p, envoyFlavor, extra...)
	}
	m := b.memo
	if m == nil {
		return newTable()
	}
	k := b.tableKey(name, sps, p, allowAll)
	m.mu.Lock()
	rc := m.tables[k]
	m.mu.Unlock()
	if rc != nil {
		for _, sp := range sps {
			for _, r := range sp.routes {
				for _, t := range r.targets {
					b.egressCluster(sp.service, t, envoyFlavor)
				}
			}
		}
		return rc
	}
	rc = newTable()
	if b.err != nil {
		// Not shared, as in virtualHost.
		return rc
	}
	return keepFirst(&m.mu, m.tables, k, rc)
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo {
	return &Memo{parts: map[any]*egressPart{}, hosts: map[hostKey]*routev3.VirtualHost{}, hostRefs: map[*routev3.VirtualHost]HostRef{}, values: map[any]any{},
		tables: map[tableKey]*routev3.RouteConfiguration{}, ports: map[portsKey]*resolution{}}
}

// hostKey names a virtual host of an egress route table: what
// newEgressVirtualHost reads is the View (through servicePorts, which
// gives the same svcPort for the same service and port), the port its
// domains name and the flavour (Envoy's, or a proxyless gRPC client's);
// the clusters its routes name are the caller's (egressCluster), which
// virtualHost adds to each caller's build.
type hostKey struct {
	v          *View
	owner      string
	mesh       string
	service    string
	port       uint32
	domainPort uint32
	fl         flavor
}

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

// clusterKey names an egress cluster: newEgressCluster reads the View,
// the mesh, the target (not its weight), the flavor, and of the caller
// its client policy toward the service (callerPolicySpec) and where its
// sds secrets come from.
type clusterKey struct {
	v         *View
	owner     string
	mesh      string
	t         target
	fl        flavor
	sdsSocket bool
	policy    string // callerPolicySpec as JSON, "" for none
}

// passthroughKey names a passthrough cluster of a mesh.
type passthroughKey struct {
	owner, name string
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

// egressPart is one part as built: what it added to its build, as flat
// lists (merging walks them for every build that takes the part, which
// is cheaper over a slice than over a map).
type egressPart struct {
	listeners []named[*listenerv3.Listener]
	routes    []named[*routev3.RouteConfiguration]
	clusters  []named[*clusterv3.Cluster]
	endpoints []named[*endpointv3.ClusterLoadAssignment]
	sources   []named[EndpointSource]
	deps      []appmesh.Ref
	eps       []string
	secrets   []named[SecretRole]
	err       error
}

// named is one entry of a build's map by name.
type named[T any] struct {
	name string
	v    T
}

func flat[T any](m map[string]T) []named[T] {
	out := make([]named[T], 0, len(m))
	for n, v := range m {
		out = append(out, named[T]{n, v})
	}
	return out
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TranslateWith is Translate sharing what it can with the other
// translations made with m (nil: none). Its results are the same as
// Translate's.
func TranslateWith(v *View, id Identity, m *Memo) (*Resources, error) {
	return translate(v, id, m)
}

// part adds to b the part named k, built by fill on a build of its own
// when another translation met k before; it returns false, and b builds
// the part itself, for the first: a part no other translation shares
// costs nothing more than its key. reused says whether the part was
// built before, by another translation.
func (m *Memo) part(b *build, k any, fill func(c *build)) (added, reused bool) {
	m.mu.Lock()
	p, seen := m.parts[k]
	if !seen {
		m.parts[k] = nil
	}
	m.mu.Unlock()
	if !seen {
		return false, false
	}
	if p == nil {
		// Built on a build of its own so that exactly what the part adds
		// is kept. Two workers may build the same part at once; both
		// results are equal, and the first stored is kept.
		c := newBuild(b.v, b.id)
		c.memo = m
		fill(c)
		p = c.part()
		m.mu.Lock()
		if q := m.parts[k]; q != nil {
			p = q
		} else {
			m.parts[k] = p
		}
		m.mu.Unlock()
		b.merge(p)
		return true, false
	}
	b.merge(p)
	return true, true
}

// egress adds the node's egress to b, from m when an equal egress was
// built before.
func (b *build) egress(vn *appmesh.VirtualNodeData, logs []*accesslogv3.AccessLog, dualStack bool) {
	if b.memo == nil || vn.Spec == nil {
		b.nodeEgress(vn, logs, dualStack, nil)
		return
	}
	spec, ok := b.memo.kept.egressSpec(b.id, vn, dualStack)
	if !ok {
		in, err := json.Marshal(egressInputs{Backends: vn.Spec.Backends, BackendDefaults: vn.Spec.BackendDefaults, Logging: vn.Spec.Logging, DualStack: dualStack})
		if err != nil {
			b.nodeEgress(vn, logs, dualStack, nil)
			return
		}
		spec = string(in)
		b.memo.kept.keepEgressSpec(b.id, vn, dualStack, spec)
	}
	k := memoKey{v: b.v, owner: b.id.MeshOwner, spec: spec, sdsSocket: b.id.SDSSocket, egressPort: b.egressPort()}
	var lk *listenerKey
	if b.memo.kept != nil {
		lk = &listenerKey{owner: b.id.MeshOwner, mesh: b.id.Mesh, spec: k.spec, sdsSocket: k.sdsSocket, egressPort: k.egressPort}
	}
	added, reused := b.memo.part(b, k, func(c *build) { c.nodeEgress(vn, logs, dualStack, lk) })
	if !added {
		b.nodeEgress(vn, logs, dualStack, lk)
		return
	}
	if reused {
		b.memo.mu.Lock()
		b.memo.shared++
		b.memo.mu.Unlock()
	}
}

// cluster adds the egress cluster name of target t of service to b when
// another translation built it before (see part); false: b builds it.
func (m *Memo) cluster(b *build, name, service string, t target, fl flavor) bool {
	k := clusterKey{v: b.v, owner: b.id.MeshOwner, mesh: b.id.Mesh, t: t, fl: fl, sdsSocket: b.id.SDSSocket}
	k.t.weight = 0
	if node, gateway := b.callerPolicySpec(service); node != nil || gateway != nil {
		var spec any = node
		prefix := "n"
		if gateway != nil {
			spec, prefix = gateway, "g"
		}
		in, err := json.Marshal(spec)
		if err != nil {
			return false
		}
		k.policy = prefix + string(in)
	}
	added, reused := m.part(b, k, func(c *build) { c.newEgressCluster(name, service, t, fl) })
	if reused {
		m.mu.Lock()
		m.clusters++
		m.mu.Unlock()
	}
	return added
}

// virtualHost is newEgressVirtualHost, built once per service, port and
// flavour. The host is the same for every caller; what building it adds
// to the build is the clusters of its routes' targets, as the caller sees
// them, so a caller taking a built host adds those clusters itself, in
// the order building it would have: of every route for Envoy, of the
// routes kept for a gRPC client (a route whose :method match excludes
// POST is left out, and its targets' clusters with it: grpcKeeps).
func (m *Memo) virtualHost(b *build, sp svcPort, domainPort uint32, fl flavor) *routev3.VirtualHost {
	k := hostKey{v: b.v, owner: b.id.MeshOwner, mesh: b.id.Mesh, service: sp.service, port: sp.port, domainPort: domainPort, fl: fl}
	m.mu.Lock()
	vh := m.hosts[k]
	m.mu.Unlock()
	if vh != nil {
		for _, r := range sp.routes {
			if fl == grpcFlavor && !grpcKeeps(r) {
				continue
			}
			for _, t := range r.targets {
				b.egressCluster(sp.service, t, fl)
			}
		}
		return vh
	}
	vh = b.newEgressVirtualHost(sp, domainPort, fl)
	if b.err != nil {
		// Not shared: a host built by a failing translation may be the
		// cause, and must then fail each caller.
		return vh
	}
	return m.keepHost(k, vh)
}

// memoized returns what build returns for k, built once per Memo when b
// has one. build must read nothing but what k holds, and add nothing to
// b.
func memoized[T any](b *build, k any, build func() T) T {
	m := b.memo
	if m == nil {
		return build()
	}
	m.mu.Lock()
	v, ok := m.values[k]
	m.mu.Unlock()
	if ok {
		return v.(T)
	}
	t := build()
	if b.err != nil {
		return t // not shared, as in virtualHost
	}
	return keepFirst(&m.mu, m.values, k, any(t)).(T)
}

// passthrough adds the passthrough cluster name, shared by every proxy
// of the mesh when b has a Memo.
func (b *build) passthrough(name string) {
	if b.memo != nil {
		if added, _ := b.memo.part(b, passthroughKey{b.id.MeshOwner, name}, func(c *build) { c.addCluster(passthroughCluster(name)) }); added {
			return
		}
	}
	b.addCluster(passthroughCluster(name))
}

// Shared is how many translations took their egress from the Memo instead
// of building it.
func (m *Memo) Shared() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shared
}

// SharedClusters is how many egress clusters translations took from the
// Memo instead of building them.
func (m *Memo) SharedClusters() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusters
}

// part is what c built, as a part to merge into other builds.
func (c *build) part() *egressPart {
	return &egressPart{listeners: flat(c.listeners), routes: flat(c.routes), clusters: flat(c.clusters),
		endpoints: flat(c.endpoints), sources: flat(c.sources), deps: keys(c.deps), eps: keys(c.eps),
		secrets: flat(c.secrets), err: c.err}
}

// merge adds a part's output to b as if b had built it.
func (b *build) merge(p *egressPart) {
	for _, l := range p.listeners {
		b.listeners[l.name] = l.v
	}
	for _, r := range p.routes {
		b.routes[r.name] = r.v
	}
	for _, c := range p.clusters {
		b.clusters[c.name] = c.v
	}
	for _, e := range p.endpoints {
		b.endpoints[e.name] = e.v
		delete(b.sources, e.name)
	}
	for _, s := range p.sources {
		b.setSource(s.name, s.v)
	}
	for _, d := range p.deps {
		b.deps[d] = struct{}{}
	}
	for _, n := range p.eps {
		b.addEps(n)
	}
	for _, r := range p.secrets {
		b.addSecret(r.name, r.v)
	}
	if b.err == nil {
		b.err = p.err
	}
}

// keepFirst stores v under k in m unless a value is there already, and
// returns the one stored: two translations that built the same part at
// once built equal values, and every caller then shares the first.
func keepFirst[K comparable, V any](mu *sync.Mutex, m map[K]V, k K, v V) V {
	mu.Lock()
	defer mu.Unlock()
	if q, ok := m[k]; ok {
		return q
	}
	m[k] = v
	return v
}
