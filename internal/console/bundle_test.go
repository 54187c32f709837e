package console

import (
	"slices"
	"testing"
)

// firstPageModules are the modules the first page (the meshes list)
// needs: the bundle's entry and the chunks it imports statically hold
// these and nothing else.
var firstPageModules = []string{"js/api.js", "js/app.js", "js/dom.js", "js/lists.js"}

// TestBundle: the modules bundle; the first page's files hold only the
// modules it needs, and every other view's modules are in files it loads
// later.
func TestBundle(t *testing.T) {
	b, err := buildBundle()
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range b.files {
		t.Logf("%s: %d bytes, %v", n, len(c), b.inputs[n])
	}
	t.Logf("entry %s, preload %v", b.entry, b.preload)
	first := map[string]bool{}
	for _, f := range append([]string{b.entry}, b.preload...) {
		if b.files[f] == nil {
			t.Fatalf("the first page loads %s, which is not in the bundle", f)
		}
		for _, in := range b.inputs[f] {
			if !slices.Contains(firstPageModules, in) {
				t.Errorf("the first page loads %s, which holds %s", f, in)
			}
			first[in] = true
		}
	}
	for _, m := range firstPageModules {
		if !first[m] {
			t.Errorf("the first page's files lack %s", m)
		}
	}
	// Each later view is in the bundle, in files the first page does not load.
	later := map[string]bool{}
	for n, ins := range b.inputs {
		if n != b.entry && !slices.Contains(b.preload, n) {
			for _, in := range ins {
				later[in] = true
			}
		}
	}
	for _, m := range []string{"js/mesh.js", "js/forms.js", "js/acks.js", "js/proxies.js", "js/topology.js", "js/graph.js", "js/cloudmap.js"} {
		if !later[m] {
			t.Errorf("%s is not in a file loaded later", m)
		}
	}
}
