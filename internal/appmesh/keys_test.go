package appmesh

import "testing"

func TestKeysRoundTrip(t *testing.T) {
	refs := []Ref{
		{Owner: "111122223333", Mesh: "color-mesh", Kind: KindMesh, Name: "color-mesh"},
		{Owner: "111122223333", Mesh: "color-mesh", Kind: KindVirtualNode, Name: "red"},
		{Owner: "111122223333", Mesh: "color-mesh", Kind: KindVirtualService, Name: "red.colors.local"},
		{Owner: "111122223333", Mesh: "m/with/slash", Kind: KindRoute, Parent: "r%x", Name: "a b"},
		{Owner: "444455556666", Mesh: "m", Kind: KindGatewayRoute, Parent: "gw", Name: "gr"},
	}
	for _, r := range refs {
		got, ok := ParseKey(r.Key())
		if !ok || got != r {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", r.Key(), got, ok, r)
		}
	}
	for _, k := range []string{"appmesh/tags/x", "cloudmap/ns/1", "appmesh/res/o/m/virtualNode", "appmesh/res/o/m/bogus/x"} {
		if _, ok := ParseKey(k); ok {
			t.Errorf("ParseKey(%q) accepted a non-resource key", k)
		}
	}
}
