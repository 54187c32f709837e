package console

import (
	"strings"
	"testing"
)

// TestBundle: the modules bundle, the first page's in one file that
// imports only shared chunks, the lazily loaded views in their own.
func TestBundle(t *testing.T) {
	b, err := buildBundle()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n, c := range b.files {
		names = append(names, n)
		t.Logf("%s: %d bytes", n, len(c))
	}
	t.Logf("entry %s, preload %v", b.entry, b.preload)
	if !strings.HasPrefix(b.entry, "app-") || !strings.Contains(string(b.files[b.entry]), "meshesView") {
		t.Fatalf("entry %q of %v", b.entry, names)
	}
	for _, view := range []string{"topologyView", "namespacesView"} {
		if strings.Contains(string(b.files[b.entry]), "function "+view) {
			t.Errorf("the first page's bundle holds %s, which loads later", view)
		}
	}
}
