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
		// Envoy's path_utility_test (NormalizeValidPaths,
		// NormalizeCasePath).
		{"/a/b/./c", "/a/b/c", "/a/b/./c", "/a/b/c"},
		{"/a/b/../../../../c", "/c", "/a/b/../../../../c", "/c"},
		{"/a/..\\c", "/c", "/a/..\\c", "/c"},
		{"/%c0%af", "/%c0%af", "/%c0%af", "/%c0%af"},
		{"/%5c%25", "/%5c%25", "/%5c%25", "/%5c%25"},
		{"/A/B/C", "/A/B/C", "/A/B/C", "/A/B/C"},
		{"/a/%2F%2f/c", "/a/%2F%2f/c", "/a/%2F%2f/c", "/a/%2F%2f/c"},
		// Escaped letters, digits, '-', '_' and '~' are decoded, as the
		// googleurl Envoy pins does (kPathCharLookup's UNESCAPE), hex of
		// either case; other escapes kept as written.
		{"/%61pi", "/api", "/%61pi", "/api"},
		{"/%41%5a%7A%30%39%2D%5F%7E%2d%5f%7e", "/AZz09-_~-_~", "/%41%5a%7A%30%39%2D%5F%7E%2d%5f%7e", "/AZz09-_~-_~"},
		{"/%7c%3a%40%2b%21", "/%7c%3a%40%2b%21", "/%7c%3a%40%2b%21", "/%7c%3a%40%2b%21"},
		{"/a/%2e%2E/%62//%63", "/b//c", "/a/%2e%2E/%62/%63", "/b/c"},
		// An escaped '%' stays escaped; a '%' that begins no escape and
		// would begin one once the bytes after it are decoded is written
		// "%25" (Chromium's CheckForNestedEscapes).
		{"/%2541", "/%2541", "/%2541", "/%2541"},
		{"/%%30%30", "/%2500", "/%%30%30", "/%2500"},
		{"/%4%31", "/%2541", "/%4%31", "/%2541"},
		{"/%%41B", "/%25AB", "/%%41B", "/%25AB"},
		{"/%%61%62", "/%25ab", "/%%61%62", "/%25ab"},
		{"/%%41%", "/%A%", "/%%41%", "/%A%"},
		{"/%%41", "/%A", "/%%41", "/%A"},
		{"/%%7a", "/%z", "/%%7a", "/%z"},
		{"/%A%%42", "/%A%B", "/%A%%42", "/%A%B"},
		// The '%' it remembers may have been cut by a ".." since: as in
		// Chromium, the bytes at its place are read all the same.
		{"/ab%/../%25%41F", "/%2525AF", "/ab%/../%25%41F", "/%2525AF"},
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

// TestPathRefusedNested: Envoy's path_utility_test refuses these paths
// (InvalidPaths): each holds an escaped NUL, the last after a '%' that
// begins no escape. A NUL that only decoding spells is not one: its '%' is
// written "%25".
func TestPathRefusedNested(t *testing.T) {
	for _, p := range []string{"/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"} {
		if !PathRefused(p, true) {
			t.Errorf("PathRefused(%q, normalize) = false, want true (as Envoy)", p)
		}
	}
	for _, p := range []string{"/%%30%30", "/%2500"} {
		if PathRefused(p, true) {
			t.Errorf("PathRefused(%q, normalize) = true, want false (it becomes %q)", p, NormalizePath(p, true, false))
		}
	}
}

// FuzzNormalizePath: PathChanged says whether NormalizePath changes a
// path, and a normalised path stays as it is.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/a/./b/../c", "/a|b", "/a//b", "/%2e%2E/x", "/a\\..\\b", "/\xc3\xa4", "/a%2eb", "///", "/%61%%30%30", "/%4%31"} {
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
