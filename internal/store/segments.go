package store

import (
	"net/url"
	"strings"
)

// KeySegments splits s, the part of a key after its prefix, into n
// path-escaped segments and unescapes them (App Mesh's and Cloud Map's
// keys escape each name with url.PathEscape); false unless there are
// exactly n, each non-empty and well escaped.
func KeySegments(s string, n int) ([]string, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != n {
		return nil, false
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil || u == "" {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}
