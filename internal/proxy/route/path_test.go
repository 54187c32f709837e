package route

import "testing"

// TestNormalizePath: normalize_path and merge_slashes as Envoy's
// connection manager applies them (Chromium's path canonicalisation, then
// the merge), the cases of its url_canon_path.cc's rules.
func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in, normalized, merged, both string
	}{
		{"/a/b", "/a/b", "/a/b", "/a/b"},
		{"/a|b{c}", "/a%7Cb%7Bc%7D", "/a|b{c}", "/a%7Cb%7Bc%7D"},
		{"/ \"#<>^`\x7f\x01", "/%20%22%23%3C%3E%5E%60%7F%01", "/ \"#<>^`\x7f\x01", "/%20%22%23%3C%3E%5E%60%7F%01"},
		{"/\xc3\xa4", "/%C3%A4", "/\xc3\xa4", "/%C3%A4"},
		{"/!$&'()*+,;=:@[]~-._", "/!$&'()*+,;=:@[]~-._", "/!$&'()*+,;=:@[]~-._", "/!$&'()*+,;=:@[]~-._"},
		{"/a%7cb%2F%zz%", "/a%7cb%2F%zz%", "/a%7cb%2F%zz%", "/a%7cb%2F%zz%"},
		{"/a\\b", "/a/b", "/a\\b", "/a/b"},
		{"/a/./b/../c", "/a/c", "/a/./b/../c", "/a/c"},
		{"/a/%2e/b/%2E%2e/c", "/a/c", "/a/%2e/b/%2E%2e/c", "/a/c"},
		{"/a/b/..", "/a/", "/a/b/..", "/a/"},
		{"/a/.", "/a/", "/a/.", "/a/"},
		{"/..", "/", "/..", "/"},
		{"/../../a", "/a", "/../../a", "/a"},
		{"/a/.b/..c/.../b.", "/a/.b/..c/.../b.", "/a/.b/..c/.../b.", "/a/.b/..c/.../b."},
		{"/a\\..\\b", "/b", "/a\\..\\b", "/b"},
		{"//a//b/", "//a//b/", "/a/b/", "/a/b/"},
		// An escaped dot is a dot wherever it is (Chromium's IsDot).
		{"/a%2eb/%2Efoo/a.%2e/..%2e", "/a.b/.foo/a../...", "/a%2eb/%2Efoo/a.%2e/..%2e", "/a.b/.foo/a../..."},
		// merge_slashes joins the segments between a leading and a
		// trailing '/' (PathTransformer::mergeSlashes): none, "//".
		{"//", "//", "//", "//"},
		{"///", "///", "//", "//"},
		{"/\\", "//", "/\\", "//"},
		// Normalised first, then merged: ".." goes up from the empty
		// segment.
		{"/a//../b", "/a/b", "/a/../b", "/a/b"},
		{"/x/..//y", "//y", "/x/../y", "/y"},
	} {
		for _, c := range []struct {
			normalize, merge bool
			want             string
		}{{false, false, tc.in}, {true, false, tc.normalized}, {false, true, tc.merged}, {true, true, tc.both}} {
			got := NormalizePath(tc.in, c.normalize, c.merge)
			if got != c.want {
				t.Errorf("NormalizePath(%q, normalize %v, merge_slashes %v) = %q, want %q", tc.in, c.normalize, c.merge, got, c.want)
			}
			if ch := PathChanged([]byte(tc.in), c.normalize, c.merge); ch != (got != tc.in) {
				t.Errorf("PathChanged(%q, %v, %v) = %v, but NormalizePath gives %q", tc.in, c.normalize, c.merge, ch, got)
			}
		}
	}
}

// FuzzNormalizePath: PathChanged says whether NormalizePath changes a
// path, and a normalised path stays as it is.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/a/./b/../c", "/a|b", "/a//b", "/%2e%2E/x", "/a\\..\\b", "/\xc3\xa4", "/a%2eb", "///"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		p = "/" + p
		for _, c := range [][2]bool{{true, false}, {false, true}, {true, true}} {
			got := NormalizePath(p, c[0], c[1])
			if PathChanged(p, c[0], c[1]) != (got != p) {
				t.Fatalf("PathChanged(%q, %v) disagrees with NormalizePath: %q", p, c, got)
			}
			if c[0] && c[1] && NormalizePath(got, true, true) != got {
				t.Fatalf("NormalizePath(%q) = %q, normalised again %q", p, got, NormalizePath(got, true, true))
			}
		}
	})
}
