package translate

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestEndpointsOnly checks the contract the xDS server relies on to follow
// a Cloud Map change by rebuilding ClusterLoadAssignments alone: when only
// the View's Endpoints change, a new translation differs from the old one
// only in the assignments its EndpointSources name, and each of those is
// LoadAssignment of its source and the node's new endpoints. Random
// meshes, random endpoints before and after (ports, IPv6, none at all).
func TestEndpointsOnly(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	sources := 0
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 7))
		v := randomMesh(rng)
		for _, ipp := range []appmesh.IpPreference{"", appmesh.IpPreferenceIpv6Preferred, appmesh.IpPreferenceIpv4Only} {
			if ipp != "" {
				v.Mesh.Spec.ServiceDiscovery = &appmesh.MeshServiceDiscovery{IpPreference: ipp}
			}
			v.Endpoints = randomEndpoints(rng, v)
			before := map[Identity]*Resources{}
			for _, id := range proxies(v, defaultAccount) {
				r, err := Translate(v, id)
				if err != nil {
					t.Fatalf("seed %d %s: %v", seed, goldenName(id), err)
				}
				before[id] = r
				sources += len(r.EndpointSources)
				sameAssignments(t, fmt.Sprintf("seed %d %s", seed, goldenName(id)), v, r)
			}
			v.Endpoints = randomEndpoints(rng, v)
			for id, old := range before {
				what := fmt.Sprintf("seed %d %s after an endpoint change", seed, goldenName(id))
				r, err := Translate(v, id)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				sameAssignments(t, what, v, r)
				if !equalLists(old.Listeners, r.Listeners) || !equalLists(old.Routes, r.Routes) || !equalLists(old.Clusters, r.Clusters) {
					t.Fatalf("%s: listeners, routes or clusters changed", what)
				}
				if !slices.Equal(old.Deps, r.Deps) || !slices.Equal(old.EndpointsOf, r.EndpointsOf) || !slices.Equal(old.EndpointSources, r.EndpointSources) {
					t.Fatalf("%s: dependencies or endpoint sources changed", what)
				}
				if len(old.Endpoints) != len(r.Endpoints) {
					t.Fatalf("%s: %d assignments, %d before", what, len(r.Endpoints), len(old.Endpoints))
				}
				for i, e := range r.Endpoints {
					if _, ok := sourceOf(r, e.GetClusterName()); !ok && !proto.Equal(e, old.Endpoints[i]) {
						t.Fatalf("%s: assignment %s has no source but changed", what, e.GetClusterName())
					}
				}
			}
		}
	}
	if sources < n {
		t.Fatalf("only %d endpoint sources in %d meshes: the generator is too sparse", sources, n)
	}
}

// sameAssignments checks that every assignment with a source is
// LoadAssignment of it, and that every source names an assignment.
func sameAssignments(t *testing.T, what string, v *View, r *Resources) {
	t.Helper()
	if !slices.IsSortedFunc(r.EndpointSources, func(a, b EndpointSource) int { return cmp.Compare(a.Cluster, b.Cluster) }) {
		t.Fatalf("%s: endpoint sources not sorted by cluster", what)
	}
	byName := map[string]bool{}
	for _, e := range r.Endpoints {
		byName[e.GetClusterName()] = true
		src, ok := sourceOf(r, e.GetClusterName())
		if !ok {
			continue
		}
		if want := LoadAssignment(src, v.Endpoints[src.Node]); !proto.Equal(e, want) {
			t.Fatalf("%s: assignment %s\n%v\nis not LoadAssignment of its source %+v:\n%v", what, e.GetClusterName(), e, src, want)
		}
	}
	for _, src := range r.EndpointSources {
		if !byName[src.Cluster] {
			t.Fatalf("%s: source %+v names no assignment", what, src)
		}
	}
}

func sourceOf(r *Resources, cluster string) (EndpointSource, bool) {
	i, ok := slices.BinarySearchFunc(r.EndpointSources, cluster, func(s EndpointSource, c string) int { return cmp.Compare(s.Cluster, c) })
	if !ok {
		return EndpointSource{}, false
	}
	return r.EndpointSources[i], true
}

func equalLists[T proto.Message](a, b []T) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return proto.Equal(x, y) })
}

// randomEndpoints gives each Cloud Map node of v zero to three instances,
// with IPv4, IPv6 or both, some with an instance port, some repeated.
func randomEndpoints(rng *rand.Rand, v *View) map[string][]Endpoint {
	out := map[string][]Endpoint{}
	for _, name := range sortedKeys(v.VirtualNodes) {
		vn := v.VirtualNodes[name]
		if vn.Spec == nil || vn.Spec.ServiceDiscovery == nil || vn.Spec.ServiceDiscovery.AwsCloudMap == nil || rng.IntN(4) == 0 {
			continue
		}
		for range rng.IntN(4) {
			h := 1 + rng.IntN(3)
			var e Endpoint
			if rng.IntN(3) != 0 {
				e.IPv4 = fmt.Sprintf("10.1.0.%d", h)
			}
			if rng.IntN(3) != 1 {
				e.IPv6 = fmt.Sprintf("fd00::%d", h)
			}
			if rng.IntN(2) == 0 {
				e.Port = uint32(9000 + rng.IntN(2))
			}
			out[name] = append(out[name], e)
		}
	}
	return out
}
