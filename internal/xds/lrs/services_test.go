package lrs

import (
	"path/filepath"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// TestVirtualService reads specs as the API stores them: the virtual
// service of an edge is named when exactly one of the source's backends
// (or gateway routes) reaches the target.
func TestVirtualService(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ref := func(k appmesh.Kind, parent, name string) string {
		return appmesh.Ref{Owner: owner, Mesh: "m", Kind: k, Parent: parent, Name: name}.Key()
	}
	docs := map[string]string{
		appmesh.MeshKey(owner, "m"):                          `{"meshName":"m"}`,
		ref(appmesh.KindVirtualNode, "", "front"):            `{"spec":{"backends":[{"virtualService":{"virtualServiceName":"color.m.local"}},{"virtualService":{"virtualServiceName":"red.m.local"}},{"virtualService":{"virtualServiceName":"blue.m.local"}}]}}`,
		ref(appmesh.KindVirtualNode, "", "red"):              `{"spec":{}}`,
		ref(appmesh.KindVirtualService, "", "color.m.local"): `{"spec":{"provider":{"virtualRouter":{"virtualRouterName":"colors"}}}}`,
		ref(appmesh.KindVirtualService, "", "red.m.local"):   `{"spec":{"provider":{"virtualNode":{"virtualNodeName":"red"}}}}`,
		ref(appmesh.KindVirtualService, "", "blue.m.local"):  `{"spec":{"provider":{"virtualNode":{"virtualNodeName":"blue"}}}}`,
		ref(appmesh.KindRoute, "colors", "split"):            `{"spec":{"httpRoute":{"action":{"weightedTargets":[{"virtualNode":"red","weight":4},{"virtualNode":"green","weight":1}]}}}}`,
		ref(appmesh.KindGatewayRoute, "gw", "to-color"):      `{"spec":{"httpRoute":{"action":{"target":{"virtualService":{"virtualServiceName":"color.m.local"}}}}}}`,
	}
	if _, err := st.Update(t.Context(), func(tx store.Tx) error {
		for k, v := range docs {
			if err := tx.Put(k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sv, found, err := LoadServices(t.Context(), st, owner, "m")
	if err != nil || !found {
		t.Fatalf("LoadServices: %v, found %t", err, found)
	}
	front := Endpoint{appmesh.KindVirtualNode, "front"}
	gw := Endpoint{appmesh.KindVirtualGateway, "gw"}
	for _, tc := range []struct {
		source Endpoint
		target string
		want   string
	}{
		{front, "green", "color.m.local"}, // through the router only
		{front, "blue", "blue.m.local"},   // its own provider
		{front, "red", ""},                // the router and red.m.local both reach red
		{front, "yellow", ""},             // no backend reaches it
		{gw, "red", "color.m.local"},      // a gateway route's target
		{Endpoint{appmesh.KindVirtualNode, "red"}, "blue", ""},
	} {
		if got := sv.VirtualService(tc.source, tc.target); got != tc.want {
			t.Errorf("%v -> %s: %q, want %q", tc.source, tc.target, got, tc.want)
		}
	}
	if _, found, err := LoadServices(t.Context(), st, owner, "nope"); err != nil || found {
		t.Errorf("a mesh that does not exist: found %t, %v", found, err)
	}
}
