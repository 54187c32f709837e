package route

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

type pathKind uint8

const (
	matchPrefix pathKind = iota
	matchPath
	matchRegex
	matchSeparated // path_separated_prefix
)

type matcher struct {
	kind          pathKind
	s             string // prefix or path; lower-cased when !caseSensitive
	re            *regexp.Regexp
	caseSensitive bool
	grpc          bool
	headers       []headerMatcher
	query         []queryMatcher
}

func (m *matcher) match(req *http.Request, path string) bool {
	if m.grpc && !IsGRPC(req.Header.Get("Content-Type")) {
		return false
	}
	p := path
	if !m.caseSensitive {
		p = strings.ToLower(p)
	}
	switch m.kind {
	case matchPrefix:
		if !strings.HasPrefix(p, m.s) {
			return false
		}
	case matchPath:
		if p != m.s {
			return false
		}
	case matchSeparated:
		if !strings.HasPrefix(p, m.s) || len(p) > len(m.s) && p[len(m.s)] != '/' {
			return false
		}
	case matchRegex:
		if !m.re.MatchString(path) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].match(req) {
			return false
		}
	}
	if len(m.query) > 0 {
		q, err := url.ParseQuery(req.URL.RawQuery)
		if err != nil && q == nil {
			return false
		}
		for i := range m.query {
			if !m.query[i].match(q) {
				return false
			}
		}
	}
	return true
}

func compileMatch(rm *routev3.RouteMatch, path string) (matcher, error) {
	var m matcher
	if rm == nil {
		return m, fmt.Errorf("%s: match is required", path)
	}
	if err := strict.Fields(rm, path, "prefix", "path", "safe_regex", "path_separated_prefix",
		"case_sensitive", "headers", "query_parameters", "grpc"); err != nil {
		return m, err
	}
	m.caseSensitive = rm.GetCaseSensitive() == nil || rm.GetCaseSensitive().GetValue()
	m.grpc = rm.GetGrpc() != nil
	switch ps := rm.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		m.kind, m.s = matchPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		m.kind, m.s = matchPath, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		m.kind, m.s = matchSeparated, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegexMatcher(ps.SafeRegex, strict.Join(path, "safe_regex"), !m.caseSensitive)
		if err != nil {
			return m, err
		}
		m.kind, m.re = matchRegex, re
	default:
		return m, fmt.Errorf("%s: a path specifier (prefix, path, safe_regex, path_separated_prefix) is required", path)
	}
	if !m.caseSensitive {
		m.s = strings.ToLower(m.s)
	}
	for i, h := range rm.GetHeaders() {
		hm, err := compileHeaderMatcher(h, strict.Join(path, "headers", i))
		if err != nil {
			return m, err
		}
		m.headers = append(m.headers, hm)
	}
	for i, q := range rm.GetQueryParameters() {
		qp := strict.Join(path, "query_parameters", i)
		if err := strict.Fields(q, qp, "name", "string_match", "present_match"); err != nil {
			return m, err
		}
		qm := queryMatcher{name: q.GetName()}
		if sm := q.GetStringMatch(); sm != nil {
			s, err := compileString(sm, strict.Join(qp, "string_match"))
			if err != nil {
				return m, err
			}
			qm.str = &s
		}
		m.query = append(m.query, qm)
	}
	return m, nil
}

type queryMatcher struct {
	name string
	str  *stringMatcher // nil: presence
}

func (q *queryMatcher) match(v url.Values) bool {
	vals, ok := v[q.name]
	if !ok {
		return false
	}
	if q.str == nil {
		return true
	}
	return len(vals) > 0 && q.str.match(vals[0])
}

type stringKind uint8

const (
	strExact stringKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

type stringMatcher struct {
	kind       stringKind
	s          string
	re         *regexp.Regexp
	ignoreCase bool
}

func (s *stringMatcher) match(v string) bool {
	if s.ignoreCase && s.kind != strRegex {
		v = strings.ToLower(v)
	}
	switch s.kind {
	case strExact:
		return v == s.s
	case strPrefix:
		return strings.HasPrefix(v, s.s)
	case strSuffix:
		return strings.HasSuffix(v, s.s)
	case strContains:
		return strings.Contains(v, s.s)
	default:
		return s.re.MatchString(v)
	}
}

func compileString(sm *matcherv3.StringMatcher, path string) (stringMatcher, error) {
	var s stringMatcher
	if err := strict.Fields(sm, path, "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"); err != nil {
		return s, err
	}
	s.ignoreCase = sm.GetIgnoreCase()
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.s = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.s = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.s = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.s = strContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegexMatcher(p.SafeRegex, strict.Join(path, "safe_regex"), false)
		if err != nil {
			return s, err
		}
		s.kind, s.re = strRegex, re
	default:
		return s, fmt.Errorf("%s: a match pattern is required", path)
	}
	if s.ignoreCase {
		s.s = strings.ToLower(s.s)
	}
	return s, nil
}

func compileRegexMatcher(rm *matcherv3.RegexMatcher, path string, fold bool) (*regexp.Regexp, error) {
	// google_re2 is the only engine; its max_program_size has no
	// counterpart in Go's RE2 implementation.
	if err := strict.Fields(rm, path, "google_re2", "regex"); err != nil {
		return nil, err
	}
	return compileRegex(rm.GetRegex(), strict.Join(path, "regex"), fold)
}

// compileRegex compiles an RE2 pattern that must match the whole input, as
// Envoy's safe_regex matchers do.
func compileRegex(pattern, path string, fold bool) (*regexp.Regexp, error) {
	full := "^(?:" + pattern + ")$"
	if fold {
		full = "(?i)" + full
	}
	if pattern == "" {
		return nil, fmt.Errorf("%s: empty regex", path)
	}
	re, err := regexp.Compile(full)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid regex %q: %w", path, pattern, err)
	}
	return re, nil
}

type headerKind uint8

const (
	hdrPresent headerKind = iota
	hdrString
	hdrRange
)

type headerMatcher struct {
	name           string // canonical, or a pseudo-header
	kind           headerKind
	present        bool // for hdrPresent: match when present (true) or absent
	str            stringMatcher
	lo, hi         int64
	invert         bool
	missingAsEmpty bool
}

// headerValue returns the header's value as Envoy sees it: several values
// joined by ",", pseudo-headers from the request line, and :scheme from
// req.URL.Scheme, where the goroutine path writes the one its connection
// manager gives the request (httpconn's serve), as Envoy's writes it in
// the request's headers before it routes (mutateRequestHeaders): an
// HTTP/2 client's own, an HTTP/1.1 request's H1Scheme.
func headerValue(req *http.Request, name string) (string, bool) {
	switch name {
	case ":method":
		return req.Method, true
	case ":authority":
		return req.Host, true
	case ":path":
		return req.URL.RequestURI(), true
	case ":scheme":
		return req.URL.Scheme, true
	}
	if req.ProtoMajor == 1 {
		// As Envoy's router has it (SeenIn).
		switch SeenIn(name, req.Header["Connection"], req.Header["Upgrade"], req.Header["Te"], false) {
		case Gone:
			return "", false
		case Trailers:
			return "trailers", true
		}
	}
	vs, ok := req.Header[name]
	if !ok {
		return "", false
	}
	if len(vs) == 1 {
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

func (h *headerMatcher) match(req *http.Request) bool {
	v, ok := headerValue(req, h.name)
	return h.matchValue(v, ok)
}

// matchValue matches the header's value v, ok when the request has the
// header.
func (h *headerMatcher) matchValue(v string, ok bool) bool {
	if !ok && h.missingAsEmpty && h.kind != hdrPresent {
		v, ok = "", true
	}
	var r bool
	switch h.kind {
	case hdrPresent:
		r = ok == h.present
	case hdrString:
		r = ok && h.str.match(v)
	case hdrRange:
		if ok {
			n, err := strconv.ParseInt(v, 10, 64)
			r = err == nil && n >= h.lo && n < h.hi
		}
	}
	if h.invert {
		// Envoy: an absent header never matches, even inverted, except for
		// presence matching.
		if !ok && h.kind != hdrPresent {
			return false
		}
		return !r
	}
	return r
}

func compileHeaderMatcher(h *routev3.HeaderMatcher, path string) (headerMatcher, error) {
	var m headerMatcher
	if err := strict.Fields(h, path, "name", "exact_match", "safe_regex_match", "range_match",
		"present_match", "prefix_match", "suffix_match", "contains_match", "string_match",
		"invert_match", "treat_missing_header_as_empty"); err != nil {
		return m, err
	}
	name := strings.ToLower(h.GetName())
	if name == "" {
		return m, fmt.Errorf("%s: name is required", path)
	}
	if !strings.HasPrefix(name, ":") {
		name = http.CanonicalHeaderKey(name)
	} else if name != ":method" && name != ":authority" && name != ":path" && name != ":scheme" {
		return m, fmt.Errorf("%s: unknown pseudo-header %s", path, h.GetName())
	}
	if name == "Host" {
		name = ":authority" // Go keeps Host out of req.Header
	}
	m.name, m.invert, m.missingAsEmpty = name, h.GetInvertMatch(), h.GetTreatMissingHeaderAsEmpty()
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		m.kind, m.present = hdrPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		m.kind, m.present = hdrPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		m.kind, m.str = hdrString, stringMatcher{kind: strExact, s: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		m.kind, m.str = hdrString, stringMatcher{kind: strPrefix, s: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		m.kind, m.str = hdrString, stringMatcher{kind: strSuffix, s: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		m.kind, m.str = hdrString, stringMatcher{kind: strContains, s: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegexMatcher(s.SafeRegexMatch, strict.Join(path, "safe_regex_match"), false)
		if err != nil {
			return m, err
		}
		m.kind, m.str = hdrString, stringMatcher{kind: strRegex, re: re}
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileString(s.StringMatch, strict.Join(path, "string_match"))
		if err != nil {
			return m, err
		}
		m.kind, m.str = hdrString, sm
	case *routev3.HeaderMatcher_RangeMatch:
		if s.RangeMatch.GetStart() >= s.RangeMatch.GetEnd() {
			return m, fmt.Errorf("%s: range_match start %d must be below end %d", path, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd())
		}
		m.kind, m.lo, m.hi = hdrRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	default:
		return m, fmt.Errorf("%s: unsupported header match %T", path, s)
	}
	return m, nil
}
