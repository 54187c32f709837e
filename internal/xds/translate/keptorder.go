package translate

import (
	"slices"

	"github.com/weftmesh/weft/internal/appmesh"
)

// A write that changes one route changes what a proxy's resources hold
// but, most of the time, neither which resources it has nor what it
// read: the same names and the same dependencies. The Kept holds each
// identity's sorted lists of names and dependencies, and the next
// translation whose sets are the same takes them as they are: a set is
// checked against the kept list in one pass instead of sorted again, and
// the kept dependency list is handed out again (the server compares it
// with the proxy's by pointer first).

// keptOrder is one identity's sorted names of each type and its sorted
// dependencies, as its last translation gave them. Never modified once
// kept: a translation whose sets differ keeps a new one.
type keptOrder struct {
	listeners, routes, clusters, endpoints []string
	deps                                   []appmesh.Ref
}

// order returns the order kept for id; nil when none (or k is nil).
func (k *Kept) order(id Identity) *keptOrder {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.orders[id]
}

// keepOrder keeps o for id.
func (k *Kept) keepOrder(id Identity, o *keptOrder) {
	if k == nil {
		return
	}
	k.mu.Lock()
	k.orders[id] = o
	k.mu.Unlock()
}

// sameKeys reports whether keys, sorted, are exactly m's keys.
func sameKeys[K comparable, V any](m map[K]V, keys []K) bool {
	if len(keys) != len(m) {
		return false
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// valuesInOrder returns m's values in the order of was when it lists
// m's keys, sorted by key otherwise; names is the order used.
func valuesInOrder[T any](m map[string]T, was []string) (values []T, names []string) {
	names = was
	if !sameKeys(m, was) {
		names = sortedKeys(m)
	}
	values = make([]T, len(names))
	for i, n := range names {
		values[i] = m[n]
	}
	return values, names
}

// sortedDeps is the build's dependencies sorted: was when it lists the
// same set.
func (b *build) sortedDeps(was []appmesh.Ref) []appmesh.Ref {
	if sameKeys(b.deps, was) {
		return was
	}
	deps := make([]appmesh.Ref, 0, len(b.deps))
	for d := range b.deps {
		deps = append(deps, d)
	}
	slices.SortFunc(deps, compareRefs)
	return deps
}

// same reports whether o holds the very lists was holds.
func (o *keptOrder) same(was *keptOrder) bool {
	return sameSlice(o.listeners, was.listeners) && sameSlice(o.routes, was.routes) && sameSlice(o.clusters, was.clusters) &&
		sameSlice(o.endpoints, was.endpoints) && sameSlice(o.deps, was.deps)
}

// sameSlice reports whether a and b are the same slice (not merely equal).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
