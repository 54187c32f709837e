package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// build accumulates one translation. It is used by one goroutine and
// discarded after Translate returns.
type build struct {
	v    *View
	id   Identity
	memo *Memo // nil: share nothing
	// hostOnly: the build makes a virtual host alone (Memo.EgressHost):
	// egressCluster names the clusters its routes send to and builds
	// none.
	hostOnly bool

	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	sources   map[string]EndpointSource // by cluster, for the endpoints built from Cloud Map

	deps    map[appmesh.Ref]struct{}
	eps     map[string]struct{}
	secrets map[string]SecretRole // ADS secrets referenced, by name
	leafDNS []string              // Resources.LeafDNSNames

	err error // first error met; later ones are dropped
}

func newBuild(v *View, id Identity) *build {
	return &build{
		v: v, id: id,
		listeners: map[string]*listenerv3.Listener{},
		routes:    map[string]*routev3.RouteConfiguration{},
		clusters:  map[string]*clusterv3.Cluster{},
		endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		deps:      map[appmesh.Ref]struct{}{},
		// sources, eps and secrets are made on first use (most parts
		// have none): see the set* methods.
	}
}

// dep records that the output depends on a resource, present or not: a
// resource created later must reach the proxies that looked for it. An
// empty name stands for every resource of the kind (under parent).
func (b *build) dep(kind appmesh.Kind, parent, name string) {
	b.deps[appmesh.Ref{Owner: b.id.MeshOwner, Mesh: b.id.Mesh, Kind: kind, Parent: parent, Name: name}] = struct{}{}
}

// any packs a message deterministically, so that equal inputs give equal
// bytes (maps inside Struct fields would otherwise be in random order).
func (b *build) any(m proto.Message) *anypb.Any {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: v}
}

func (b *build) addListener(l *listenerv3.Listener) { b.listeners[l.GetName()] = l }

func (b *build) addRoute(r *routev3.RouteConfiguration) { b.routes[r.GetName()] = r }

func (b *build) addCluster(c *clusterv3.Cluster) { b.clusters[c.GetName()] = c }

// addEndpoints adds a ClusterLoadAssignment and, when it was built from a
// node's Cloud Map endpoints, how (src; nil otherwise).
func (b *build) addEndpoints(e *endpointv3.ClusterLoadAssignment, src *EndpointSource) {
	b.endpoints[e.GetClusterName()] = e
	delete(b.sources, e.GetClusterName())
	if src != nil {
		b.setSource(e.GetClusterName(), *src)
	}
}

func (b *build) setSource(cluster string, src EndpointSource) {
	if b.sources == nil {
		b.sources = map[string]EndpointSource{}
	}
	b.sources[cluster] = src
}

func (b *build) addEps(node string) {
	if b.eps == nil {
		b.eps = map[string]struct{}{}
	}
	b.eps[node] = struct{}{}
}

func (b *build) addSecret(name string, role SecretRole) {
	if b.secrets == nil {
		b.secrets = map[string]SecretRole{}
	}
	b.secrets[name] |= role
}

func (b *build) hasCluster(name string) bool { _, ok := b.clusters[name]; return ok }

// result sorts everything by name.
func (b *build) result() (*Resources, error) {
	if b.err != nil {
		return nil, b.err
	}
	var k *Kept
	if b.memo != nil {
		k = b.memo.kept
	}
	was := k.order(b.id)
	if was == nil {
		was = &keptOrder{}
	}
	o := &keptOrder{}
	r := &Resources{}
	r.Listeners, o.listeners = valuesInOrder(b.listeners, was.listeners)
	r.Routes, o.routes = valuesInOrder(b.routes, was.routes)
	r.Clusters, o.clusters = valuesInOrder(b.clusters, was.clusters)
	r.Endpoints, o.endpoints = valuesInOrder(b.endpoints, was.endpoints)
	if len(b.sources) > 0 {
		r.EndpointSources = sortedValues(b.sources)
	}
	r.Deps = b.sortedDeps(was.deps)
	o.deps = r.Deps
	if k != nil && !o.same(was) {
		k.keepOrder(b.id, o)
	}
	if len(b.eps) > 0 {
		r.EndpointsOf = make([]string, 0, len(b.eps))
	}
	for n := range b.eps {
		r.EndpointsOf = append(r.EndpointsOf, n)
	}
	slices.Sort(r.EndpointsOf)
	for _, n := range sortedKeys(b.secrets) {
		r.Secrets = append(r.Secrets, SecretRef{Name: n, Role: b.secrets[n]})
	}
	r.LeafDNSNames = b.leafDNS
	return r, nil
}

func sortedValues[T any](m map[string]T) []T {
	out := make([]T, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

// compareRefs orders Refs by Owner, Mesh, Kind, Parent, Name; it stops at
// the first field that differs (cmp.Or would compare all five first).
func compareRefs(a, b appmesh.Ref) int {
	if c := strings.Compare(a.Owner, b.Owner); c != 0 {
		return c
	}
	if c := strings.Compare(a.Mesh, b.Mesh); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.Parent, b.Parent); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
