package route

import "testing"

// TestH1Scheme: an HTTP/1.1 request's :scheme is its one
// x-forwarded-proto line's value when that is http or https, case aside
// and kept as written (Envoy's getScheme), else the connection's; an
// absolute-form target's scheme before either (Envoy's codec's).
func TestH1Scheme(t *testing.T) {
	for _, tc := range []struct {
		abs  string // an absolute-form target's scheme
		xfp  string
		n    int
		tls  bool
		want string
	}{
		{"", "", 0, false, "http"},
		{"", "", 0, true, "https"},
		{"", "https", 1, false, "https"},
		{"", "http", 1, true, "http"},
		{"", "HTTPS", 1, false, "HTTPS"},
		{"", "Http", 1, true, "Http"},
		{"", "ftp", 1, false, "http"},
		{"", "ftp", 1, true, "https"},
		{"", "", 1, true, "https"},
		{"", "https, http", 1, false, "http"},
		{"", "https", 2, false, "http"}, // lines joined with commas: no scheme
		{"", "http", 2, true, "https"},
		// An absolute-form target's scheme, whatever x-forwarded-proto
		// and the connection say (Envoy's codec sets it, lower-cased).
		{"https", "", 0, false, "https"},
		{"http", "https", 1, true, "http"},
		{"HTTPS", "http", 1, false, "https"},
		{"ftp", "https", 1, false, "https"},
	} {
		if got := H1Scheme(tc.abs, tc.xfp, tc.n, tc.tls); got != tc.want {
			t.Errorf("H1Scheme(%q, %q, %d, %v) = %q, want %q", tc.abs, tc.xfp, tc.n, tc.tls, got, tc.want)
		}
		if got := H1Scheme(tc.abs, []byte(tc.xfp), tc.n, tc.tls); got != tc.want {
			t.Errorf("H1Scheme(%q, []byte(%q), %d, %v) = %q, want %q", tc.abs, tc.xfp, tc.n, tc.tls, got, tc.want)
		}
	}
}
