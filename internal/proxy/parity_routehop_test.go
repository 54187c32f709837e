package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// TestRoutesSeeSanitizedHeadersSamePaths: routes match an HTTP/1.1
// request that is not an upgrade as Envoy's router sees it, after its
// codec removed the headers Connection names and its connection manager
// removed Connection and Upgrade and kept of TE only "trailers"
// (ConnectionManagerUtility::mutateRequestHeaders, which runs before
// refreshCachedRoute): a header match on Upgrade, Connection or a header
// Connection names does not match, and one on TE sees "trailers" or no
// TE. Every path routed on the headers as sent, so such a match matched
// where Envoy's does not. The access log's %REQ(TE)% is "trailers" or
// "-" as Envoy logs it (every path logged the TE sent). Over h2c (where
// TE can only be "trailers") nothing changes.
func TestRoutesSeeSanitizedHeadersSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:PATH)% " +
		"%PROTOCOL% %RESPONSE_CODE% %UPSTREAM_CLUSTER% %REQ(TE)% %REQ(X-NAMED)%\n"}}
	hop, plain := newBackend(t, "hop"), newBackend(t, "plain")
	// Each path's first route matches a header, to cluster hop; its
	// second takes the rest, to plain.
	matching := func(prefix string, hm *routev3.HeaderMatcher) []*routev3.Route {
		r := routeTo(prefix, "hop")
		r.Match.Headers = []*routev3.HeaderMatcher{hm}
		return []*routev3.Route{r, routeTo(prefix, "plain")}
	}
	present := func(name string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	exact := func(name, v string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}}
	}
	var routes []*routev3.Route
	for _, rs := range [][]*routev3.Route{
		matching("/upgrade", present("upgrade")),
		matching("/connection", present("connection")),
		matching("/keep-alive", present("keep-alive")),
		matching("/named", present("x-named")),
		matching("/te-sent", exact("te", "gzip, trailers")),
		matching("/te-kept", exact("te", "trailers")),
		matching("/te-gone", present("te")),
	} {
		routes = append(routes, rs...)
	}
	cases := []struct {
		path, head string // the request's other header lines
		want       string // its access log line as Envoy writes it
	}{
		{"/upgrade", "Upgrade: websocket\r\nConnection: keep-alive\r\n", "/upgrade HTTP/1.1 200 plain - -"},
		{"/connection", "Connection: keep-alive\r\n", "/connection HTTP/1.1 200 plain - -"},
		{"/keep-alive", "Keep-Alive: timeout=5\r\n", "/keep-alive HTTP/1.1 200 plain - -"},
		{"/named", "Connection: x-named\r\nX-Named: 1\r\n", "/named HTTP/1.1 200 plain - -"},
		{"/named/kept", "X-Named: 1\r\n", "/named/kept HTTP/1.1 200 hop - 1"}, // not named: matched and logged
		{"/te-sent", "TE: gzip, trailers\r\n", "/te-sent HTTP/1.1 200 plain trailers -"},
		{"/te-kept", "TE: gzip, trailers\r\n", "/te-kept HTTP/1.1 200 hop trailers -"},
		{"/te-kept/named", "Connection: te\r\nTE: trailers\r\n", "/te-kept/named HTTP/1.1 200 hop trailers -"},
		{"/te-gone", "TE: gzip\r\n", "/te-gone HTTP/1.1 200 plain - -"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format,
				routeConfig("rds", vhost("v", []string{"*"}, routes...)),
				edsCluster("hop"), cla("hop", hop.addr()), edsCluster("plain"), cla("plain", plain.addr()))
			res := pathResult{answers: map[string]string{}}
			var want []string
			for _, tc := range cases {
				res.answers[tc.path] = getWithHead(t, h.addr("egress"), tc.path, tc.head)
				want = append(want, tc.want)
			}
			req, err := http.NewRequest("GET", "http://"+h.addr("egress")+"/te-kept", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Te", "trailers")
			resp, err := h2cClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res.answers["h2c /te-kept"] = resp.Status
			want = append(want, "/te-kept HTTP/2 200 hop trailers -")
			res.log = awaitLog(t, logFile, len(want))
			if w := sortLines(strings.Join(want, "\n") + "\n"); res.log != w {
				t.Errorf("access log\n%s\nwant (as Envoy routes and logs)\n%s", res.log, w)
			}
			if !p.goroutines {
				// The loops hand a request with an Upgrade line to the
				// goroutine path (and, on one path, the h2c connection).
				want := int64(1)
				if p.h2Goroutines {
					want++
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

// getWithHead sends GET path with the header lines head on a connection of its
// own, and tells the answer's status line.
func getWithHead(t *testing.T, addr, path, head string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "error " + err.Error()
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}
