package proxy

import (
	"io"
	"net/http"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// BenchmarkH2TLSOneHop is BenchmarkH2COneHop with HTTP/2 over mutual TLS
// into the proxy, as proxybench's "one weft proxy h2 mTLS": the server's
// sidecar of an http2 virtual node with TLS on, its listener requiring
// the client's certificate (SPIFFE SAN matched) and offering ALPN h2,
// its cluster h2c to the app. The client's streams share one TLS
// connection.
func BenchmarkH2TLSOneHop(b *testing.B) {
	h := newHarness(b)
	ca := tlstest.NewCA(b, "mesh")
	front := "spiffe://weft.local/mesh/m/virtualNode/front"
	leaf, dir := ca.Issue(b, []string{"svc.local"}), b.TempDir()
	server := tlsFiles{chain: tlstest.Write(b, dir, "chain.pem", leaf.CertPEM), key: tlstest.Write(b, dir, "key.pem", leaf.KeyPEM),
		ca: tlstest.Write(b, dir, "ca.pem", ca.PEM)}
	common := server.common(true, front)
	common.AlpnProtocols = []string{"h2", "http/1.1"}
	up := h2cUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "blue")
	}))
	h.push(
		strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common, RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("h2", "gateway-error,reset", 2))),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up))
	tc := clientTLS(ca, "svc.local", ca.Issue(b, nil, front).TLS(b))
	tc.NextProtos = []string{"h2"}
	getInParallel(b, &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, "https://"+h.addr("ingress")+"/", 2)
}

// BenchmarkHTTPOneHopH2TLS is BenchmarkHTTPOneHop to an HTTP/2 cluster
// over mutual TLS, as the client's sidecar of an App Mesh virtual node
// whose backend is http2 or grpc with a TLS client policy, its app
// speaking HTTP/1.1: plaintext HTTP/1.1 into the egress listener, HTTP/2
// over TLS (ALPN h2, SNI, the server's SPIFFE SAN checked, the proxy's
// certificate sent) to x/net's server. On the loops it fails unless they
// served every request (no connection handed off; run with
// WEFT_PROXY_TEST_EVLOOP=0 for the goroutine path).
func BenchmarkHTTPOneHopH2TLS(b *testing.B) {
	h := newHarness(b)
	ca := tlstest.NewCA(b, "mesh")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	leaf, dir := ca.Issue(b, nil, "spiffe://weft.local/mesh/m/virtualNode/front"), b.TempDir()
	client := tlsFiles{chain: tlstest.Write(b, dir, "chain.pem", leaf.CertPEM), key: tlstest.Write(b, dir, "key.pem", leaf.KeyPEM),
		ca: tlstest.Write(b, dir, "ca.pem", ca.PEM)}
	up, _ := xnetH2TLSUpstream(b, ca, app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "blue")
	}))
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, retryRoute("h2", "gateway-error,reset", 2))),
		edsCluster("h2", h2Upstream, upstreamTLS(client, "app.local", app)),
		cla("h2", up))
	if l := h.listener("egress"); l.OnLoops() {
		defer func() {
			if n, ups := l.HandedOff(), l.LoopH2UpstreamStreams(); n != 0 || ups == 0 {
				b.Errorf("%d connections handed off, %d streams to HTTP/2 upstreams on the loops: not the loops' benchmark", n, ups)
			}
		}()
	}
	getInParallel(b, &http.Transport{MaxIdleConnsPerHost: 64}, "http://"+h.addr("egress")+"/", 1)
}
