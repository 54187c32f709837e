package evloop

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// The pieces random configurations and requests are made of: few enough
// that routes and requests meet often.
var (
	rtDomains  = []string{"*", "a.local", "A.local:8080", "*.local", "*.b.local", "a.*", "b.local", "x"}
	rtHosts    = []string{"a.local", "A.LOCAL", "a.local:8080", "c.b.local", "B.local", "a.x", "x", "y", "[::1]:80", ""}
	rtPaths    = []string{"/", "/a", "/A", "/a/", "/a/b", "/ab", "/a%2Fb", "/a%2fb", "/%41", "/a|b", "/a\"b", "/a%7Cb", "/\xc3\xa9", "//a", "/a/./b", "/a;b", "/a@b:c"}
	rtQueries  = []string{"", "?", "?x=1", "?x=2&x=1", "?y", "?x", "?x=%31", "?x=%zz&x=3", "?x=1;y=2", "?x=a+b", "?%78=1", "?&&x=5", "?X=1", "?x=1&y=Hello"}
	rtHeaders  = []string{"X-A", "x-a", "X-B", "Content-Type", "content-length", "Transfer-Encoding", "Trailer", "Pragma", "Cache-Control", "X-Request-Id", "Te", "X-Num", "Connection", "Keep-Alive", "Upgrade"}
	rtValues   = []string{"", "1", "12", "-3", "abc", "ABC", "aBc", "application/grpc", "application/grpc+proto", "no-cache", "No-Cache", "a,b", " padded ", "\xc3\x89t\xc3\xa9", "99999999999999999999", "x\xff", "x-a", "X-B, te", "trailers", "gzip, trailers", "keep-alive", "upgrade"}
	rtMethods  = []string{"GET", "POST", "HEAD", "PUT", "get", "DELETE"}
	rtPrefixes = []string{"/", "/a", "/A", "/a/", "/ab", "/a%2F", "/\xe2\x84\xaa", "/b", "//"}
	rtNames    = []string{"x-a", "X-B", "content-type", "Content-Length", "transfer-encoding", "trailer", "cache-control", "pragma", "host", ":method", ":authority", ":path", ":scheme", "x-num", "x_a", "te", "connection", "keep-alive", "upgrade"}
	rtStrings  = []string{"", "1", "a", "abc", "ABC", "b", "application/grpc", "no-cache", "/a", "/a?x=1", "http", "a.local", "1,1", ",", "\xc3\xa9", "https"}
	rtRegexes  = []string{".*", "/a.*", "[0-9]+", "a|b", "(?i)abc", "/a/[^/]+", ".*%2[Ff].*", "\\d", "[A-Z]+"}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func randString(r *rand.Rand) *matcherv3.StringMatcher {
	sm := &matcherv3.StringMatcher{IgnoreCase: r.IntN(3) == 0}
	switch r.IntN(5) {
	case 0:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: pick(r, rtStrings)}
	case 1:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: pick(r, rtStrings)}
	case 2:
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: pick(r, rtStrings)}
	case 3:
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: pick(r, rtStrings)}
	default:
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pick(r, rtRegexes)}}
	}
	return sm
}

func randHeaderMatcher(r *rand.Rand) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: pick(r, rtNames), InvertMatch: r.IntN(4) == 0, TreatMissingHeaderAsEmpty: r.IntN(4) == 0}
	switch r.IntN(9) {
	case 0:
	case 1:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: r.IntN(2) == 0}
	case 2:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: pick(r, rtStrings)}
	case 3:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: pick(r, rtStrings)}
	case 4:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: pick(r, rtStrings)}
	case 5:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: pick(r, rtStrings)}
	case 6:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: pick(r, rtRegexes)}}
	case 7:
		lo := int64(r.IntN(20) - 5)
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: lo, End: lo + int64(r.IntN(20)+1)}}
	default:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: randString(r)}
	}
	return h
}

func randRouteMatch(r *rand.Rand) *routev3.RouteMatch {
	m := &routev3.RouteMatch{}
	switch r.IntN(4) {
	case 0:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: pick(r, rtPrefixes)}
	case 1:
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: pick(r, rtPaths)}
	case 2:
		m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: strings.TrimSuffix(pick(r, rtPrefixes), "/") + "/x"[:r.IntN(2)]}
		if ps := m.GetPathSeparatedPrefix(); ps == "" || strings.HasSuffix(ps, "/") {
			m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/a"}
		}
	default:
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pick(r, rtRegexes)}}
	}
	if r.IntN(3) == 0 {
		m.CaseSensitive = wrapperspb.Bool(r.IntN(2) == 0)
	}
	if r.IntN(6) == 0 {
		m.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	}
	for range r.IntN(5) / 2 {
		m.Headers = append(m.Headers, randHeaderMatcher(r))
	}
	for range r.IntN(4) / 2 {
		q := &routev3.QueryParameterMatcher{Name: pick(r, []string{"x", "y", "X"})}
		switch r.IntN(3) {
		case 0:
		case 1:
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		default:
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: randString(r)}
		}
		m.QueryParameters = append(m.QueryParameters, q)
	}
	return m
}

func randRouteConfig(r *rand.Rand) (*proxyroute.Config, error) {
	rc := &routev3.RouteConfiguration{Name: "r"}
	domains := r.Perm(len(rtDomains))
	for v := range r.IntN(4) + 1 {
		vh := &routev3.VirtualHost{Name: fmt.Sprint("vh", v)}
		for range r.IntN(2) + 1 {
			if len(domains) == 0 {
				break
			}
			vh.Domains = append(vh.Domains, rtDomains[domains[0]])
			domains = domains[1:]
		}
		if len(vh.Domains) == 0 {
			break
		}
		for i := range r.IntN(8) + 1 {
			vh.Routes = append(vh.Routes, &routev3.Route{Name: fmt.Sprint(vh.Name, "r", i), Match: randRouteMatch(r),
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}})
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	return proxyroute.Compile(rc)
}

func randHead(r *rand.Rand) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s%s HTTP/1.%d\r\n", pick(r, rtMethods), pick(r, rtPaths), pick(r, rtQueries), 1-r.IntN(5)/4)
	if h := pick(r, rtHosts); h != "" || r.IntN(2) == 0 {
		fmt.Fprintf(&b, "Host: %s\r\n", h)
	}
	for range r.IntN(6) {
		name, value := pick(r, rtHeaders), pick(r, rtValues)
		switch strings.ToLower(name) {
		case "content-length":
			value = pick(r, []string{"0", "1", "2"})
		case "transfer-encoding":
			value = "chunked"
		}
		if r.IntN(3) == 0 {
			name = strings.ToUpper(name)
		}
		fmt.Fprintf(&b, "%s: %s\r\n", name, value)
	}
	if r.IntN(3) == 0 {
		// What the :scheme matchers read (request.h1Scheme).
		fmt.Fprintf(&b, "X-Forwarded-Proto: %s\r\n", pick(r, []string{"https", "http", "HTTPS", "ftp", "", "https, http"}))
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// TestMatchHeadAgreesWithMatch: for random route configurations and
// random request heads, MatchHead over the head as the loops parse it
// chooses the same virtual host and route as Match over the request
// net/http reads from the same bytes, and EscapedPath gives the path
// URL.EscapedPath gives.
func TestMatchHeadAgreesWithMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 1))
	var compared, matched, refused int
	for range 400 {
		rc, err := randRouteConfig(r)
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			raw := randHead(r)
			if !checkMatchHead(t, rc, raw) {
				refused++
				continue
			}
			compared++
			var req request
			_ = parseRequest(raw, &req, true, proxyroute.MaxHeaders, false)
			h := &headView{raw, &req, req.h1Scheme(raw, false)}
			path, _ := proxyroute.EscapedPath(h.Target(), nil)
			if _, rt := rc.MatchHead(h, path); rt != nil {
				matched++
			}
		}
	}
	t.Logf("%d heads compared (%d matched a route), %d refused by a parser", compared, matched, refused)
	if compared < 20000 || matched < compared/10 || matched > compared*9/10 {
		t.Fatalf("the generator is off: %d compared, %d matched", compared, matched)
	}
}

// checkMatchHead compares the two matchers on raw; it reports false when
// either parser refuses the head.
func checkMatchHead(t *testing.T, rc *proxyroute.Config, raw []byte) bool {
	t.Helper()
	var req request
	if parseRequest(raw, &req, true, proxyroute.MaxHeaders, false) != nil {
		return false
	}
	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return false
	}
	// On a plaintext connection: the :scheme is the x-forwarded-proto's
	// or http, as each path reads the lines (request.h1Scheme, and the
	// goroutine path's from net/http's map).
	h := &headView{raw, &req, req.h1Scheme(raw, false)}
	xfp := hr.Header["X-Forwarded-Proto"]
	hr.URL.Scheme = proxyroute.H1Scheme("", strings.Join(xfp[:min(len(xfp), 1)], ""), len(xfp), false)
	path, ok := proxyroute.EscapedPath(h.Target(), nil)
	if !ok {
		t.Fatalf("%q: EscapedPath refused a target net/http reads", raw)
	}
	if want := hr.URL.EscapedPath(); string(path) != want {
		t.Fatalf("%q: EscapedPath %q, net/url %q", raw, path, want)
	}
	wvh, wrt := rc.Match(hr, hr.URL.EscapedPath())
	gvh, grt := rc.MatchHead(h, path)
	if wvh != gvh || wrt != grt {
		name := func(vh *proxyroute.VirtualHost, rt *proxyroute.Route) string {
			s := "<nil>"
			if vh != nil {
				s = vh.Name
			}
			if rt != nil {
				s += "/" + rt.Name
			}
			return s
		}
		t.Fatalf("%q: MatchHead chose %s, Match %s", raw, name(gvh, grt), name(wvh, wrt))
	}
	return true
}

// FuzzMatchHead compares the matchers on fuzzed heads, against a random
// configuration drawn from the seed.
func FuzzMatchHead(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		f.Add(randHead(r), uint64(i))
	}
	f.Fuzz(func(t *testing.T, raw []byte, seed uint64) {
		rc, err := randRouteConfig(rand.New(rand.NewPCG(seed, 0)))
		if err != nil {
			t.Fatal(err)
		}
		var sc headScanner
		n, err := sc.scan(raw, maxHeadBytes)
		if err != nil || n == 0 {
			return
		}
		checkMatchHead(t, rc, raw[:n])
	})
}

// TestMatchHeadAllocatesNothing: App Mesh's routes (a prefix, a header
// matcher) are matched without allocating, as the loops need.
func TestMatchHeadAllocatesNothing(t *testing.T) {
	rc, err := proxyroute.Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*.local"}, Routes: []*routev3.Route{{
			Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"},
				Headers: []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
		}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// Connection and TE lines: the header match sees the request as
	// Envoy's router does (proxyroute.Seen) without allocating either.
	raw := []byte("GET /api/x?y=1 HTTP/1.1\r\nHost: Svc.Local\r\nUser-Agent: t\r\nConnection: keep-alive, x-other\r\n" +
		"TE: trailers\r\nX-Canary: 1\r\n\r\n")
	var req request
	if err := parseRequest(raw, &req, true, proxyroute.MaxHeaders, false); err != nil {
		t.Fatal(err)
	}
	h := &headView{raw, &req, "http"}
	var rt *proxyroute.Route
	allocs := testing.AllocsPerRun(100, func() {
		path, _ := proxyroute.EscapedPath(h.Target(), nil)
		_, rt = rc.MatchHead(h, path)
	})
	if rt == nil || allocs != 0 {
		t.Fatalf("route %v, %v allocations per match", rt, allocs)
	}
}
