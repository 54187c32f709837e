package translate

import (
	"bytes"
	"slices"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestKeptOrder: a translation whose names and dependencies are the same
// sets as the identity's last hands out the kept lists (the dependency
// list is the very same slice), and one whose sets changed (a router's
// routes removed) gets them sorted again, equal to Translate's.
func TestKeptOrder(t *testing.T) {
	v := bigMesh()
	kept := NewKept()
	ids := proxies(v, defaultAccount)
	translateAll := func() map[Identity]*Resources {
		t.Helper()
		out := map[Identity]*Resources{}
		m := NewMemoKeeping(kept)
		for _, id := range ids {
			r, err := TranslateWith(v, id, m)
			if err != nil {
				t.Fatal(err)
			}
			out[id] = r
		}
		return out
	}
	check := func(got map[Identity]*Resources) {
		t.Helper()
		for _, id := range ids {
			want, err := Translate(v, id)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(want.Deps, got[id].Deps) {
				t.Fatalf("%s: deps\n%v\nwant\n%v", goldenName(id), got[id].Deps, want.Deps)
			}
			if w, g := render(t, id, want), render(t, id, got[id]); !bytes.Equal(w, g) {
				t.Fatalf("%s: with kept order differs from Translate:\n%s", goldenName(id), firstDiff(w, g))
			}
		}
	}
	first := translateAll()
	second := translateAll()
	check(second)
	for _, id := range ids {
		if a, b := first[id].Deps, second[id].Deps; len(a) == 0 || &a[0] != &b[0] {
			t.Fatalf("%s: nothing changed, yet the dependency list was built again", goldenName(id))
		}
	}
	// Remove every route of the router with the most callers: its services'
	// callers lose their routes' clusters and dependencies.
	var router string
	for name, rs := range v.Routes {
		if len(rs) > 0 && (router == "" || name < router) {
			router = name
		}
	}
	if router == "" {
		t.Fatal("bigMesh has no routes")
	}
	v.Routes[router] = []*appmesh.RouteData{}
	third := translateAll()
	check(third)
	changed := 0
	for _, id := range ids {
		if !slices.Equal(first[id].Deps, third[id].Deps) {
			changed++
		}
	}
	if changed == 0 {
		t.Fatalf("removing %s's routes changed no proxy's dependencies: the test proves nothing", router)
	}
}
