package route

import (
	"fmt"
	"net/http"
	"testing"
)

// TestStripH2C: an h2c upgrade request loses its h2c headers as Envoy's
// HTTP/1 codec strips them (ConnectionImpl::onHeadersCompleteImpl): only
// when Upgrade, its lines joined without the empty ones, is h2c (case
// aside) and Connection has the upgrade token; then Upgrade and
// HTTP2-Settings go, and Connection keeps its other tokens, joined by
// commas without blanks, or goes.
func TestStripH2C(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   http.Header
		want string // the header after, or "kept" when not an h2c upgrade
	}{
		{"curl", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMA"}}, "map[]"},
		{"keep-alive", http.Header{"Connection": {"keep-alive, Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMA"}},
			"map[Connection:[keep-alive]]"},
		{"two lines, blanks, case", http.Header{"Connection": {" UPGRADE , , X-A", "http2-settings,close"}, "Upgrade": {"H2c"},
			"Http2-Settings": {"A", "B"}, "X-A": {"1"}}, "map[Connection:[X-A,close] X-A:[1]]"},
		{"an empty Upgrade line", http.Header{"Connection": {"upgrade"}, "Upgrade": {"", "h2c"}}, "map[]"},
		{"no HTTP2-Settings", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2c"}}, "map[]"},
		{"no upgrade token", http.Header{"Connection": {"HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"A"}}, "kept"},
		{"no Connection", http.Header{"Upgrade": {"h2c"}}, "kept"},
		{"h2c twice", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2c", "h2c"}}, "kept"},
		{"h2c, websocket", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2c, websocket"}}, "kept"},
		{"h2", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2"}}, "kept"},
		{"websocket", http.Header{"Connection": {"upgrade"}, "Upgrade": {"websocket"}}, "kept"},
	} {
		before := fmt.Sprint(tc.in)
		ok := StripH2C(tc.in)
		got := fmt.Sprint(tc.in)
		if !ok {
			if got != before {
				t.Errorf("%s: not an h2c upgrade, yet changed to %s", tc.name, got)
			}
			got = "kept"
		}
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
