package route

import (
	"bytes"
	"net/url"
	"strconv"
	"strings"
)

// Head is a request head parsed in place, as an event loop holds it:
// slices of the buffer it was read into, valid during the call that
// receives it. Only origin-form targets ("/path?query") reach a matcher.
type Head interface {
	// Method is the request line's method.
	Method() []byte
	// Target is the request line's target, path and query, as sent.
	Target() []byte
	// Host is the Host header's value (empty when there is none).
	Host() []byte
	// NumHeaders is the number of header lines, Host's included.
	NumHeaders() int
	// Header returns the name and the value (without surrounding
	// blanks) of the i-th header line.
	Header(i int) (name, value []byte)
	// Scheme is the request's :scheme as its connection manager gives
	// it before it routes: an HTTP/2 client's own, an HTTP/1.1 request's
	// H1Scheme.
	Scheme() string
}

// MatchHead is Match for a head parsed in place: it returns the same
// virtual host and route as Match does for the *http.Request that
// net/http's ReadRequest builds from the same bytes. path is the
// request's escaped path as Match takes it (EscapedPath of the target,
// then the connection manager's normalisations).
func (c *Config) MatchHead(h Head, path []byte) (*VirtualHost, *Route) {
	vh := c.virtualHostBytes(h.Host())
	if vh == nil {
		return nil, nil
	}
	for _, r := range vh.Routes {
		if r.m.matchHead(h, path) {
			return vh, r
		}
	}
	return vh, nil
}

// virtualHostBytes is VirtualHost without converting host to a string.
func (c *Config) virtualHostBytes(host []byte) *VirtualHost {
	var buf [256]byte
	h, ok := lowerASCII(host, buf[:0])
	if !ok {
		return c.VirtualHost(string(host)) // not ASCII: strings.ToLower's rules
	}
	if vh, ok := c.exact[string(h)]; ok {
		return vh
	}
	for _, w := range c.suffix {
		if len(h) > len(w.s) && string(h[len(h)-len(w.s):]) == w.s {
			return w.vh
		}
	}
	for _, w := range c.prefix {
		if len(h) > len(w.s) && string(h[:len(w.s)]) == w.s {
			return w.vh
		}
	}
	return c.any
}

// lowerASCII returns b lower-cased (b itself when it has no upper-case
// letter), or false when b is not ASCII.
func lowerASCII(b, buf []byte) ([]byte, bool) {
	upper := false
	for _, c := range b {
		if c >= 0x80 {
			return nil, false
		}
		upper = upper || c >= 'A' && c <= 'Z'
	}
	if !upper {
		return b, true
	}
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf, true
}

func (m *matcher) matchHead(h Head, path []byte) bool {
	if m.grpc {
		v, ok := headHeader(h, "Content-Type", true, nil)
		if !ok || !IsGRPC(v) {
			return false
		}
	}
	switch m.kind {
	case matchPrefix:
		if len(path) < len(m.s) || !m.equal(path[:len(m.s)]) {
			return false
		}
	case matchPath:
		if len(path) != len(m.s) || !m.equal(path) {
			return false
		}
	case matchSeparated:
		if len(path) < len(m.s) || !m.equal(path[:len(m.s)]) || len(path) > len(m.s) && path[len(m.s)] != '/' {
			return false
		}
	case matchRegex:
		if !m.re.Match(path) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matchHead(h) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := rawQuery(h.Target())
		for i := range m.query {
			if !m.query[i].matchHead(q) {
				return false
			}
		}
	}
	return true
}

// equal compares p (an escaped path: ASCII) with m.s, folding case when
// the route is not case sensitive (m.s is lower case then).
func (m *matcher) equal(p []byte) bool {
	if m.caseSensitive {
		return string(p) == m.s
	}
	return foldEqual(p, m.s)
}

// rawQuery is the target's query as net/url's RawQuery: everything after
// the first '?'.
func rawQuery(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		return target[i+1:]
	}
	return nil
}

// maxQueryParams is net/url's limit: a query with more parameters parses
// to none.
const maxQueryParams = 10000

// matchHead is match over the raw query, with url.ParseQuery's rules: a
// pair whose text holds a ';', or whose name or value does not unescape,
// is left out; the first value kept is the one matched.
func (q *queryMatcher) matchHead(raw []byte) bool {
	if bytes.Count(raw, []byte("&"))+1 > maxQueryParams {
		return false
	}
	for len(raw) > 0 {
		var pair []byte
		pair, raw, _ = bytes.Cut(raw, []byte("&"))
		if len(pair) == 0 || bytes.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		key, ok := queryUnescape(k)
		if !ok || key != q.name {
			continue
		}
		val, ok := queryUnescape(v)
		if !ok {
			continue
		}
		if q.str == nil {
			return true
		}
		return q.str.matchBytes([]byte(val))
	}
	return false
}

// queryUnescape is url.QueryUnescape; it converts without unescaping
// when there is nothing to unescape.
func queryUnescape(b []byte) (string, bool) {
	if bytes.IndexByte(b, '%') < 0 && bytes.IndexByte(b, '+') < 0 {
		return string(b), true
	}
	s, err := url.QueryUnescape(string(b))
	return s, err == nil
}

// matchBytes is match over bytes.
func (s *stringMatcher) matchBytes(v []byte) bool {
	if s.kind == strRegex {
		return s.re.Match(v)
	}
	if s.ignoreCase {
		for _, c := range v {
			if c >= 0x80 {
				return s.match(string(v)) // not ASCII: strings.ToLower's rules
			}
		}
		// s.s is lower case: compare v lower-cased, as match does.
		switch s.kind {
		case strExact:
			return len(v) == len(s.s) && foldEqual(v, s.s)
		case strPrefix:
			return len(v) >= len(s.s) && foldEqual(v[:len(s.s)], s.s)
		case strSuffix:
			return len(v) >= len(s.s) && foldEqual(v[len(v)-len(s.s):], s.s)
		default:
			for i := 0; i+len(s.s) <= len(v); i++ {
				if foldEqual(v[i:i+len(s.s)], s.s) {
					return true
				}
			}
			return false
		}
	}
	switch s.kind {
	case strExact:
		return string(v) == s.s
	case strPrefix:
		return len(v) >= len(s.s) && string(v[:len(s.s)]) == s.s
	case strSuffix:
		return len(v) >= len(s.s) && string(v[len(v)-len(s.s):]) == s.s
	default:
		return bytes.Contains(v, []byte(s.s))
	}
}

// foldEqual compares b lower-cased (ASCII) with s, of the same length.
func foldEqual(b []byte, s string) bool {
	for i := range len(b) {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func (hm *headerMatcher) matchHead(h Head) bool {
	if hm.name == ":scheme" {
		return hm.matchValue(h.Scheme(), true)
	}
	v, ok := headValue(h, hm.name, nil)
	if !ok && hm.missingAsEmpty && hm.kind != hdrPresent {
		v, ok = nil, true
	}
	var r bool
	switch hm.kind {
	case hdrPresent:
		r = ok == hm.present
	case hdrString:
		r = ok && hm.str.matchBytes(v)
	case hdrRange:
		if ok {
			n, err := strconv.ParseInt(string(v), 10, 64)
			r = err == nil && n >= hm.lo && n < hm.hi
		}
	}
	if hm.invert {
		if !ok && hm.kind != hdrPresent {
			return false
		}
		return !r
	}
	return r
}

// headValue is headerValue over a parsed head (but :scheme, which
// matchHead reads from Head.Scheme); buf is scratch space for values that
// must be built (nil: allocated then, which is rare).
func headValue(h Head, name string, buf []byte) ([]byte, bool) {
	switch name {
	case ":method":
		return h.Method(), true
	case ":authority":
		return h.Host(), true
	case ":path":
		// The target as received: the loops route only requests whose
		// path the connection manager's normalisation leaves as it is
		// (an HTTP/2 stream's normalised path aside: see docs/proxy.md).
		return h.Target(), true
	}
	switch headSeen(h, name) {
	case Gone:
		return nil, false
	case Trailers:
		return []byte("trailers"), true
	}
	return headHeader(h, name, false, buf)
}

// headSeen is SeenIn over a head's lines (without listing them): how
// Envoy's router has the header name. An HTTP/2 head has no Connection
// or Upgrade field and no TE but "trailers" (the loops refuse the rest),
// which this leaves as they are.
func headSeen(h Head, name string) HeaderSeen {
	named := false
	for i := range h.NumHeaders() {
		if k, v := h.Header(i); EqualFoldASCII(k, "connection") {
			named = named || ConnectionNames(v, name)
		}
	}
	if !named && !mayChange(name) {
		return AsSent
	}
	upgrade, connUpgrade, trailers := false, false, false
	for i := range h.NumHeaders() {
		k, v := h.Header(i)
		switch {
		case EqualFoldASCII(k, "upgrade"):
			upgrade = true
		case EqualFoldASCII(k, "connection"):
			connUpgrade = connUpgrade || connectionUpgrade(v)
		case EqualFoldASCII(k, "te"):
			trailers = trailers || TETrailers(v)
		}
	}
	if upgrade && connUpgrade {
		return AsSent // an upgrade (IsUpgrade)
	}
	return Seen(name, named, trailers, false)
}

// headHeader returns the header name (canonical) as net/http's
// ReadRequest leaves it in Request.Header: several lines joined by ","
// (only the first when first is set), Host and Transfer-Encoding taken
// out, Trailer taken out of a chunked request, duplicate Content-Length
// lines made one, and "Cache-Control: no-cache" added for "Pragma:
// no-cache" without a Cache-Control.
func headHeader(h Head, name string, first bool, buf []byte) ([]byte, bool) {
	switch name {
	case "Host", "Transfer-Encoding":
		return nil, false
	case "Trailer":
		if _, chunked := rawHeader(h, "Transfer-Encoding", true, nil); chunked {
			return nil, false
		}
	case "Content-Length":
		first = true // net/http refuses differing values
	case "Cache-Control":
		v, ok := rawHeader(h, name, first, buf)
		if !ok {
			if p, ok := rawHeader(h, "Pragma", true, nil); ok && string(p) == "no-cache" {
				return []byte("no-cache"), true
			}
		}
		return v, ok
	}
	return rawHeader(h, name, first, buf)
}

// rawHeader returns the values of the header lines called name, joined
// by "," (in buf when there are several), or the first one.
func rawHeader(h Head, name string, first bool, buf []byte) ([]byte, bool) {
	var val []byte
	n := 0
	for i := range h.NumHeaders() {
		k, v := h.Header(i)
		if !EqualFoldASCII(k, name) {
			continue
		}
		switch n {
		case 0:
			val = v
		case 1:
			buf = append(append(append(buf[:0], val...), ','), v...)
			val = buf
		default:
			buf = append(append(buf, ','), v...)
			val = buf
		}
		n++
		if first {
			break
		}
	}
	return val, n > 0
}

// EqualFoldASCII says whether a and b are the same bytes but for the case
// of ASCII letters: how header names are compared. Names net/http accepts
// are tokens, and for those its canonicalisation only changes case. The
// event loop's parser compares names with it too.
func EqualFoldASCII[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// EscapedPath returns the path of an origin-form request target (the
// part before '?') as net/url's URL.EscapedPath returns it for the URL
// net/http parses the target into: the path as sent when every byte may
// stand in an escaped path, else the unescaped path escaped again. buf is
// used for the second case. ok is false when the path does not unescape.
func EscapedPath(target, buf []byte) ([]byte, bool) {
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		target = target[:q]
	}
	return escapedPath(target, buf)
}

func escapedPath(p, buf []byte) ([]byte, bool) {
	for _, c := range p {
		if !pathByte(c) {
			u, err := url.PathUnescape(string(p))
			if err != nil {
				return nil, false
			}
			return append(buf[:0], (&url.URL{Path: u}).EscapedPath()...), true
		}
	}
	if bytes.IndexByte(p, '%') >= 0 {
		if _, err := url.PathUnescape(string(p)); err != nil {
			return nil, false
		}
	}
	return p, true
}

// pathByte reports whether net/url keeps c as it is in an escaped path
// (validEncoded with encodePath).
func pathByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("-_.~!$&'()*+,;=:@[]%/", c) >= 0
}
