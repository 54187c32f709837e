package proxy

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

func fileDS(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func inlineDS(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func tlsSocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(m)}}
}

func exactSANs(names ...string) []*tlsv3.SubjectAltNameMatcher {
	var out []*tlsv3.SubjectAltNameMatcher
	for _, n := range names {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if strings.Contains(n, "://") {
			typ = tlsv3.SubjectAltNameMatcher_URI
		}
		out = append(out, &tlsv3.SubjectAltNameMatcher{SanType: typ, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}}})
	}
	return out
}

// tlsFiles writes a leaf and the CA to dir and returns a common context
// using them as files.
type tlsFiles struct{ chain, key, ca string }

func writeLeaf(t testing.TB, dir string, ca *tlstest.CA, leaf tlstest.Leaf) tlsFiles {
	return tlsFiles{chain: tlstest.Write(t, dir, "chain.pem", leaf.CertPEM), key: tlstest.Write(t, dir, "key.pem", leaf.KeyPEM),
		ca: tlstest.Write(t, dir, "ca.pem", ca.PEM)}
}

func (f tlsFiles) common(withTrust bool, sans ...string) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: fileDS(f.chain), PrivateKey: fileDS(f.key)}}}
	if withTrust {
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: fileDS(f.ca), MatchTypedSubjectAltNames: exactSANs(sans...)}}
	}
	return c
}

// strictListener is httpListener whose one chain serves TLS only.
func strictListener(name string, d *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
	l := httpListener(name, httpManager(name, "rds"))
	l.FilterChains[0].TransportSocket = tlsSocket(d)
	return l
}

// permissiveListener serves plaintext and TLS on one port, told apart by
// the TLS inspector, as weft's translator emits PERMISSIVE.
func permissiveListener(name string, d *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
	l := httpListener(name, httpManager(name, "rds"))
	tc := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
	tc.Name = "tls"
	tc.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	tc.TransportSocket = tlsSocket(d)
	l.FilterChains = append(l.FilterChains, tc)
	l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}
	return l
}

// tlsGet sends GET / over TLS on a new connection.
func tlsGet(addr string, cfg *tls.Config) (int, *tls.ConnectionState, error) {
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.TLS, nil
}

func plainGet(addr string) (int, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func clientTLS(ca *tlstest.CA, serverName string, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: serverName, Certificates: certs}
}

// listenerStat reads a stat of a test listener: their configured address,
// 127.0.0.1:0, names their stats as in Envoy.
func (h *harness) listenerStat(_, name string) int64 {
	return h.stat("listener.127.0.0.1_0." + name)
}

func TestTLSStrictRefusesPlaintext(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	addr := h.addr("ingress")
	code, cs, err := tlsGet(addr, clientTLS(ca, "svc.local"))
	if err != nil || code != 200 {
		t.Fatalf("TLS request: %d %v", code, err)
	}
	if cs.PeerCertificates[0].DNSNames[0] != "svc.local" {
		t.Errorf("served certificate %v", cs.PeerCertificates[0].DNSNames)
	}

	if code, err := plainGet(addr); err == nil {
		t.Fatalf("plaintext request to a STRICT listener answered %d", code)
	}
	if a.count() != 1 {
		t.Errorf("backend saw %d requests, want 1 (the TLS one)", a.count())
	}
	if n := h.listenerStat("ingress", "ssl.handshake"); n != 1 {
		t.Errorf("ssl.handshake = %d, want 1", n)
	}
	waitUntil(t, 5*time.Second, "ssl.connection_error", func() bool { return h.listenerStat("ingress", "ssl.connection_error") == 1 })
	if n := h.listenerStat("ingress", "ssl.no_certificate"); n != 1 {
		t.Errorf("ssl.no_certificate = %d, want 1 (no client certificate)", n)
	}
	prom := h.admin("/stats/prometheus")
	if !strings.Contains(prom, `envoy_listener_ssl_handshake{envoy_listener_address="127.0.0.1_0"} 1`) {
		t.Errorf("/stats/prometheus has no envoy_listener_ssl_handshake")
	}
	// A client that kept its session resumes it: no new full handshake.
	resume := clientTLS(ca, "svc.local")
	resume.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := 0; i < 2; i++ {
		if _, cs, err := tlsGet(addr, resume); err != nil || cs.DidResume != (i == 1) {
			t.Fatalf("connection %d: resumed %v, err %v", i, cs != nil && cs.DidResume, err)
		}
	}
	if n := h.listenerStat("ingress", "ssl.session_reused"); n != 1 {
		t.Errorf("ssl.session_reused = %d, want 1", n)
	}
	// The upstream learns the request came over TLS.
	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local")}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e echo
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if got := e.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto upstream = %q, want https", got)
	}
}

func TestTLSPermissiveServesBoth(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	h.push(permissiveListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	addr := h.addr("ingress")
	if code, _, err := tlsGet(addr, clientTLS(ca, "svc.local")); err != nil || code != 200 {
		t.Fatalf("TLS request: %d %v", code, err)
	}
	if code, err := plainGet(addr); err != nil || code != 200 {
		t.Fatalf("plaintext request: %d %v", code, err)
	}
	if a.count() != 2 {
		t.Errorf("backend saw %d requests, want 2", a.count())
	}
	if n := h.listenerStat("ingress", "ssl.handshake"); n != 1 {
		t.Errorf("ssl.handshake = %d, want 1 (only the TLS connection)", n)
	}
}

func TestMutualTLS(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	allowed := "spiffe://weft.local/mesh/m/virtualNode/front"
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(true, allowed, "gw.local"),
		RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	addr := h.addr("ingress")

	if _, _, err := tlsGet(addr, clientTLS(ca, "svc.local")); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_no_cert", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_no_cert") == 1 })

	other := ca.Issue(t, []string{"other.local"}, "spiffe://weft.local/mesh/m/virtualNode/other")
	if _, _, err := tlsGet(addr, clientTLS(ca, "svc.local", other.TLS(t))); err == nil {
		t.Fatal("a client whose SAN is not listed was served")
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_san", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_san") == 1 })

	stranger := tlstest.NewCA(t, "elsewhere").Issue(t, []string{"gw.local"})
	if _, _, err := tlsGet(addr, clientTLS(ca, "svc.local", stranger.TLS(t))); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_error", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_error") == 1 })

	for _, leaf := range []tlstest.Leaf{ca.Issue(t, nil, allowed), ca.Issue(t, []string{"gw.local"})} {
		if code, _, err := tlsGet(addr, clientTLS(ca, "svc.local", leaf.TLS(t))); err != nil || code != 200 {
			t.Fatalf("allowed client %v%v: %d %v", leaf.Cert.DNSNames, leaf.Cert.URIs, code, err)
		}
	}
	if a.count() != 2 {
		t.Errorf("backend saw %d requests, want 2", a.count())
	}
	// Counted when the refused handshake returns on the proxy's side,
	// which may be after the client has seen the refusal.
	waitUntil(t, 5*time.Second, "ssl.connection_error = 3", func() bool { return h.listenerStat("ingress", "ssl.connection_error") >= 3 })
	if n := h.listenerStat("ingress", "ssl.connection_error"); n != 3 {
		t.Errorf("ssl.connection_error = %d, want 3", n)
	}
}

// tlsBackend is an HTTPS server (h1 and h2) that reports the protocol,
// SNI and client certificate it saw.
type tlsSeen struct {
	Proto, SNI, ClientURI string
}

func newTLSBackend(t *testing.T, ca *tlstest.CA, leaf tlstest.Leaf, requireClient bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := tlsSeen{Proto: r.Proto, SNI: r.TLS.ServerName}
		if len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			s.ClientURI = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		_ = json.NewEncoder(w).Encode(s)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS(t)}}
	if requireClient {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = ca.Pool()
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestUpstreamTLS(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	dir := t.TempDir()
	me := "spiffe://weft.local/mesh/m/virtualNode/front"
	f := writeLeaf(t, dir, ca, ca.Issue(t, nil, me))
	back := newTLSBackend(t, ca, ca.Issue(t, []string{"back.local"}), true)
	baddr := strings.TrimPrefix(back.URL, "https://")
	up := func(name string, sans []string, h2 bool) *clusterv3.Cluster {
		c := staticCluster(name, baddr)
		c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "back.local", CommonTlsContext: f.common(true, sans...)})
		if h2 {
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
		}
		return c
	}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1", "good"), routeTo("/h2", "good2"), routeTo("/bad", "bad"))),
		up("good", []string{"back.local"}, false), up("good2", []string{"back.local"}, true), up("bad", []string{"elsewhere.local"}, false))
	c := newClient(t)
	addr := h.addr("egress")
	for _, tc := range []struct{ path, proto string }{{"/h1", "HTTP/1.1"}, {"/h2", "HTTP/2.0"}} {
		for i := 0; i < 3; i++ { // pooled connections are reused
			resp, _, body := get(t, c, addr, "x", tc.path)
			var s tlsSeen
			_ = json.Unmarshal([]byte(body), &s)
			if resp.StatusCode != 200 || s.Proto != tc.proto || s.SNI != "back.local" || s.ClientURI != me {
				t.Fatalf("%s: %d %+v (%s)", tc.path, resp.StatusCode, s, body)
			}
		}
	}
	if n := h.stat("cluster.good.ssl.handshake"); n != 1 {
		t.Errorf("cluster.good.ssl.handshake = %d, want 1 (one pooled connection)", n)
	}
	resp, _, _ := get(t, c, addr, "x", "/bad")
	if resp.StatusCode != 503 {
		t.Fatalf("upstream with a SAN not listed: %d, want 503", resp.StatusCode)
	}
	if n := h.stat("cluster.bad.ssl.fail_verify_san"); n != 1 {
		t.Errorf("cluster.bad.ssl.fail_verify_san = %d, want 1", n)
	}
	if n := h.stat("cluster.bad.upstream_cx_connect_fail"); n != 1 {
		t.Errorf("cluster.bad.upstream_cx_connect_fail = %d, want 1", n)
	}
}

// TestUpstreamTLSWithoutValidation is how App Mesh negotiated TLS to a
// TLS listener when the caller had no client policy: an empty common
// context, TLS without verification.
func TestUpstreamTLSWithoutValidation(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "somebody")
	back := newTLSBackend(t, ca, ca.Issue(t, []string{"back.local"}), false)
	c := staticCluster("c", strings.TrimPrefix(back.URL, "https://"))
	c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "back.local", CommonTlsContext: &tlsv3.CommonTlsContext{}})
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), c)
	resp, _, body := get(t, newClient(t), h.addr("egress"), "x", "/")
	if resp.StatusCode != 200 || !strings.Contains(body, `"SNI":"back.local"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// TestTLSDownstreamH2: with alpn_protocols offering h2, clients speak
// HTTP/2 over TLS to the connection manager.
func TestTLSDownstreamH2(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	common := f.common(false)
	common.AlpnProtocols = []string{"h2", "http/1.1"}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local"), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + h.addr("ingress") + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.TLS.NegotiatedProtocol != "h2" {
			t.Fatalf("%d %s ALPN %q", resp.StatusCode, resp.Proto, resp.TLS.NegotiatedProtocol)
		}
	}
	if n := h.listenerStat("ingress", "ssl.handshake"); n != 1 {
		t.Errorf("ssl.handshake = %d, want 1 (one h2 connection)", n)
	}
}

// TestTLSTCPProxy: TLS on a tcp_proxy listener and its cluster, as App
// Mesh TCP listeners with TLS: bytes pass both ways, and a half-close
// (close_notify) travels through.
func TestTLSTCPProxy(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	echoLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"echo.local"}).TLS(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echoLn.Close() })
	go func() { // TLS echo server; ends when echoLn is closed
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() { // one echo connection; ends at the client's EOF
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	tp := &tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}}
	l := tcpListener("tcp", tp)
	l.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)})
	c := staticCluster("echo", echoLn.Addr().String())
	c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "echo.local", CommonTlsContext: f.common(true, "echo.local")})
	h.push(l, c)
	conn, err := tls.Dial("tcp", h.addr("tcp"), clientTLS(ca, "svc.local"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "ping\n")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo over TLS: %q %v", buf, err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after close_notify: %v, want EOF", err)
	}
	if n := h.stat("cluster.echo.ssl.handshake"); n != 1 {
		t.Errorf("cluster.echo.ssl.handshake = %d, want 1", n)
	}
}
