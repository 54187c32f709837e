package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestH2UpstreamSchemeSamePaths: an HTTP/2 cluster, h2c or over TLS,
// gets the downstream request's :scheme on every path, as Envoy 1.34
// sends it (route.H1Scheme): an HTTP/2 client's own, over TLS or not and
// whatever its x-forwarded-proto; an HTTP/1.1 request's x-forwarded-proto
// when that is http or https, else https over a TLS listener (App Mesh's
// STRICT ingress) and http otherwise, and the connection's with
// use_remote_address on, whose x-forwarded-proto the proxy replaces. The
// upstream's x-forwarded-proto is the client's, or the connection's
// scheme when it sent none. An HTTP/1.1 cluster is unaffected: a plain
// HTTP/1.1 request in origin form.
func TestH2UpstreamSchemeSamePaths(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	app, proxySAN := "spiffe://weft.local/mesh/m/virtualNode/app", "spiffe://weft.local/mesh/m/virtualNode/proxy"
	// Each upstream answers the :scheme it got and its x-forwarded-proto.
	echoScheme := func(w *rawH2Writer, id uint32, r *rawH2Request) {
		body := strings.Join(r.values(":scheme"), ",") + " xfp=" + strings.Join(r.values("x-forwarded-proto"), ",")
		w.headers(id, false, 0, ":status", "200", "content-length", strconv.Itoa(len(body)))
		w.data(id, []byte(body))
	}
	h2c := rawH2Upstream(t, echoScheme)
	// The same over mutual TLS: x/net's server cannot tell (net/http's
	// gives every request over TLS the connection's state).
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"app.local"}, app).TLS(t)}, NextProtos: []string{"h2"},
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	overTLS := tcpUpstream(t, func(c net.Conn) { serveRawH2(tls.Server(c, tlsCfg), echoScheme) }) // ends when the proxy closes the connection
	h1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s xfp=%s", r.Proto, r.RequestURI, strings.Join(r.Header["X-Forwarded-Proto"], ","))
	}))
	t.Cleanup(h1.Close)
	proxyCert := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, proxySAN))
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	common := server.common(false)
	common.AlpnProtocols = []string{"h2", "http/1.1"}

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
		name     string
		listener string
		scheme   string // the URL's: an HTTP/2 client's :scheme
		rt       func() http.RoundTripper
	}
	h1Plain := client{"HTTP/1.1", "egress", "http", func() http.RoundTripper { return &http.Transport{} }}
	h1TLS := client{"HTTP/1.1 over TLS", "ingress", "https", func() http.RoundTripper {
		return &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local")} // no h2 with a TLS config of its own
	}}
	h1Remote := client{"HTTP/1.1 use_remote_address", "remote", "http", func() http.RoundTripper { return &http.Transport{} }}
	h2cHTTP := client{"h2c :scheme http", "egress", "http", func() http.RoundTripper { return h2cClient(t).Transport }}
	h2cHTTPS := client{"h2c :scheme https", "egress", "https", func() http.RoundTripper { return &http2.Transport{DialTLSContext: plainDial} }}
	h2TLS := client{"HTTP/2 over TLS :scheme https", "ingress", "https", func() http.RoundTripper {
		return &http2.Transport{TLSClientConfig: clientTLS(ca, "svc.local")}
	}}
	h2TLSHTTP := client{"HTTP/2 over TLS :scheme http", "ingress", "http", func() http.RoundTripper {
		return &http2.Transport{AllowHTTP: true, DialTLSContext: tlsDial}
	}}
	// Absolute-form targets (Request.WriteProxy), which the loops hand to
	// the goroutine path: the target's scheme is the request's.
	absPlain := client{"HTTP/1.1 absolute-form https://", "egress", "https", func() http.RoundTripper {
		return absForm(func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) })
	}}
	absTLS := client{"HTTP/1.1 over TLS absolute-form http://", "ingress", "http", func() http.RoundTripper {
		return absForm(func(addr string) (net.Conn, error) { return tls.Dial("tcp", addr, clientTLS(ca, "svc.local")) })
	}}
	cases := []struct {
		c      client
		xfp    []string // the client's x-forwarded-proto lines
		scheme string   // the :scheme an HTTP/2 upstream gets
		upXFP  string   // the x-forwarded-proto every upstream gets
	}{
		{h1Plain, nil, "http", "http"},
		{h1Plain, []string{"https"}, "https", "https"},
		{h1Plain, []string{"http"}, "http", "http"},
		{h1Plain, []string{"ftp"}, "http", "ftp"},
		// Envoy's codec joins the lines: "https,https" is no scheme.
		{h1Plain, []string{"https", "https"}, "http", "https,https"},
		{h1TLS, nil, "https", "https"},
		{h1TLS, []string{"http"}, "http", "http"},
		{h1TLS, []string{"ftp"}, "https", "ftp"},
		{h1Remote, []string{"https"}, "http", "http"},
		{h2cHTTP, nil, "http", "http"},
		{h2cHTTP, []string{"https"}, "http", "https"},
		{h2cHTTPS, nil, "https", "http"},
		{h2TLS, nil, "https", "https"},
		{h2TLS, []string{"http"}, "https", "http"},
		{h2TLSHTTP, nil, "http", "https"},
		// An empty line is an x-forwarded-proto, kept, and no scheme.
		{h1Plain, []string{""}, "http", ""},
		{h1TLS, []string{""}, "https", ""},
		{h2cHTTPS, []string{""}, "https", ""},
		{absPlain, nil, "https", "http"},
		{absTLS, []string{"https"}, "http", "https"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			remote := httpManager("remote", "rds", func(m *hcmv3.HttpConnectionManager) { m.UseRemoteAddress = wrapperspb.Bool(true) })
			h.push(httpListener("egress", httpManager("egress", "rds")), httpListener("remote", remote),
				strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common}),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h2c", "h2c"), routeTo("/tls", "tls"), routeTo("/h1", "h1"))),
				edsCluster("h2c", h2Upstream), cla("h2c", h2c),
				edsCluster("tls", h2Upstream, upstreamTLS(proxyCert, "app.local", app)), cla("tls", overTLS),
				edsCluster("h1"), cla("h1", h1.Listener.Addr().String()))
			answers := map[string]string{}
			for _, tc := range cases {
				rt := tc.c.rt()
				for _, cl := range []string{"h2c", "tls", "h1"} {
					key := fmt.Sprintf("%s, x-forwarded-proto %q, to /%s", tc.c.name, tc.xfp, cl)
					req, err := http.NewRequest("GET", tc.c.scheme+"://"+h.addr(tc.c.listener)+"/"+cl, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Header["X-Forwarded-Proto"] = tc.xfp
					want := "200 " + tc.scheme + " xfp=" + tc.upXFP
					if cl == "h1" {
						want = "200 HTTP/1.1 /h1 xfp=" + tc.upXFP
					}
					checkAnswer(t, answers, key, roundTripAnswer(t, rt.RoundTrip, req, key), want)
				}
				if ci, ok := rt.(interface{ CloseIdleConnections() }); ok {
					ci.CloseIdleConnections()
				}
			}
			results[p.name] = pathResult{answers: answers}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// absForm is an HTTP/1.1 client that writes its request in absolute
// form, the target's scheme the URL's, on a connection of its own made
// by dialing the URL's host.
type absForm func(addr string) (net.Conn, error)

func (d absForm) RoundTrip(req *http.Request) (*http.Response, error) {
	c, err := d(req.URL.Host)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := req.WriteProxy(c); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
