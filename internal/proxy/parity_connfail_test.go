package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// The local reply to a request whose upstream connection failed before it
// was up, as Envoy 1.34 words it (route.ConnectFailure): a refused
// connect, and a handshake that failed the cluster's certificate checks.
const (
	resetPrefix      = "upstream connect error or disconnect/reset before headers. reset reason: "
	refusedBody      = resetPrefix + "remote connection failure, transport failure reason: delayed connect error: Connection refused"
	verifyFailed     = "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
	verifyFailedBody = resetPrefix + "remote connection failure, transport failure reason: " + verifyFailed
	// verifyFailedDetails is its %RESPONSE_CODE_DETAILS%, whitespace
	// made underscores.
	verifyFailedDetails = "upstream_reset_before_response_started{remote_connection_failure|" +
		"TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end}"
)

// TestConnectFailureReasonSamePaths: a connection that fails before it
// is up, to an HTTP/1.1 cluster and to an HTTP/2 one, is answered and
// logged on every path, for an HTTP/1.1 client and an h2c one, as Envoy
// 1.34 answers and logs it (UpstreamRequest::onPoolFailure,
// Filter::onUpstreamReset): 503 UF, the reset reason "remote connection
// failure" followed by the transport failure reason, the details
// upstream_reset_before_response_started{remote_connection_failure|
// reason} with whitespace made underscores, and the reason (spaces made
// underscores) in %UPSTREAM_TRANSPORT_FAILURE_REASON%. The reasons are
// Envoy's words: a refused connect's "delayed connect error: Connection
// refused" (ClientConnectionImpl, strerror of the socket's SO_ERROR);
// BoringSSL's CERTIFICATE_VERIFY_FAILED for a server certificate of a CA
// the cluster does not trust and for one without the SAN it asks for
// (SslSocket::drainErrorQueue); WRONG_VERSION_NUMBER for a server that
// answers the ClientHello in plaintext; none for a server that closes
// the connection mid-handshake (BoringSSL queues no error for an EOF),
// so the body ends at the reset reason and the log says "-". Until round
// 31 weft proxy said "connection failure", {connection_failure} and "-"
// for every one of them, Envoy's words before 1.27.
func TestConnectFailureReasonSamePaths(t *testing.T) {
	ca, other := tlstest.NewCA(t, "mesh"), tlstest.NewCA(t, "other")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	tlsUp := tlsServer(t, ca.Issue(t, []string{"app.local"}, app).TLS(t))
	midshake := closesMidHandshake(t)
	plaintext := newBackend(t, "plain").addr() // answers the ClientHello 400, in plaintext
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	untrusting := client
	untrusting.ca = tlstest.Write(t, t.TempDir(), "ca.pem", other.PEM)
	const (
		wrongVersion = "TLS_error:|268435703:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"
		refused      = "delayed connect error: Connection refused"
	)
	cases := []struct {
		name      string
		addr      string
		tls       func(*clusterv3.Cluster) // nil: plaintext
		transport string                   // Envoy's transport failure reason; "" none
	}{
		{"refused", deadAddr(t), nil, refused},
		{"untrusted", tlsUp, upstreamTLS(untrusting, "app.local", app), verifyFailed},
		{"wrong-san", tlsUp, upstreamTLS(client, "app.local", "spiffe://weft.local/mesh/m/virtualNode/elsewhere"), verifyFailed},
		{"plaintext", plaintext, upstreamTLS(client, "app.local", app), wrongVersion},
		{"midshake", midshake, upstreamTLS(client, "app.local", app), ""},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			var routes []*routev3.Route
			var res []types.Resource
			for _, c := range cases {
				for _, proto := range []string{"h1", "h2"} {
					var mods []func(*clusterv3.Cluster)
					if proto == "h2" {
						mods = append(mods, h2Upstream)
					}
					if c.tls != nil {
						mods = append(mods, c.tls)
					}
					name := proto + "-" + c.name
					routes = append(routes, routeTo("/"+name, name))
					res = append(res, edsCluster(name, mods...), cla(name, c.addr))
				}
			}
			h, logFile := loggedEgress(t, p, format, append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)))...)
			answers := map[string]string{}
			var wantLog []string
			eachClient(t, func(client string, cl *http.Client) {
				for _, c := range cases {
					body, details, logged := resetPrefix+"remote connection failure", "upstream_reset_before_response_started{remote_connection_failure}", "-"
					if c.transport != "" {
						body += ", transport failure reason: " + c.transport
						details = "upstream_reset_before_response_started{remote_connection_failure|" + strings.ReplaceAll(c.transport, " ", "_") + "}"
						logged = strings.ReplaceAll(c.transport, " ", "_")
					}
					for _, proto := range []string{"h1", "h2"} {
						path := "/" + proto + "-" + c.name
						key := client + " " + path
						checkAnswer(t, answers, key, getAnswer(t, cl, "http://"+h.addr("egress")+path), "503 "+body)
						wantLog = append(wantLog, fmt.Sprintf("%s 503 UF %s %s", key, details, logged))
					}
				}
			})
			results[p.name] = pathResult{answers: answers, log: awaitWantLog(t, logFile, wantLog)}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// tlsServer accepts TLS connections with cert (ALPN h2 or http/1.1, no
// client certificate asked) until the test ends, and closes each once
// its handshake is done: the tests that use it fail the handshake on the
// proxy's side. It returns its address.
func tlsServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // accepts until the listener is closed by Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // one connection; ends when its handshake does
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// closesMidHandshake accepts TCP connections until the test ends, reads
// each one's first TLS record (the ClientHello) whole and closes it,
// sending a FIN before any ServerHello. It returns its address.
func closesMidHandshake(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // accepts until the listener is closed by Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // one connection; ends when its first record is read, or the proxy closes it
				defer c.Close()
				hdr := make([]byte, 5)
				if _, err := io.ReadFull(c, hdr); err != nil {
					return
				}
				_, _ = io.CopyN(io.Discard, c, int64(hdr[3])<<8|int64(hdr[4]))
			}()
		}
	}()
	return ln.Addr().String()
}

// TestTCPProxyConnectFailureReason: tcp_proxy logs the transport failure
// reason of a connection that failed before it was up in
// %UPSTREAM_TRANSPORT_FAILURE_REASON%, as Envoy's
// Filter::onGenericPoolFailure stores the pool's reason (spaces made
// underscores by the formatter), flagged UF: a refused connect, and a
// cluster whose TLS handshake fails its certificate check. Until round 31
// it logged "-".
func TestTCPProxyConnectFailureReason(t *testing.T) {
	ca, other := tlstest.NewCA(t, "mesh"), tlstest.NewCA(t, "other")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	untrusting := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	untrusting.ca = tlstest.Write(t, t.TempDir(), "ca.pem", other.PEM)
	h := newHarness(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%UPSTREAM_CLUSTER% %RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}
	logPath := filepath.Join(t.TempDir(), "tcp.log")
	proxy := func(cluster string) *tcpv3.TcpProxy {
		return &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster},
			AccessLog: []*accesslogv3.AccessLog{fileLog(logPath, format)}}
	}
	h.push(tcpListener("refused", proxy("refused")), edsCluster("refused"), cla("refused", deadAddr(t)),
		tcpListener("untrusted", proxy("untrusted")), edsCluster("untrusted", upstreamTLS(untrusting, "app.local", app)),
		cla("untrusted", tlsServer(t, ca.Issue(t, []string{"app.local"}, app).TLS(t))))
	for _, l := range []string{"refused", "untrusted"} {
		c, err := net.Dial("tcp", h.addr(l))
		if err != nil {
			t.Fatal(err)
		}
		// The proxy closes the connection once its connect failed.
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: read a byte, want the connection closed", l)
		}
		_ = c.Close()
	}
	want := "refused UF delayed_connect_error:_Connection_refused\n" +
		"untrusted UF TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end\n"
	if log := awaitLog(t, logPath, 2); log != sortLines(want) {
		t.Errorf("access log\n%s\nwant\n%s", log, want)
	}
}
