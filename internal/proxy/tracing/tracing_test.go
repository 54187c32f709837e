package tracing

import (
	"net/http"
	"testing"
)

// TestCanonicalKey: the names the propagators ask for map to the
// canonical form net/http stores them under.
func TestCanonicalKey(t *testing.T) {
	tr, _ := newTestTracer(t, "127.0.0.1:4317", 8, 8)
	names := append(tr.extract.Fields(), tr.inject.Fields()...)
	names = append(names, "x-b3-parentspanid", "X-Amzn-Trace-Id")
	for _, n := range names {
		if got, want := canonicalKey(n), http.CanonicalHeaderKey(n); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", n, got, want)
		}
	}
}
