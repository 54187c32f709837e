package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFirstViewBounded: an answer over the bound is not drawn (the page
// says "Loading…" and its module reads the list itself), nor is one that
// is not the API's JSON; the page is served either way.
func TestFirstViewBounded(t *testing.T) {
	for _, c := range []struct {
		name, body string
		status     int
		max        int
		drawn      bool
	}{
		{"within the bound", `{"meshes":[{"meshName":"m<1>","arn":"arn:aws:appmesh:us-east-1:1:mesh/m<1>","version":2,"lastUpdatedAt":1796280647.833}]}`, 200, DefaultMaxFirstViewBytes, true},
		{"over the bound", `{"meshes":[{"meshName":"` + strings.Repeat("m", 300) + `"}]}`, 200, 256, false},
		{"not JSON", `<html>`, 200, DefaultMaxFirstViewBytes, false},
		{"an error without a message", `{}`, 500, DefaultMaxFirstViewBytes, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := New(nil)
			h.maxFirstViewBytes = c.max
			var asked string
			// Stands for the API's handler chain: answers the list.
			h.UseAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked = r.Method + " " + r.URL.String()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/console/", nil))
			page := w.Body.String()
			if w.Code != 200 || asked != "GET "+firstListURL {
				t.Fatalf("%d, asked %q", w.Code, asked)
			}
			drawn := strings.Contains(page, `id="list-mesh"`)
			if drawn != c.drawn || drawn == strings.Contains(page, "Loading…") || drawn != strings.Contains(page, `id="weft-first"`) {
				t.Fatalf("drawn %v, want %v:\n%s", drawn, c.drawn, page[strings.Index(page, "<main"):])
			}
			if drawn && !strings.Contains(page, `<tr><td><a href="#/mesh/m%3C1%3E">m&lt;1&gt;</a></td><td>2</td><td>2026-12-03 06:50:47 UTC</td>`) {
				t.Fatalf("row:\n%s", page[strings.Index(page, "<main"):])
			}
		})
	}
}

// TestEncodeURIComponent: as JavaScript's.
func TestEncodeURIComponent(t *testing.T) {
	for in, want := range map[string]string{
		"plain-name_1.x": "plain-name_1.x", `a<b&c"d`: "a%3Cb%26c%22d", "!~*'()": "!~*'()",
		"a b/c?d#e": "a%20b%2Fc%3Fd%23e", "é": "%C3%A9",
	} {
		if got := encodeURIComponent(in); got != want {
			t.Errorf("encodeURIComponent(%q) = %q, want %q", in, got, want)
		}
	}
}
