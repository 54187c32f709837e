package translate

import (
	"github.com/weftmesh/weft/internal/appmesh"
)

// A virtual service's resolution (servicePorts: its ports, routes and
// targets) is what every caller's egress starts from. A write that
// changes one route leaves the resolution of every other service as it
// was, and a proxy with ten backends would otherwise resolve all ten
// again. So the Memo resolves each service once per batch, and a Kept
// carries each resolution to the next batches with what it read (the
// View's virtual service, router, route list and nodes, by pointer: the
// View's resources are replaced on change, never modified): a batch takes
// the kept resolution when every one of them is still the View's.

// portsKey names a virtual service of a mesh in a View.
type portsKey struct {
	v       *View
	owner   string
	mesh    string
	service string
}

// resolution is a virtual service's servicePorts, the dependencies it
// recorded and, for a Kept, what the View held for each when resolved.
type resolution struct {
	sps  []svcPort
	deps []appmesh.Ref
	// inputs[i] is what the View held for deps[i]; nil when one of the
	// deps is not of a kind inputOf knows (then it is not kept).
	inputs []viewInput
}

// viewInput is what a View holds for one dependency: a resource's
// pointer (nil when absent), or a router's route list.
type viewInput struct {
	ptr    any
	routes []*appmesh.RouteData
}

// maxKeptPorts bounds the resolutions a Kept holds; past it they are all
// dropped and kept again as batches resolve them.
const maxKeptPorts = 1 << 16

// inputOf returns what v holds for a dependency of a resolution; ok is
// false for a kind a resolution does not read.
func inputOf(v *View, r appmesh.Ref) (in viewInput, ok bool) {
	switch {
	case r.Kind == appmesh.KindVirtualService && r.Name != "":
		return viewInput{ptr: v.VirtualServices[r.Name]}, true
	case r.Kind == appmesh.KindVirtualNode && r.Name != "":
		return viewInput{ptr: v.VirtualNodes[r.Name]}, true
	case r.Kind == appmesh.KindVirtualRouter && r.Name != "":
		return viewInput{ptr: v.VirtualRouters[r.Name]}, true
	case r.Kind == appmesh.KindRoute && r.Name == "":
		return viewInput{routes: v.Routes[r.Parent]}, true
	}
	return viewInput{}, false
}

// same reports whether v holds what the resolution read.
func (r *resolution) same(v *View) bool {
	if r.inputs == nil {
		return false
	}
	for i, d := range r.deps {
		in, _ := inputOf(v, d)
		was := r.inputs[i]
		if in.ptr != was.ptr || len(in.routes) != len(was.routes) {
			return false
		}
		for j, rd := range in.routes {
			if rd != was.routes[j] {
				return false
			}
		}
	}
	return true
}

// servicePorts is b.servicePorts shared through m (and m's Kept).
func (m *Memo) servicePorts(b *build, name string) []svcPort {
	k := portsKey{v: b.v, owner: b.id.MeshOwner, mesh: b.id.Mesh, service: name}
	m.mu.Lock()
	r := m.ports[k]
	m.mu.Unlock()
	if r == nil {
		r = m.kept.resolution(k, b.v)
		if r == nil {
			r = resolve(b, name)
			m.kept.keepResolution(k, r)
		}
		m.mu.Lock()
		if q := m.ports[k]; q != nil {
			r = q // resolved twice at once: equal, the first stored is kept
		} else {
			m.ports[k] = r
		}
		m.mu.Unlock()
	}
	for _, d := range r.deps {
		b.deps[d] = struct{}{}
	}
	return r.sps
}

// resolve resolves a service on a build of its own, to record exactly
// its dependencies, and what the View holds for each.
func resolve(b *build, name string) *resolution {
	c := &build{v: b.v, id: b.id, deps: make(map[appmesh.Ref]struct{}, 8)}
	r := &resolution{sps: c.resolveServicePorts(name), deps: keys(c.deps)}
	inputs := make([]viewInput, len(r.deps))
	for i, d := range r.deps {
		in, ok := inputOf(b.v, d)
		if !ok {
			return r
		}
		inputs[i] = in
	}
	r.inputs = inputs
	return r
}

// resolution returns the kept resolution named key when v still holds
// what it read; nil when none (or k is nil).
func (k *Kept) resolution(key portsKey, v *View) *resolution {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	r := k.ports[key]
	k.mu.Unlock()
	if r == nil || !r.same(v) {
		return nil
	}
	k.mu.Lock()
	k.portsReused++
	k.mu.Unlock()
	return r
}

// keepResolution keeps r for the next batches when it can be checked.
func (k *Kept) keepResolution(key portsKey, r *resolution) {
	if k == nil || r.inputs == nil {
		return
	}
	k.mu.Lock()
	if len(k.ports) >= maxKeptPorts {
		clear(k.ports)
	}
	k.ports[key] = r
	k.mu.Unlock()
}

// PortsReused is how many times a batch took a service's resolution as
// kept.
func (k *Kept) PortsReused() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.portsReused
}
