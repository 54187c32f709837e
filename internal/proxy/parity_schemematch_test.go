package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// schemeRoute is a route named and to cluster scheme for requests whose
// :scheme is scheme, as weft's translator emits an App Mesh route's
// match.scheme (an exact string match on :scheme).
func schemeRoute(scheme string) *routev3.Route {
	r := routeTo("/", scheme)
	r.Name = scheme
	r.Match.Headers = []*routev3.HeaderMatcher{{Name: ":scheme", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: scheme}}}}}
	return r
}

// TestSchemeMatchSamePaths: a route's :scheme header match and the access
// log's %REQ(:SCHEME)% read the request's :scheme as Envoy 1.34's
// connection manager gives it before it routes (mutateRequestHeaders),
// on every path: an HTTP/2 client's own, over TLS or not and whatever its
// x-forwarded-proto; an HTTP/1.1 request's x-forwarded-proto when that is
// one line of http or https (case aside, kept as written: HTTPS matches
// neither route), else https over a TLS listener (App Mesh's STRICT
// ingress) and http otherwise; the connection's with use_remote_address
// on; an absolute-form target's scheme (an https:// one over plaintext
// with use_remote_address refused 403, as Envoy's codec refuses it). A logged TLS listener is the
// goroutine path's on every path; an unlogged one (bare) the loops'.
func TestSchemeMatchSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	common := server.common(false)
	common.AlpnProtocols = []string{"h2", "http/1.1"}
	upstream := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	httpsUp, httpUp := upstream("https"), upstream("http")

	plainDial := func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tlsDial := func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		cfg := clientTLS(ca, "svc.local")
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, network, addr)
	}
	type client struct {
		name   string
		scheme string // the URL's: an HTTP/2 client's :scheme, an absolute-form target's
		rt     func() http.RoundTripper
	}
	h1 := client{"HTTP/1.1", "http", func() http.RoundTripper { return &http.Transport{} }}
	h1TLS := client{"HTTP/1.1 over TLS", "https", func() http.RoundTripper {
		return &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local")} // no h2 with a TLS config of its own
	}}
	h2cHTTP := client{"h2c :scheme http", "http", func() http.RoundTripper { return h2cClient(t).Transport }}
	h2cHTTPS := client{"h2c :scheme https", "https", func() http.RoundTripper { return &http2.Transport{DialTLSContext: plainDial} }}
	h2TLS := client{"HTTP/2 over TLS :scheme https", "https", func() http.RoundTripper {
		return &http2.Transport{TLSClientConfig: clientTLS(ca, "svc.local")}
	}}
	h2TLSHTTP := client{"HTTP/2 over TLS :scheme http", "http", func() http.RoundTripper {
		return &http2.Transport{AllowHTTP: true, DialTLSContext: tlsDial}
	}}
	absHTTPS := client{"HTTP/1.1 absolute-form https://", "https", func() http.RoundTripper {
		return absForm(func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) })
	}}
	cases := []struct {
		c        client
		listener string   // plain and tls are logged, remote has use_remote_address on
		xfp      []string // the client's x-forwarded-proto lines
		scheme   string   // the request's :scheme, which the access log shows
		route    string   // the route that served it: https, http, or none (404); "403" refused before routing
	}{
		{h1, "plain", nil, "http", "http"},
		{h1, "plain", []string{"https"}, "https", "https"},
		{h1, "plain", []string{"http"}, "http", "http"},
		{h1, "plain", []string{"ftp"}, "http", "http"},
		{h1, "plain", []string{"HTTPS"}, "HTTPS", ""},
		// Envoy's codec joins the lines: "https,https" is no scheme.
		{h1, "plain", []string{"https", "https"}, "http", "http"},
		{h1TLS, "tls", nil, "https", "https"},
		{h1TLS, "tls", []string{"http"}, "http", "http"},
		{h1TLS, "tls", []string{"ftp"}, "https", "https"},
		{h1TLS, "bare", nil, "https", "https"},
		{h1TLS, "bare", []string{"http"}, "http", "http"},
		{h1, "remote", []string{"https"}, "http", "http"},
		{h2cHTTP, "plain", nil, "http", "http"},
		{h2cHTTP, "plain", []string{"https"}, "http", "http"},
		{h2cHTTPS, "plain", nil, "https", "https"},
		{h2cHTTPS, "plain", []string{"http"}, "https", "https"},
		{h2TLS, "tls", nil, "https", "https"},
		{h2TLS, "tls", []string{"http"}, "https", "https"},
		{h2TLS, "bare", nil, "https", "https"},
		{h2TLSHTTP, "tls", nil, "http", "http"},
		{h2TLSHTTP, "bare", nil, "http", "http"},
		{absHTTPS, "plain", nil, "https", "https"},
		// With use_remote_address Envoy's codec refuses it
		// (validate_scheme): logged without request headers.
		{absHTTPS, "remote", nil, "-", "403"},
	}
	const format = "%REQ(X-CASE)% %REQ(:SCHEME)% %ROUTE_NAME% %RESPONSE_CODE%\n"
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			dir := t.TempDir()
			logs := map[string]string{"plain": filepath.Join(dir, "plain.log"), "tls": filepath.Join(dir, "tls.log"),
				"remote": filepath.Join(dir, "remote.log")}
			logged := func(name string) func(*hcmv3.HttpConnectionManager) {
				return withAccessLog(logs[name], &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
					TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: format}}}})
			}
			tlsLogged := httpListener("tls", httpManager("tls", "rds", logged("tls")))
			tlsLogged.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: common})
			h.push(httpListener("plain", httpManager("plain", "rds", logged("plain"))), tlsLogged,
				strictListener("bare", &tlsv3.DownstreamTlsContext{CommonTlsContext: common}),
				httpListener("remote", httpManager("remote", "rds", logged("remote"),
					func(m *hcmv3.HttpConnectionManager) { m.UseRemoteAddress = wrapperspb.Bool(true) })),
				routeConfig("rds", vhost("v", []string{"*"}, schemeRoute("https"), schemeRoute("http"))),
				edsCluster("https"), cla("https", httpsUp), edsCluster("http"), cla("http", httpUp))
			answers := map[string]string{}
			wantLines := map[string][]string{}
			for i, tc := range cases {
				key := fmt.Sprintf("%d %s to %s, x-forwarded-proto %q", i, tc.c.name, tc.listener, tc.xfp)
				req, err := http.NewRequest("GET", tc.c.scheme+"://"+h.addr(tc.listener)+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header["X-Forwarded-Proto"] = tc.xfp
				req.Header.Set("X-Case", strconv.Itoa(i))
				rt := tc.c.rt()
				got := roundTripAnswer(t, rt.RoundTrip, req, key)
				if ci, ok := rt.(interface{ CloseIdleConnections() }); ok {
					ci.CloseIdleConnections()
				}
				want, route, code := "404 ", "-", "404"
				if tc.route == "403" {
					want, code = "403 Forbidden", "403"
				} else if tc.route != "" {
					want, route, code = "200 "+tc.route, tc.route, "200"
				}
				checkAnswer(t, answers, key, got, want)
				if logs[tc.listener] != "" {
					c := strconv.Itoa(i)
					if code == "403" {
						c = "-" // no request headers
					}
					wantLines[tc.listener] = append(wantLines[tc.listener], fmt.Sprintf("%s %s %s %s", c, tc.scheme, route, code))
				}
			}
			var log []string
			for _, name := range []string{"plain", "tls", "remote"} {
				log = append(log, name+":"+awaitWantLog(t, logs[name], wantLines[name]))
			}
			results[p.name] = pathResult{answers: answers, log: strings.Join(log, "\n")}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
