package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// tlsPeerService is streamService that tells, in a unary call's
// trailers, the X-Forwarded-Proto it got and the URI SAN of the client
// certificate its connection presented.
type tlsPeerService struct{ streamService }

func (s *tlsPeerService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	san := ""
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			if u := ti.State.PeerCertificates[0].URIs; len(u) > 0 {
				san = u[0].String()
			}
		}
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-xfp", strings.Join(md["x-forwarded-proto"], ","), "x-peer-san", san))
	return s.testService.UnaryCall(ctx, in)
}

// mtlsGRPCServer serves tlsPeerService over TLS with a certificate for
// dns and uri, requiring a client certificate of ca's, until the test
// ends; it returns its address.
func mtlsGRPCServer(t *testing.T, ca *tlstest.CA, dns, uri string) string {
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{dns}, uri).TLS(t)}, ClientCAs: ca.Pool(),
		ClientAuth: tls.RequireAndVerifyClientCert}
	return grpcUpstream(t, &tlsPeerService{}, grpc.Creds(credentials.NewTLS(cfg)))
}

// grpcRoute is a route to cluster matching gRPC requests.
func grpcRoute(cluster string) *routev3.Route {
	rt := routeTo("/", cluster)
	rt.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}}
	return rt
}

// upstreamTLS makes a cluster originate TLS with client's certificate to
// a server named sni whose certificate carries san.
func upstreamTLS(client tlsFiles, sni, san string) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: client.common(true, san)})
	}
}

// grpcCalls makes, on conn, the calls the mutual-TLS tests check: unary
// (its trailers returned), server streaming past the windows ending in a
// non-OK status, a unary call with a non-OK status. It returns the
// number of streams they opened.
func grpcCalls(t *testing.T, conn *grpc.ClientConn) (metadata.MD, int64) {
	t.Helper()
	client := testpb.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var trailer metadata.MD
	resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetPayload().GetBody()) != "hello" || strings.Join(trailer.Get("x-trailer"), ",") != "t-value" {
		t.Fatalf("unary: payload %q trailer %v", resp.GetPayload().GetBody(), trailer)
	}
	serverStreaming(ctx, t, client, []*testpb.ResponseParameters{{Size: 10}, {Size: 100 << 10}, {Size: 1}})
	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
		t.Fatalf("unary status: got %v", err)
	}
	return trailer, 3
}

// TestGRPCLoopsMutualTLS: with --h2loops, a real grpc-go client and
// server with mutual TLS on both sides of one proxy: the listener
// requires a client certificate (SPIFFE SAN matched) and offers ALPN h2,
// the cluster speaks HTTP/2 over TLS with its own client certificate and
// checks the server's SAN. Unary, server streaming and non-OK statuses
// go through, every stream on the loops (the downstream connection and
// the upstream streams counted by them, nothing handed off); the
// upstream sees X-Forwarded-Proto https and the proxy's certificate. A
// client whose SAN is not listed is refused as on the goroutine path, and
// a client that offers only http/1.1 is served HTTP/1.1 on the loops.
func TestGRPCLoopsMutualTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	ca := tlstest.NewCA(t, "mesh")
	front, proxySAN, app := "spiffe://weft.local/mesh/m/virtualNode/front", "spiffe://weft.local/mesh/m/virtualNode/proxy",
		"spiffe://weft.local/mesh/m/virtualNode/app"
	up := mtlsGRPCServer(t, ca, "app.local", app)
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, proxySAN))
	common := server.common(true, front)
	common.AlpnProtocols = []string{"h2", "http/1.1"}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common, RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, grpcRoute("grpc"))),
		edsCluster("grpc", h2Upstream, upstreamTLS(client, "app.local", app)), cla("grpc", up))
	l := h.listener("ingress")
	if !l.OnLoops() {
		t.Fatal("the mutual-TLS listener is not on the loops")
	}
	creds := func(cert tls.Certificate) grpc.DialOption {
		return grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(ca, "svc.local", cert)))
	}
	conn, err := grpc.NewClient("passthrough:///"+h.addr("ingress"), creds(ca.Issue(t, nil, front).TLS(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	trailer, streams := grpcCalls(t, conn)
	if got := strings.Join(trailer.Get("x-xfp"), ","); got != "https" {
		t.Errorf("upstream X-Forwarded-Proto %q, want https", got)
	}
	if got := strings.Join(trailer.Get("x-peer-san"), ","); got != proxySAN {
		t.Errorf("upstream saw a client certificate for %q, want the cluster's, %q", got, proxySAN)
	}
	if n, tc, handed, ups := l.LoopH2Conns(), l.LoopTLSConns(), l.HandedOff(), l.LoopH2UpstreamStreams(); n != 1 || tc != 1 || handed != 0 || ups != streams {
		t.Errorf("loops served %d HTTP/2 connections (%d over TLS), handed off %d, sent %d streams upstream; want 1 (1), 0, %d",
			n, tc, handed, ups, streams)
	}
	if n := h.stat("cluster.grpc.ssl.handshake"); n < 1 {
		t.Errorf("cluster.grpc.ssl.handshake = %d, want the loops' TLS to the upstream counted", n)
	}

	// A client certificate whose SAN is not listed: refused at the
	// handshake, counted, never an HTTP/2 connection.
	bad, err := grpc.NewClient("passthrough:///"+h.addr("ingress"), creds(ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/other").TLS(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := testpb.NewTestServiceClient(bad).UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("a client whose SAN is not listed: %v, want it refused (UNAVAILABLE)", err)
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_san", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_san") >= 1 })
	if n := l.LoopH2Conns(); n != 1 {
		t.Errorf("after a refused handshake the loops served %d HTTP/2 connections, want 1", n)
	}

	// A client that offers only http/1.1: its handshake on the loops, its
	// request HTTP/1.1's (not gRPC: no route, 404 as on the goroutine
	// path), not an HTTP/2 connection.
	h1 := clientTLS(ca, "svc.local", ca.Issue(t, nil, front).TLS(t))
	h1.NextProtos = []string{"http/1.1"}
	code, st, err := tlsGet(h.addr("ingress"), h1)
	if err != nil || code != 404 || st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("an http/1.1 client: %d %v", code, err)
	}
	if n, tc := l.LoopH2Conns(), l.LoopTLSConns(); n != 1 || tc != 2 {
		t.Errorf("after an http/1.1 client: %d HTTP/2 connections, %d over TLS; want 1, 2", n, tc)
	}
}

// TestGRPCLoopsSidecarToSidecarMutualTLS: App Mesh's shape for a grpc
// virtual node with mutual TLS, both sidecars on the loops (--h2loops):
// the application's plaintext h2c to the egress, whose cluster speaks
// HTTP/2 over TLS (client certificate, the server's SPIFFE SAN checked)
// to a STRICT ingress (client certificate required, no ALPN, as the
// translator emits it), whose cluster is the application's plaintext
// gRPC server. Every call is served by the loops on both sidecars over
// a pooled TLS connection; an upstream whose certificate lacks the SAN
// asked for fails the call as the goroutine path does (UNAVAILABLE,
// connection failure, ssl.fail_verify_san).
func TestGRPCLoopsSidecarToSidecarMutualTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	ca := tlstest.NewCA(t, "mesh")
	front, back := "spiffe://weft.local/mesh/m/virtualNode/front", "spiffe://weft.local/mesh/m/virtualNode/back"
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"back.local"}, back))
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, front))
	up := grpcUpstream(t, &tlsPeerService{})

	in := httpListener("ingress", httpManager("ingress", "rds-in"))
	in.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: server.common(true, front),
		RequireClientCertificate: wrapperspb.Bool(true)})
	inRoutes := routeConfig("rds-in", vhost("in", []string{"*"}, grpcRoute("app")))
	app, appEP := edsCluster("app", h2Upstream), cla("app", up)
	out, outRoutes := httpListener("egress", httpManager("egress", "rds")), routeConfig("rds", vhost("v", []string{"*"}, grpcRoute("mesh")))
	h.push(in, inRoutes, app, appEP) // in force (its routes too) before the egress sends to it
	push := func(san string) {
		h.push(in, inRoutes, app, appEP, out, outRoutes, edsCluster("mesh", h2Upstream, upstreamTLS(client, "back.local", san)),
			cla("mesh", h.addr("ingress")))
	}
	push(back)
	egress, ingress := h.listener("egress"), h.listener("ingress")
	if !egress.OnLoops() || !ingress.OnLoops() {
		t.Fatalf("on the loops: egress %v, ingress %v", egress.OnLoops(), ingress.OnLoops())
	}
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+h.addr("egress"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// The egress's routes come after its listener: until then the
	// goroutine path answers (its connection handed off). Warmed up on a
	// connection of its own, then counted from there.
	waitUntil(t, 10*time.Second, "the egress's routes", func() bool {
		warm := dial()
		defer warm.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := testpb.NewTestServiceClient(warm).UnaryCall(ctx, &testpb.SimpleRequest{})
		return err == nil
	})
	handed := egress.HandedOff() + ingress.HandedOff()
	h2Conns, tlsConns := egress.LoopH2Conns()+ingress.LoopH2Conns(), ingress.LoopTLSConns()
	egressUps, ingressUps, shakes := egress.LoopH2UpstreamStreams(), ingress.LoopH2UpstreamStreams(), h.stat("cluster.mesh.ssl.handshake")
	conn := dial()
	defer conn.Close()
	trailer, streams := grpcCalls(t, conn)
	if got := strings.Join(trailer.Get("x-xfp"), ","); got != "http" {
		// The application's own X-Forwarded-Proto: the egress adds it
		// (http: the application's leg), the ingress keeps it.
		t.Errorf("application saw X-Forwarded-Proto %q, want the egress's http", got)
	}
	// One new HTTP/2 connection (the client's to the egress); the
	// egress's to the ingress is the warm-up's, pooled, or a new one if
	// the warm-up reached another loop.
	newShakes := h.stat("cluster.mesh.ssl.handshake") - shakes
	if n := egress.LoopH2Conns() + ingress.LoopH2Conns() - h2Conns; n != 1+newShakes {
		t.Errorf("the loops served %d new HTTP/2 connections, want %d", n, 1+newShakes)
	}
	if n := ingress.LoopTLSConns() - tlsConns; n != newShakes || newShakes > 1 {
		t.Errorf("the ingress served %d new TLS connections, the egress made %d; want the same, one at most", n, newShakes)
	}
	if e, i := egress.LoopH2UpstreamStreams()-egressUps, ingress.LoopH2UpstreamStreams()-ingressUps; e != streams || i != streams {
		t.Errorf("streams to HTTP/2 upstreams: egress %d, ingress %d; want %d each", e, i, streams)
	}
	if n := egress.HandedOff() + ingress.HandedOff() - handed; n != 0 {
		t.Errorf("%d connections handed off, want none", n)
	}

	push("spiffe://weft.local/mesh/m/virtualNode/elsewhere")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{})
	if s := status.Convert(err); s.Code() != codes.Unavailable || s.Message() != verifyFailedBody {
		t.Fatalf("upstream without the SAN asked for: %v, want UNAVAILABLE and the goroutine path's connection failure", err)
	}
	if n := h.stat("cluster.mesh.ssl.fail_verify_san"); n != 1 {
		t.Errorf("cluster.mesh.ssl.fail_verify_san = %d, want 1", n)
	}
	if n := h.stat("cluster.mesh.upstream_cx_connect_fail"); n != 1 {
		t.Errorf("cluster.mesh.upstream_cx_connect_fail = %d, want 1", n)
	}
	if n := egress.HandedOff() + ingress.HandedOff() - handed; n != 0 {
		t.Errorf("%d connections handed off, want none", n)
	}
}

// TestUpstreamWithoutH2ALPN: an HTTP/2 cluster with TLS offers ALPN h2
// alone, as the goroutine path's HTTP/2 pool and Envoy's do. A server that
// offers only http/1.1 fails the handshake: 503, remote connection
// failure for the server's no_application_protocol alert (BoringSSL's
// TLSV1_ALERT_NO_APPLICATION_PROTOCOL), counted as a connect failure. A server that selects no protocol is
// spoken HTTP/2 all the same, as Envoy's codec is the cluster's, not the
// handshake's: answered 200 over HTTP/2. The same on the loops (nothing
// handed off) and on the goroutine path, for an h2c client's stream and
// an HTTP/1.1 client's request, which the loops handed to the goroutine
// path when the cluster had TLS.
func TestUpstreamWithoutH2ALPN(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	ca := tlstest.NewCA(t, "mesh")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})
	s := httptest.NewUnstartedServer(handler)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"app.local"}, app).TLS(t)}, NextProtos: []string{"http/1.1"}}
	s.StartTLS()
	t.Cleanup(s.Close)
	noALPN := h2NoALPNUpstream(t, ca, app, handler)
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	for _, loops := range []bool{true, false} {
		for _, h2Client := range []bool{true, false} {
			t.Run(fmt.Sprintf("loops=%v/%s", loops, clientProto(h2Client)), func(t *testing.T) {
				h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = !loops, !loops })
				h.push(httpListener("egress", httpManager("egress", "rds")),
					routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1only", "h1only"), routeTo("/", "none"))),
					edsCluster("h1only", h2Upstream, upstreamTLS(client, "app.local", app)), cla("h1only", s.Listener.Addr().String()),
					edsCluster("none", h2Upstream, upstreamTLS(client, "app.local", app)), cla("none", noALPN))
				c := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
				if h2Client {
					c = h2cClient(t)
				}
				defer c.CloseIdleConnections()
				get := func(path string) (*http.Response, string) {
					resp, err := c.Get("http://" + h.addr("egress") + path)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					return resp, string(b)
				}
				wantMajor := map[bool]int{false: 1, true: 2}[h2Client]
				resp, b := get("/h1only")
				const noALPN = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, " +
					"transport failure reason: TLS_error:|268436576:SSL routines:OPENSSL_internal:TLSV1_ALERT_NO_APPLICATION_PROTOCOL:TLS_error_end"
				if resp.ProtoMajor != wantMajor || resp.StatusCode != 503 || b != noALPN {
					t.Errorf("only http/1.1 offered: HTTP/%d %d %q, want 503 and a connection failure", resp.ProtoMajor, resp.StatusCode, b)
				}
				if n := h.stat("cluster.h1only.upstream_cx_connect_fail"); n < 1 {
					t.Errorf("cluster.h1only.upstream_cx_connect_fail = %d, want the failed handshake counted", n)
				}
				resp, b = get("/")
				if resp.ProtoMajor != wantMajor || resp.StatusCode != 200 || b != "HTTP/2.0" {
					t.Errorf("no protocol selected: HTTP/%d %d %q, want 200 from the upstream over HTTP/2", resp.ProtoMajor, resp.StatusCode, b)
				}
				if l := h.listener("egress"); loops && (l.LoopH2UpstreamStreams() != 2 || l.HandedOff() != 0) {
					t.Errorf("loops sent %d streams to HTTP/2 upstreams and handed off %d connections, want 2 and 0",
						l.LoopH2UpstreamStreams(), l.HandedOff())
				}
			})
		}
	}
}

// h2NoALPNUpstream serves h over HTTP/2 over TLS with a certificate of
// ca's for app.local and san, selecting no protocol in ALPN whatever the
// client offers, until the test ends; it returns its address.
func h2NoALPNUpstream(t *testing.T, ca *tlstest.CA, san string, h http.Handler) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"app.local"}, san).TLS(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	h2s := &http2.Server{}
	go func() { // accepts until the listener closes in Cleanup
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // one connection; ends when the proxy closes it
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				h2s.ServeConn(c, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	return ln.Addr().String()
}

// TestGRPCLoopsMutualTLSHandsOff: with --h2loops, an HTTP/2 connection
// over TLS to a listener with a route the loops do not forward (one that
// adds a response header) is handed to the goroutine path at its preface, TLS carried on:
// the calls go through there, none on the loops.
func TestGRPCLoopsMutualTLSHandsOff(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	ca := tlstest.NewCA(t, "mesh")
	front, app := "spiffe://weft.local/mesh/m/virtualNode/front", "spiffe://weft.local/mesh/m/virtualNode/app"
	up := mtlsGRPCServer(t, ca, "app.local", app)
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	common := server.common(true, front)
	common.AlpnProtocols = []string{"h2"}
	rw := grpcRoute("grpc")
	rw.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "1"}}}
	rw.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added-response", Value: "1"}}}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: common, RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, rw)),
		edsCluster("grpc", h2Upstream, upstreamTLS(client, "app.local", app)), cla("grpc", up))
	l := h.listener("ingress")
	if !l.OnLoops() {
		t.Fatal("the mutual-TLS listener is not on the loops")
	}
	conn, err := grpc.NewClient("passthrough:///"+h.addr("ingress"),
		grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(ca, "svc.local", ca.Issue(t, nil, front).TLS(t)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	grpcCalls(t, conn)
	if n, tc, handed, ups := l.LoopH2Conns(), l.LoopTLSConns(), l.HandedOff(), l.LoopH2UpstreamStreams(); n != 0 || tc != 1 || handed != 1 || ups != 0 {
		t.Errorf("loops served %d HTTP/2 connections (%d TLS handshakes), handed off %d, sent %d streams upstream; want 0 (1), 1, 0",
			n, tc, handed, ups)
	}
}
