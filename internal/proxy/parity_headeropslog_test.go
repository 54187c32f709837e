package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestRequestHeaderOpsLoggedSamePaths: the access log's %REQ(X)% reads
// header X as the route's request header mutations left it, as Envoy's
// router makes them in place on the request headers its access log reads
// (finalizeRequestHeaders): an added header, a removed one, one
// overwritten, the virtual host's, one the client's Connection named
// (gone by then) and added again; alike on every path, over HTTP/1.1 and
// h2c, to HTTP/1.1 and HTTP/2 upstreams.
func TestRequestHeaderOpsLoggedSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%REQ(X-ADDED)% %REQ(X-GONE)% %REQ(X-OVER)% %REQ(X-VH)% %REQ(X-KEPT)% %REQ(X-CONN)% %PROTOCOL%\n"}}
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	vh := vhost("v", []string{"*"}, routeTo("/1/", "h1"), routeTo("/2/", "h2"))
	for _, r := range vh.Routes {
		r.RequestHeadersToRemove = []string{"x-gone"}
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "x-added", Value: "r"}},
			{Header: &corev3.HeaderValue{Key: "x-conn", Value: "r"}},
			{Header: &corev3.HeaderValue{Key: "x-over", Value: "r"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	}
	vh.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-vh", Value: "v"}}}
	rc := routeConfig("rds", vh)
	paths := []string{"/1/a", "/2/b"}
	wantLog := []string{
		"\n/1/a client - r v client r HTTP/1.1\n", "\n/2/b client - r v client r HTTP/1.1\n",
		"\n/1/a client - r v client r HTTP/2\n", "\n/2/b client - r v client r HTTP/2\n",
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format, append(clusters, rc)...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			for _, path := range paths {
				res.answers["h1 "+path] = getRewritten(t, h.addr("egress"), path,
					"X-Added: client\r\nX-Gone: client\r\nX-Over: client\r\nX-Kept: client\r\nConnection: x-conn\r\nX-Conn: client")
				hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				for _, k := range []string{"X-Added", "X-Gone", "X-Over", "X-Kept"} {
					hr.Header.Set(k, "client")
				}
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
				if !strings.Contains("\n"+res.log+"\n", w) {
					t.Errorf("access log\n%s\nwithout %q", res.log, w)
				}
			}
			if l := h.listener("egress"); !p.h2Goroutines && (!l.OnLoops() || l.HandedOff() != 0) {
				t.Errorf("on the loops %v, %d connections handed off; want true, 0", l.OnLoops(), l.HandedOff())
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestHeadlessLogAfterRewriteSamePaths: a request head refused on a
// connection whose previous request went through a route with a host
// rewrite and request header mutations is logged without request
// headers (%REQ(:AUTHORITY)% and %REQ(X)% are "-"), as Envoy logs a head
// its codec refused, on every path (the loops logged the previous
// route's rewritten host).
func TestHeadlessLogAfterRewriteSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:AUTHORITY)% %REQ(X-ADDED)% %RESPONSE_CODE%\n"}}
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	r := routeTo("/1/", "h1")
	r.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "rewritten"}
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "r"}}}
	rc := routeConfig("rds", vhost("v", []string{"*"}, r))
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format, append(clusters, rc)...)
			c, err := dialFor10s(h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			res := pathResult{answers: map[string]string{}}
			for i, head := range []string{"GET /1/a HTTP/1.1\r\nHost: x\r\n\r\n", "GET /1/a HTTP/1.1\r\nHost : x\r\n\r\n"} {
				_, _ = io.WriteString(c, head)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers[fmt.Sprint(i)] = fmt.Sprint(resp.StatusCode)
			}
			lines := strings.Split(strings.TrimSpace(awaitLog(t, logFile, 2)), "\n")
			slices.Sort(lines)
			res.log = strings.Join(lines, "\n")
			if want := "- - 400\nrewritten r 200"; res.log != want {
				t.Errorf("access log\n%s\nwant\n%s", res.log, want)
			}
			results[p.name] = res
		})
	}
	sameAsGoroutinePath(t, results, []string{"0", "1"})
}
