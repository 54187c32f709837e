package console

import (
	"slices"
	"strings"
	"testing"
)

// firstPageModules are the modules the first page (the meshes list)
// needs: the code inlined in the index holds these and nothing else.
var firstPageModules = []string{"js/api.js", "js/app.js", "js/dom.js", "js/lists.js"}

// TestBundle: the modules bundle; the first page's code holds only the
// modules it needs, every other view's modules are in files it imports
// when opened, and those files do not carry their own api.js or dom.js.
func TestBundle(t *testing.T) {
	b, err := buildBundle()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first page: %d bytes, %v", len(b.first), b.firstInputs)
	for n, c := range b.files {
		t.Logf("%s: %d bytes, %v", n, len(c), b.inputs[n])
	}
	if !slices.Equal(b.firstInputs, firstPageModules) {
		t.Errorf("the first page's code holds %v, want %v", b.firstInputs, firstPageModules)
	}
	later := map[string]bool{}
	for _, ins := range b.inputs {
		for _, in := range ins {
			later[in] = true
		}
	}
	for _, m := range []string{"js/mesh.js", "js/forms.js", "js/acks.js", "js/proxies.js", "js/topology.js", "js/graph.js", "js/cloudmap.js"} {
		if !later[m] {
			t.Errorf("%s is not in a file loaded later", m)
		}
	}
	for _, m := range append(firstPageModules, "js/shared.js") {
		if later[m] {
			t.Errorf("%s is in a later view's file: it would be a second instance", m)
		}
	}
	// The first page imports each view from its file, by the file's URL.
	for _, v := range []string{"mesh", "topology", "cloudmap", "proxies"} {
		var file string
		for n := range b.files {
			if strings.HasPrefix(n, v+"-") {
				file = n
			}
		}
		if file == "" || !strings.Contains(string(b.first), `import("/console/b/`+file+`")`) {
			t.Errorf("the first page does not import the view %s from its file %q", v, file)
		}
	}
}
