package translate

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestMemoSameAsTranslate: translations sharing a Memo give exactly what
// Translate gives, for every proxy of every case and of random meshes, in
// any order, with twins (nodes whose egress inputs are equal) sharing
// their egress.
func TestMemoSameAsTranslate(t *testing.T) {
	var views []*View
	var owners []string
	for _, dir := range caseDirs(t) {
		v, owner := replay(t, dir)
		addEndpoints(v)
		addTwins(t, v)
		views, owners = append(views, v), append(owners, owner)
	}
	for seed := range uint64(100) {
		v := randomMesh(rand.New(rand.NewPCG(seed, 7)))
		addTwins(t, v)
		views, owners = append(views, v), append(owners, defaultAccount)
	}
	shared := 0
	for i, v := range views {
		ids := proxies(v, owners[i])
		want := make([][]byte, len(ids))
		wantSrc := make([][]EndpointSource, len(ids))
		for j, id := range ids {
			r, err := Translate(v, id)
			if err != nil {
				t.Fatalf("%s: %v", goldenName(id), err)
			}
			want[j], wantSrc[j] = render(t, id, r), r.EndpointSources
		}
		m := NewMemo()
		// Twice, the second time backwards, so that parts are both built
		// and reused by every identity.
		for pass := range 2 {
			for k := range ids {
				j := k
				if pass == 1 {
					j = len(ids) - 1 - k
				}
				r, err := TranslateWith(v, ids[j], m)
				if err != nil {
					t.Fatalf("%s: %v", goldenName(ids[j]), err)
				}
				if got := render(t, ids[j], r); !bytes.Equal(got, want[j]) {
					t.Fatalf("view %d %s, pass %d: with a Memo differs from Translate:\n%s", i, goldenName(ids[j]), pass, firstDiff(want[j], got))
				}
				if !reflect.DeepEqual(r.EndpointSources, wantSrc[j]) {
					t.Fatalf("view %d %s: endpoint sources %+v, want %+v", i, goldenName(ids[j]), r.EndpointSources, wantSrc[j])
				}
			}
		}
		shared += m.Shared()
	}
	if shared == 0 {
		t.Fatal("no translation shared an egress: the twins should have")
	}
	t.Logf("%d translations took their egress from a Memo", shared)
}

// addTwins adds, for each virtual node, one with another name and the same
// spec (a copy), whose egress is the original's, and one that differs only
// in its backend defaults (TLS to its backends), whose egress is not.
func addTwins(t *testing.T, v *View) {
	t.Helper()
	for _, n := range sortedKeys(v.VirtualNodes) {
		twin := copyNode(t, v.VirtualNodes[n], n+"-twin")
		v.VirtualNodes[*twin.VirtualNodeName] = twin
		v.Endpoints[*twin.VirtualNodeName] = v.Endpoints[n]
		other := copyNode(t, v.VirtualNodes[n], n+"-tls")
		if other.Spec == nil {
			continue
		}
		if other.Spec.BackendDefaults != nil {
			other.Spec.BackendDefaults = nil
		} else {
			other.Spec.BackendDefaults = &appmesh.BackendDefaults{ClientPolicy: &appmesh.ClientPolicy{Tls: &appmesh.ClientPolicyTls{
				Enforce:    ptr(true),
				Validation: &appmesh.TlsValidationContext{Trust: &appmesh.TlsValidationContextTrust{File: &appmesh.TlsValidationContextFileTrust{CertificateChain: ptr("/certs/ca.pem")}}},
			}}}
		}
		v.VirtualNodes[*other.VirtualNodeName] = other
		v.Endpoints[*other.VirtualNodeName] = v.Endpoints[n]
	}
}

func copyNode(t *testing.T, vn *appmesh.VirtualNodeData, name string) *appmesh.VirtualNodeData {
	t.Helper()
	b, err := json.Marshal(vn)
	if err != nil {
		t.Fatal(err)
	}
	var c appmesh.VirtualNodeData
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	c.VirtualNodeName = &name
	return &c
}
