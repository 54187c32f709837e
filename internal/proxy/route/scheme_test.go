package route

import "testing"

// TestH1Scheme: an HTTP/1.1 request's :scheme is its one
// x-forwarded-proto line's value when that is http or https, case aside
// and kept as written (Envoy's getScheme), else the connection's.
func TestH1Scheme(t *testing.T) {
	for _, tc := range []struct {
		xfp  string
		n    int
		tls  bool
		want string
	}{
		{"", 0, false, "http"},
		{"", 0, true, "https"},
		{"https", 1, false, "https"},
		{"http", 1, true, "http"},
		{"HTTPS", 1, false, "HTTPS"},
		{"Http", 1, true, "Http"},
		{"ftp", 1, false, "http"},
		{"ftp", 1, true, "https"},
		{"", 1, true, "https"},
		{"https, http", 1, false, "http"},
		{"https", 2, false, "http"}, // lines joined with commas: no scheme
		{"http", 2, true, "https"},
	} {
		if got := H1Scheme(tc.xfp, tc.n, tc.tls); got != tc.want {
			t.Errorf("H1Scheme(%q, %d, %v) = %q, want %q", tc.xfp, tc.n, tc.tls, got, tc.want)
		}
		if got := H1Scheme([]byte(tc.xfp), tc.n, tc.tls); got != tc.want {
			t.Errorf("H1Scheme([]byte(%q), %d, %v) = %q, want %q", tc.xfp, tc.n, tc.tls, got, tc.want)
		}
	}
}
