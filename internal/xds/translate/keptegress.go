package translate

import (
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// A sidecar's egress listener names its route tables by port and protocol
// and, for a TCP port, the clusters of the first route's targets: a write
// to a route's HTTP weights or matches changes the route tables of every
// caller and none of their listeners. The Kept holds each listener by the
// egress inputs it was built from (memoKey's, without the View) with the
// mesh and the listener's shape (egressShape), and the next batch takes it
// as built when both are the same: it is neither built nor marshalled
// again (the server keeps a kept message's encoding by pointer).

// listenerKey names a sidecar egress listener in a Kept.
type listenerKey struct {
	owner      string
	mesh       string
	spec       string // egressInputs as JSON
	sdsSocket  bool
	egressPort uint32
}

// keptListener is a listener and the mesh and shape it was built from.
type keptListener struct {
	mesh  *appmesh.MeshData
	shape string
	l     *listenerv3.Listener
}

// maxKeptListeners bounds the listeners a Kept holds; past it they are
// all dropped and kept again as batches build them.
const maxKeptListeners = 1 << 16

// egressShape is everything of the backends' resolution that the egress
// listener reads: for each port, whether it is HTTP and the protocol its
// chain is named after, or for TCP the first service's first route's
// targets (cluster names and weights) and idle timeout.
func egressShape(ports []uint32, byPort map[uint32][]svcPort) string {
	var s strings.Builder
	for _, p := range ports {
		sps := byPort[p]
		s.WriteString(strconv.FormatUint(uint64(p), 10))
		if i := firstHTTP(sps); i >= 0 {
			s.WriteString(" h ")
			s.WriteString(string(sps[i].proto))
			s.WriteByte(';')
			continue
		}
		sp := sps[0]
		s.WriteString(" t ")
		s.WriteString(string(sp.proto))
		if len(sp.routes) > 0 {
			r := sp.routes[0]
			for _, t := range r.targets {
				s.WriteByte(' ')
				s.WriteString(t.node)
				s.WriteByte(' ')
				s.WriteString(string(t.proto))
				s.WriteByte(' ')
				s.WriteString(strconv.FormatUint(uint64(t.port), 10))
				s.WriteByte(' ')
				s.WriteString(strconv.FormatUint(uint64(t.weight), 10))
			}
			if r.tcp != nil && r.tcp.Timeout != nil {
				if v, ok := millis(r.tcp.Timeout.Idle); ok {
					s.WriteString(" idle ")
					s.WriteString(strconv.FormatInt(v, 10))
				}
			}
		}
		s.WriteByte(';')
	}
	return s.String()
}

func firstHTTP(sps []svcPort) int {
	for i, sp := range sps {
		if httpFamily(sp.proto) {
			return i
		}
	}
	return -1
}

// keptEgress adds a kept egress listener to b with what building it
// would have added: each HTTP port's route table, each TCP port's
// clusters, the passthrough clusters.
func (b *build) keptEgress(l *listenerv3.Listener, ports []uint32, byPort map[uint32][]svcPort, allowAll bool) {
	for _, p := range ports {
		sps := byPort[p]
		if firstHTTP(sps) >= 0 {
			var httpSps []svcPort
			for _, sp := range sps {
				if httpFamily(sp.proto) {
					httpSps = append(httpSps, sp)
				}
			}
			b.addEgressTable(egressRouteName(httpSps[0].proto, p), httpSps, p, allowAll)
			continue
		}
		if sp := sps[0]; len(sp.routes) > 0 {
			for _, t := range sp.routes[0].targets {
				b.egressCluster(sp.service, t, envoyFlavor)
			}
		}
	}
	b.passthrough(amazonawsClusterName(b.id.Mesh))
	if allowAll {
		b.passthrough(allowAllClusterName(b.id.Mesh))
	}
	b.addListener(l)
}

// listener returns the listener kept for key when it was built from mesh
// and shape; nil otherwise.
func (k *Kept) listener(key listenerKey, mesh *appmesh.MeshData, shape string) *listenerv3.Listener {
	k.mu.Lock()
	defer k.mu.Unlock()
	kl := k.listeners[key]
	if kl == nil || kl.mesh != mesh || kl.shape != shape {
		return nil
	}
	k.listenersReused++
	return kl.l
}

// keepListener keeps l, built for key from mesh and shape.
func (k *Kept) keepListener(key listenerKey, mesh *appmesh.MeshData, shape string, l *listenerv3.Listener) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if old := k.listeners[key]; old != nil {
		delete(k.msgs, old.l)
	}
	if len(k.listeners) >= maxKeptListeners {
		for _, kl := range k.listeners {
			delete(k.msgs, kl.l)
		}
		clear(k.listeners)
	}
	k.listeners[key] = &keptListener{mesh: mesh, shape: shape, l: l}
	k.msgs[l] = struct{}{}
}

// ListenersReused is how many times a batch took an egress listener as
// kept.
func (k *Kept) ListenersReused() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.listenersReused
}

// keptSpec is a node's egressInputs as JSON, the memoKey's spec, and the
// node and IP preference it was made from; backends are the node's
// backendNames.
type keptSpec struct {
	vn        *appmesh.VirtualNodeData
	dualStack bool
	spec      string
	backends  []string
}

// egressSpec returns the egress inputs kept for id when they were made
// from vn and dualStack; ok is false otherwise (or when k is nil).
func (k *Kept) egressSpec(id Identity, vn *appmesh.VirtualNodeData, dualStack bool) (spec string, ok bool) {
	if k == nil {
		return "", false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ks, found := k.specs[id]
	if !found || ks.vn != vn || ks.dualStack != dualStack {
		return "", false
	}
	return ks.spec, true
}

// keepEgressSpec keeps id's egress inputs, made from vn and dualStack.
func (k *Kept) keepEgressSpec(id Identity, vn *appmesh.VirtualNodeData, dualStack bool, spec string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	k.specs[id] = keptSpec{vn: vn, dualStack: dualStack, spec: spec, backends: backendNames(vn)}
	k.mu.Unlock()
}

// backendNames returns vn's backendNames, as kept for id when its egress
// inputs were kept from vn (the list is shared: read only).
func (k *Kept) backendNames(id Identity, vn *appmesh.VirtualNodeData) []string {
	if k == nil {
		return backendNames(vn)
	}
	k.mu.Lock()
	ks, found := k.specs[id]
	k.mu.Unlock()
	if !found || ks.vn != vn {
		return backendNames(vn)
	}
	return ks.backends
}
