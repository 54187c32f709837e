package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// headEcho answers with the request head as the upstream received it:
// method, target, Host (:authority), and every header sorted
// (x-request-id by name only: generated).
func headEcho(w http.ResponseWriter, r *http.Request) {
	hs := []string{"host: " + r.Host}
	for k, vv := range r.Header {
		if k == "X-Request-Id" {
			hs = append(hs, k)
			continue
		}
		hs = append(hs, k+": "+strings.Join(vv, ", "))
	}
	slices.Sort(hs)
	_, _ = fmt.Fprintf(w, "%s %s %s [%s]", r.Proto, r.Method, r.RequestURI, strings.Join(hs, "; "))
}

// rewriteRoutes are routes with a prefix, regex or host rewrite, or the
// gateway route App Mesh writes (host and prefix), under /1/ to cluster
// h1 and under /2/ to cluster h2 (twoUpstreams), and a route without any
// rewrite.
func rewriteRoutes() []*routev3.Route {
	var routes []*routev3.Route
	for _, n := range []string{"1", "2"} {
		cl := "h" + n
		pre := routeTo("/"+n+"/pre/", cl)
		pre.GetRoute().PrefixRewrite = "/up/"
		re := routeTo("/"+n+"/re/", cl)
		re.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: `^/([12])/re/([^/]+)/(.*)$`},
			Substitution: `/\3/\1/\2`}
		host := routeTo("/"+n+"/host/", cl)
		host.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "svc.rewritten"}
		gw := routeTo("/"+n+"/gw/", cl)
		gw.GetRoute().PrefixRewrite = "/"
		gw.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "gw.rewritten:8080"}
		routes = append(routes, pre, re, host, gw, routeTo("/"+n+"/", cl))
	}
	return routes
}

// TestRewritesSamePaths: a route's prefix, regex and host rewrites reach
// the upstream alike on every path, over HTTP/1.1 and h2c, to HTTP/1.1
// and HTTP/2 upstreams: the rewritten path with the request's query (its
// bytes as received, as Envoy sends them: TestRequestTargetSamePaths), the rewritten Host
// or :authority, x-envoy-original-path (the request's path and query)
// when the route rewrites the path, even to the same path, as Envoy's
// router (finalizePathHeader), replacing one the client sent; the access
// log's %REQ(:PATH)%, %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% and
// %REQ(:AUTHORITY)% are the same. The loops serve these routes: no
// connection is handed off but the h2c one on the path that hands h2c
// off (the loops handed off every request on a rewriting route, and
// refused h2c on a listener with one).
func TestRewritesSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:AUTHORITY)% %PROTOCOL% %RESPONSE_CODE% %UPSTREAM_CLUSTER% %UPSTREAM_HOST%\n"}}
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	type req struct{ path, extra string } // extra: a header line the client adds
	var reqs []req
	for _, n := range []string{"1", "2"} {
		for _, r := range []req{
			{"/pre/a/b?q=1&r=%20", ""},
			{"/pre/a%20b/c%2Fd?x=%2F", ""},
			{"/pre/", ""},
			{"/pre/z", "X-Envoy-Original-Path: /from/the/client"},
			{"/re/one/two/three?q", ""},
			{"/re/%41%2f/b%20c", ""},
			{"/re/unmatched?q", ""},     // the regex does not match: the path is unchanged, and recorded
			{"/re/unmatched|x?y|z", ""}, // unchanged, sent as received
			{"/pre/a|b'c?x|y", ""},
			{"/host/x?y=1", "X-Envoy-Original-Path: /kept"},
			{"/gw/a%2Fb?q=1", ""},
			{"/gw/", ""},
			{"/plain?q", ""},
		} {
			reqs = append(reqs, req{"/" + n + r.path, r.extra})
		}
	}
	// What the goroutine path sends, as Envoy does (the rest compared
	// with it).
	want := map[string]string{
		"h1 /1/pre/a/b?q=1&r=%20": "HTTP/1.1 GET /up/a/b?q=1&r=%20 [User-Agent: weft-test; X-Envoy-Original-Path: /1/pre/a/b?q=1&r=%20; " +
			"X-Forwarded-Proto: http; X-Request-Id; host: x]",
		"h1 /2/gw/a%2Fb?q=1": "HTTP/2.0 GET /a%2Fb?q=1 [User-Agent: weft-test; X-Envoy-Original-Path: /2/gw/a%2Fb?q=1; " +
			"X-Forwarded-Proto: http; X-Request-Id; host: gw.rewritten:8080]",
		"h2c /1/pre/z": "HTTP/1.1 GET /up/z [Accept-Encoding: gzip; User-Agent: Go-http-client/2.0; X-Envoy-Original-Path: /1/pre/z; " +
			"X-Forwarded-Proto: http; X-Request-Id; host: x]",
		"h2c /2/host/x?y=1": "HTTP/2.0 GET /2/host/x?y=1 [Accept-Encoding: gzip; User-Agent: Go-http-client/2.0; " +
			"X-Envoy-Original-Path: /kept; X-Forwarded-Proto: http; X-Request-Id; host: svc.rewritten]",
		"h2c /2/re/unmatched?q": "HTTP/2.0 GET /2/re/unmatched?q [Accept-Encoding: gzip; User-Agent: Go-http-client/2.0; " +
			"X-Envoy-Original-Path: /2/re/unmatched?q; X-Forwarded-Proto: http; X-Request-Id; host: x]",
		"h1 /1/re/one/two/three?q": "HTTP/1.1 GET /two/three/1/one?q [User-Agent: weft-test; X-Envoy-Original-Path: /1/re/one/two/three?q; " +
			"X-Forwarded-Proto: http; X-Request-Id; host: x]",
	}
	// Access log lines as Envoy's (its router rewrites the request's
	// headers in place, and the log reads them), but %UPSTREAM_HOST%.
	wantLog := []string{
		"\n/up/z /1/pre/z x HTTP/1.1 200 h1 ",
		"\n/up/z /2/pre/z x HTTP/2 200 h2 ",
		"\n/ /2/gw/ gw.rewritten:8080 HTTP/2 200 h2 ",
		"\n/a%2Fb?q=1 /1/gw/a%2Fb?q=1 gw.rewritten:8080 HTTP/1.1 200 h1 ",
		"\n/1/host/x?y=1 /kept svc.rewritten HTTP/1.1 200 h1 ",
		"\n/b%20c/1/%41%2f /1/re/%41%2f/b%20c x HTTP/2 200 h1 ",
		"\n/2/plain?q /2/plain?q x HTTP/1.1 200 h2 ",
		"\n/1/re/unmatched?q /1/re/unmatched?q x HTTP/1.1 200 h1 ",
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format, append(clusters,
				routeConfig("rds", vhost("v", []string{"*"}, rewriteRoutes()...)))...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			for _, r := range reqs {
				res.answers["h1 "+r.path] = getRewritten(t, h.addr("egress"), r.path, r.extra)
				hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+r.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				if k, v, ok := strings.Cut(r.extra, ": "); ok {
					hr.Header.Set(k, v)
				}
				resp, err := h2c.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers["h2c "+r.path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			res.log = awaitLog(t, logFile, 2*len(reqs))
			for _, w := range wantLog {
				if !strings.Contains(res.log, w) {
					t.Errorf("access log\n%s\nwithout %q (as Envoy logs the rewritten request)", res.log, w)
				}
			}
			if p.goroutines {
				for k, w := range want {
					if g := res.answers[k]; g != "200 "+w {
						t.Errorf("%s: the upstream got\n%s\nwant\n%s", k, g, "200 "+w)
					}
				}
			} else {
				// Served by the loops: none handed off but, on the path
				// that hands h2c off, the h2c connection and each
				// HTTP/1.1 request to the HTTP/2 cluster (HTTP/2
				// upstreams are the goroutine path's there).
				want := int64(0)
				if p.h2Goroutines {
					want = 1 + int64(len(reqs)/2)
				}
				if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != want {
					t.Errorf("on the loops %v, %d connections handed off; want true, %d", l.OnLoops(), l.HandedOff(), want)
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// getRewritten sends GET path (Host x, User-Agent weft-test, and the header
// line extra) on a connection of its own, and tells the answer's status
// and body.
func getRewritten(t *testing.T, addr, path, extra string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if extra != "" {
		extra += "\r\n"
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nUser-Agent: weft-test\r\n"+extra+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "error " + err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// TestRewriteOriginalPathSamePaths: on a route that rewrites the path,
// x-envoy-original-path is the path the connection manager normalised
// (merge_slashes, normalize_path: Envoy's rewrites :path in place before
// its router records it) and the routes matched, with the query, on every
// path, upstream and in the access log (every path sent the request's
// path as received); and a request on such a route answered
// no_healthy_upstream is logged as received (%REQ(:PATH)%,
// %REQ(:AUTHORITY)%, no x-envoy-original-path), as Envoy's router answers
// it before finalizeRequestHeaders rewrites the request.
func TestRewriteOriginalPathSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:AUTHORITY)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}
	clusters := append(twoUpstreams(t, http.HandlerFunc(headEcho)), edsCluster("empty"), cla("empty"))
	empty := routeTo("/empty/", "empty")
	empty.GetRoute().PrefixRewrite = "/up/"
	empty.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "e.rewritten"}
	paths := []string{"/1/pre/a//b/../c?q=%2F", "/2/gw/./x//y?z", "/empty/a?q"}
	want := map[string]string{
		"h1 /1/pre/a//b/../c?q=%2F": "200 HTTP/1.1 GET /up/a/c?q=%2F [User-Agent: weft-test; X-Envoy-Original-Path: /1/pre/a/c?q=%2F; " +
			"X-Forwarded-Proto: http; X-Request-Id; host: x]",
		"h2c /2/gw/./x//y?z": "200 HTTP/2.0 GET /x/y?z [Accept-Encoding: gzip; User-Agent: Go-http-client/2.0; " +
			"X-Envoy-Original-Path: /2/gw/x/y?z; X-Forwarded-Proto: http; X-Request-Id; host: gw.rewritten:8080]",
		"h1 /empty/a?q": "503 no healthy upstream",
	}
	wantLog := []string{
		"\n/up/a/c?q=%2F /1/pre/a/c?q=%2F x HTTP/1.1 200 - h1",
		"\n/up/a/c?q=%2F /1/pre/a/c?q=%2F x HTTP/2 200 - h1",
		"\n/x/y?z /2/gw/x/y?z gw.rewritten:8080 HTTP/1.1 200 - h2",
		"\n/empty/a?q /empty/a?q x HTTP/1.1 503 UH empty",
		"\n/empty/a?q /empty/a?q x HTTP/2 503 UH empty",
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			normalize := func(m *hcmv3.HttpConnectionManager) { m.MergeSlashes, m.NormalizePath = true, wrapperspb.Bool(true) }
			h.push(append(clusters, httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format), normalize)),
				routeConfig("rds", vhost("v", []string{"*"}, append(rewriteRoutes(), empty)...)))...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			for _, path := range paths {
				res.answers["h1 "+path] = getRewritten(t, h.addr("egress"), path, "")
				hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				resp, err := h2c.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers["h2c "+path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			res.log = awaitLog(t, logFile, 2*len(paths))
			for _, w := range wantLog {
				if !strings.Contains(res.log, w) {
					t.Errorf("access log\n%s\nwithout %q", res.log, w)
				}
			}
			for k, w := range want {
				if g := res.answers[k]; g != w {
					t.Errorf("%s: answered\n%s\nwant\n%s", k, g, w)
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
