package route

import (
	"math"
	"strings"
)

// The request path as Envoy's connection manager leaves :path for its
// routes, its access log and the upstream (ConnectionManagerUtility::
// maybeNormalizePath): as the client sent it, or, with normalize_path,
// canonicalised as PathUtil::canonicalPath does (Chromium's URL path
// canonicalisation, url_canon_path.cc), then, with merge_slashes, its
// runs of '/' merged. The query after '?' is never touched: Envoy
// forwards it as received.

// H1TargetByte reports whether Envoy's HTTP/1.1 codec takes c in a
// request target: '!' to '~' (Balsa's isUrlValid, after http-parser's
// URL rules). A space ends the target; a control, DEL or a byte above
// 0x7f (raw UTF-8) is refused with 400. HTTP/2's :path takes bytes above
// 0x7f too (nghttp2_check_path).
func H1TargetByte(c byte) bool { return '!' <= c && c <= '~' }

// DetailsPathNormalizationFailed is the response code details of a
// request Envoy's connection manager refuses 400 for its path.
const DetailsPathNormalizationFailed = "path_normalization_failed"

// PathRefused reports whether Envoy's connection manager refuses a
// request target (path and query) 400 before it routes it
// (maybeNormalizePath): one holding a '#' anywhere, whatever the
// normalisation (under the runtime guard http_reject_path_with_fragment,
// on by default), where Go reads the '#' as part of the path; with
// normalize, one whose path (before '?') holds an escaped NUL ("%00"),
// which Chromium's canonicalisation of Envoy's googleurl marks invalid
// (PathUtil::canonicalPath fails; Envoy's path_utility_test refuses
// "/xyz/%00.%00./abc").
func PathRefused[T ~string | ~[]byte](target T, normalize bool) bool {
	path := true
	for i := 0; i < len(target); i++ {
		switch c := target[i]; {
		case c == '#':
			return true
		case c == '?':
			path = false
		case c == '%' && path && normalize && i+2 < len(target) && target[i+1] == '0' && target[i+2] == '0':
			return true
		}
	}
	return false
}

// canonEscape marks the bytes Envoy's path canonicalisation escapes
// (%XX, upper-case hex): controls, space, '"', '#', '<', '>', '?', '^',
// '`', '{', '|', '}', DEL and every byte above it ('\' becomes '/').
var canonEscape = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c <= ' ' || c >= 0x7f || strings.IndexByte("\"#<>?^`{|}", byte(c)) >= 0
	}
	return t
}()

// canonDecode marks the bytes Envoy's path canonicalisation writes
// unescaped when they come escaped: ASCII letters, digits, '-', '_' and
// '~' (Chromium's UNESCAPE in kPathCharLookup of the googleurl Envoy pins,
// 2022; Chromium has kept them escaped since December 2023). An escaped
// '.' is a dot (see canonicalPath); every other escape is kept as written,
// its hex's case too.
var canonDecode = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '~'
	}
	return t
}()

// unhex is the byte the hex digits a, b stand for; ok false if either is
// not one.
func unhex(a, b byte) (v byte, ok bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'a' <= c|0x20 && c|0x20 <= 'f':
			return (c | 0x20) - 'a' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}

// PathChanged reports whether NormalizePath changes path (a request
// target's part before '?'), without allocating: the loops' check of
// every request.
func PathChanged[T ~string | ~[]byte](path T, normalize, mergeSlashes bool) bool {
	if !normalize && !mergeSlashes {
		return false
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case normalize && (canonEscape[c] || c == '\\'):
			return true // escaped, or a '/'
		case normalize && c == '%' && i+2 < len(path):
			if v, ok := unhex(path[i+1], path[i+2]); ok && (v == '.' || canonDecode[v]) {
				return true // decoded (an escaped dot is a '.')
			}
		case c == '/' && i+1 < len(path):
			switch path[i+1] {
			case '/':
				if mergeSlashes && len(path) > 2 {
					return true // "//" alone stays (see NormalizePath)
				}
			case '.', '%':
				if normalize && dotSegment(string(path[i+1:])) > 0 {
					return true
				}
			}
		}
	}
	return false
}

// NormalizePath returns path (a request target's part before '?', which
// begins with '/') as Envoy's connection manager leaves it: with
// normalize, the bytes canonEscape marks escaped, '\' a '/', "." and ".."
// segments (their escaped forms, "%2e", too) removed, every other "%2e"
// a '.' (Chromium reads an escaped dot as a dot wherever it is), the
// escapes of the bytes canonDecode marks decoded, other escapes kept as
// written; then, with mergeSlashes, runs of '/' made one (Envoy's
// PathTransformer::mergeSlashes joins the non-empty segments between a
// leading and a trailing '/', so a path of slashes only becomes "//"). It
// returns path itself when nothing changes.
func NormalizePath(path string, normalize, mergeSlashes bool) string {
	if !PathChanged(path, normalize, mergeSlashes) {
		return path
	}
	if normalize {
		path = canonicalPath(path)
	}
	if mergeSlashes && strings.Contains(path, "//") {
		var b strings.Builder
		b.Grow(len(path))
		for i := 0; i < len(path); i++ {
			if path[i] == '/' && i > 0 && path[i-1] == '/' {
				continue
			}
			b.WriteByte(path[i])
		}
		if path = b.String(); path == "/" {
			path = "//" // no segment: the leading and the trailing '/'
		}
	}
	return path
}

// canonicalPath is normalize_path's canonicalisation of p.
func canonicalPath(p string) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(p)+8)
	// Where in out the last '%' that began no escape in p was written
	// (Chromium's last_invalid_percent_index): a decoded byte after it may
	// make it look like an escape (see nestedEscape).
	lastBare := math.MinInt
	for i := 0; i < len(p); i++ {
		c := p[i]
		if d := dotAt(p[i:]); d > 0 {
			if len(out) == 0 || out[len(out)-1] != '/' {
				// A dot in a segment (Chromium's NOT_A_DIRECTORY):
				// written as a dot, escaped or not.
				out = append(out, '.')
				i += d - 1
				continue
			}
			if n := dotSegment(p[i:]); n > 0 {
				// "." or "..", then a '/' or '\' or the end: the
				// separator is consumed with the segment.
				if n == 2 {
					// Up one: back to the slash before the last segment,
					// never above the first.
					j := len(out) - 2
					for j > 0 && out[j] != '/' {
						j--
					}
					out = out[:max(j, 0)+1]
				}
				i += dotLen(p[i:], n) - 1
				if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '\\') {
					i++
				}
				continue
			}
			out = append(out, '.')
			i += d - 1
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, ok := byte(0), false
			if i+2 < len(p) {
				v, ok = unhex(p[i+1], p[i+2])
			}
			switch {
			case !ok:
				lastBare = len(out)
				out = append(out, '%')
			case canonDecode[v]:
				out = append(out, v)
				if lastBare >= len(out)-3 {
					out = nestedEscape(out, lastBare, p[i+3:])
				}
				i += 2
			default:
				out = append(out, p[i:i+3]...)
				i += 2
			}
		case canonEscape[c]:
			out = append(out, '%', hex[c>>4], hex[c&15])
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// nestedEscape is Chromium's CheckForNestedEscapes: out ends with the byte
// just decoded, one or two bytes after a '%' at pct that began no escape
// in the input; rest is the input after the escape. When that '%' and the
// bytes after it (with rest's first byte, if only one follows it) now
// spell an escape, the '%' is written "%25" so that the output cannot
// decode to another path ("/%%30%30" gives "/%2500", "/%4%31" "/%2541").
// As in Chromium, pct is not checked to be a '%' (a ".." may have cut
// out below it since).
func nestedEscape(out []byte, pct int, rest string) []byte {
	n := len(out)
	last := out[n-1]
	next := pct == n-2
	if next {
		if len(rest) == 0 || rest[0] >= 0x80 {
			return out
		}
		out = append(out, rest[0])
	}
	if pct+3 > len(out) {
		return out[:n]
	}
	if _, ok := unhex(out[pct+1], out[pct+2]); !ok {
		return out[:n]
	}
	if !next {
		out = append(out, out[pct+1])
	}
	out[pct+1], out[pct+2] = '2', '5'
	return append(out, last)
}

// dotSegment tells whether s begins with a dot segment ending at a '/',
// a '\' or the end of s: 1 for ".", 2 for ".."; 0 for neither. A dot may
// be escaped ("%2e", "%2E").
func dotSegment(s string) int {
	n, i := 0, 0
	for n < 3 {
		switch {
		case i < len(s) && s[i] == '.':
			i++
		case len(s) >= i+3 && s[i] == '%' && s[i+1] == '2' && (s[i+2] == 'e' || s[i+2] == 'E'):
			i += 3
		default:
			if n > 0 && (i == len(s) || s[i] == '/' || s[i] == '\\') {
				return n
			}
			return 0
		}
		n++
	}
	return 0
}

// dotAt is the length of the dot s begins with: 1 for '.', 3 for an
// escaped one ("%2e", "%2E", as Chromium's IsDot), 0 for none.
func dotAt(s string) int {
	switch {
	case len(s) > 0 && s[0] == '.':
		return 1
	case len(s) >= 3 && s[0] == '%' && s[1] == '2' && (s[2] == 'e' || s[2] == 'E'):
		return 3
	}
	return 0
}

// dotLen is the length in s of its first n dots, escaped or not.
func dotLen(s string, n int) int {
	i := 0
	for ; n > 0; n-- {
		if s[i] == '.' {
			i++
		} else {
			i += 3
		}
	}
	return i
}
