package translate

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestKeptFollowsChanges: an ingress kept from an earlier batch is used
// only while the node and the mesh it was built from are in the View. A
// write that replaces a node (its listener port, its logging, its TLS)
// or the mesh (its IP preference) reaches each proxy's next translation,
// which equals a plain Translate of the new View; a write that replaces
// neither (a route's weights) lets every sidecar take its ingress as kept.
func TestKeptFollowsChanges(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 11))
		v := randomMesh(rng)
		kept := NewKept()
		ids := proxies(v, defaultAccount)
		check := func(step string) {
			t.Helper()
			keptEqualsTranslate(t, v, ids, kept, seed, step)
		}
		check("first batch")
		sidecars := 0
		for _, id := range ids {
			if id.Kind == appmesh.KindVirtualNode && !id.Proxyless {
				sidecars++
			}
		}
		before := kept.Reused()
		check("no change")
		if got := kept.Reused() - before; got != sidecars {
			t.Fatalf("seed %d: %d of %d sidecars took their ingress as kept with nothing changed", seed, got, sidecars)
		}
		// Each node replaced by one with every listener port moved, the
		// access log switched and TLS added or removed.
		for name, vn := range v.VirtualNodes {
			c := copyNode(t, vn, name)
			for i := range c.Spec.Listeners {
				l := &c.Spec.Listeners[i]
				if l.PortMapping != nil && l.PortMapping.Port != nil {
					l.PortMapping.Port = ptr(*l.PortMapping.Port + 1000)
				}
				if rng.IntN(2) == 0 {
					l.Tls = &appmesh.ListenerTls{Mode: appmesh.ListenerTlsModePermissive,
						Certificate: &appmesh.ListenerTlsCertificate{Sds: &appmesh.ListenerTlsSdsCertificate{SecretName: ptr("cert")}}}
				}
			}
			if c.Spec.Logging == nil {
				c.Spec.Logging = &appmesh.Logging{AccessLog: &appmesh.AccessLog{File: &appmesh.FileAccessLog{Path: ptr("/dev/stderr")}}}
			} else {
				c.Spec.Logging = nil
			}
			v.VirtualNodes[name] = c
		}
		check("nodes replaced")
		mesh := *v.Mesh
		mesh.Spec = &appmesh.MeshSpec{ServiceDiscovery: &appmesh.MeshServiceDiscovery{IpPreference: appmesh.IpPreferenceIpv6Preferred}}
		if v.Mesh.Spec != nil {
			mesh.Spec.EgressFilter = v.Mesh.Spec.EgressFilter
		}
		v.Mesh = &mesh
		check("mesh replaced")
	}
}

// TestKeptForget: Forget drops an identity's kept ingress.
func TestKeptForget(t *testing.T) {
	v := randomMesh(rand.New(rand.NewPCG(3, 11)))
	kept := NewKept()
	m := NewMemoKeeping(kept)
	var sidecar Identity
	for _, id := range proxies(v, defaultAccount) {
		if _, err := TranslateWith(v, id, m); err != nil {
			t.Fatal(err)
		}
		if id.Kind == appmesh.KindVirtualNode && !id.Proxyless {
			sidecar = id
		}
	}
	n := kept.Len()
	if n == 0 {
		t.Fatal("nothing kept")
	}
	kept.Forget(sidecar)
	if got := kept.Len(); got != n-1 {
		t.Fatalf("kept %d after Forget, want %d", got, n-1)
	}
}

// keptEqualsTranslate translates every proxy of ids with a Memo keeping
// from kept, and fails unless each equals a plain Translate of v: the
// check after each step of the Kept tests (seed and step name the step).
func keptEqualsTranslate(t *testing.T, v *View, ids []Identity, kept *Kept, seed uint64, step string) {
	t.Helper()
	m := NewMemoKeeping(kept)
	for _, id := range ids {
		want, err := Translate(v, id)
		if err != nil {
			t.Fatalf("seed %d %s %s: %v", seed, step, goldenName(id), err)
		}
		got, err := TranslateWith(v, id, m)
		if err != nil {
			t.Fatalf("seed %d %s %s: %v", seed, step, goldenName(id), err)
		}
		if w, g := render(t, id, want), render(t, id, got); !bytes.Equal(w, g) {
			t.Fatalf("seed %d, after %s, %s: with what was kept, differs from Translate:\n%s", seed, step, goldenName(id), firstDiff(w, g))
		}
	}
}
