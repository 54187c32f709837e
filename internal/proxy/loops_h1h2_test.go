package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// xnetH2TLSUpstream serves h over HTTP/2 over TLS (ALPN h2) with
// golang.org/x/net/http2's server until the test ends, as the sidecar's
// ingress of an http2 virtual node with mutual TLS: a certificate of
// ca's for app.local and san, a client certificate of ca's required. It
// returns its address and how many of the connections it accepted are
// still open.
func xnetH2TLSUpstream(tb testing.TB, ca *tlstest.CA, san string, h http.Handler) (string, *atomic.Int64) {
	open := new(atomic.Int64)
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)} // the handshakes a test refuses
	if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
		tb.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(tb, []string{"app.local"}, san).TLS(tb)}, NextProtos: []string{"h2"},
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(tls.NewListener(countingListener{ln, open}, cfg)) }() // ends with srv.Close in Cleanup
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), open
}

// TestEvloopHTTP1ToH2Upstream: an HTTP/1.1 client's requests to a
// cluster that speaks HTTP/2 (x/net's server), h2c or over mutual TLS
// (App Mesh's http2 or grpc backend with a client policy: SNI, the
// server's SAN checked, the proxy's certificate sent, ALPN h2), on the
// goroutine path and, with --h2loops, on the loops as streams of their
// own HTTP/2 connections (counted; nothing handed off), with the same
// answers: the request's fields as HTTP/2 (hop-by-hop lines dropped,
// :authority from Host, TE: trailers kept), bodies with a content-length
// and chunked beyond both windows, responses with and without a length,
// trailers as the last chunk's, an upstream reset before the head (503)
// and after it (the connection cut), an unreachable cluster (503), a
// retried 503, keep-alive over one client connection, whose requests
// share one upstream connection (over TLS, one handshake: the idle
// pooled connection is reused by the next request), and pipelined
// requests. The loops handed every HTTP/1.1 request to an HTTP/2 cluster
// over TLS to the goroutine path.
func TestEvloopHTTP1ToH2Upstream(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	var flaky atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/reset":
			panic(http.ErrAbortHandler) // RST_STREAM before the head
		case "/cut":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(strings.Repeat("c", 1000)))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // after the head
		case "/flaky":
			if flaky.Add(1) == 1 {
				w.WriteHeader(503)
				return
			}
		case "/big":
			_, _ = w.Write(body) // no length: chunked to the HTTP/1.1 client
			return
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = w.Write([]byte("with trailer"))
			w.Header().Set("X-Sum", fmt.Sprint(len(body)))
			return
		case "/empty":
			w.WriteHeader(204)
			return
		}
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("Server", "app")
		fmt.Fprintf(w, "%s %s tls=%v host=%s xfp=%s rid=%d te=%q conn=%q ka=%q custom=%q cl=%d len=%d", r.Method, r.URL.RequestURI(),
			r.TLS != nil, r.Host, r.Header.Get("X-Forwarded-Proto"), len(r.Header.Get("X-Request-Id")), r.Header.Get("Te"),
			r.Header.Get("Connection"), r.Header.Get("Keep-Alive"), r.Header.Get("X-Custom"), r.ContentLength, len(body))
	})
	ca := tlstest.NewCA(t, "mesh")
	app := "spiffe://weft.local/mesh/m/virtualNode/app"
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/proxy"))
	h2cUp, _ := xnetH2CUpstream(t, handler)
	tlsUp, _ := xnetH2TLSUpstream(t, ca, app, handler)
	run := func(t *testing.T, loops, overTLS bool) {
		h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = !loops, !loops })
		mods, up := []func(*clusterv3.Cluster){h2Upstream}, h2cUp
		if overTLS {
			mods, up = append(mods, upstreamTLS(client, "app.local", app)), tlsUp
		}
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("flaky", []string{"flaky.local"}, retryRoute("h2", "5xx", 1)),
				vhost("v", []string{"*"}, routeTo("/down", "dead"), routeTo("/", "h2"))),
			edsCluster("h2", mods...), cla("h2", up), edsCluster("dead", mods...), cla("dead", deadAddr(t)))
		addr := h.addr("egress")
		var dials atomic.Int64
		tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, a)
		}}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		do := func(req *http.Request, wantStatus int) (string, *http.Response) {
			t.Helper()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", req.Method, req.URL, err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("%s %s: %v", req.Method, req.URL, err)
			}
			if resp.ProtoMajor != 1 || resp.StatusCode != wantStatus || resp.Header.Get("Server") != "envoy" {
				t.Errorf("%s %s: HTTP/%d %d (want %d), headers %v", req.Method, req.URL, resp.ProtoMajor, resp.StatusCode,
					wantStatus, resp.Header)
			}
			return string(b), resp
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/get?q=1", nil)
		req.Host = "svc.local:8080"
		req.Header.Set("Connection", "keep-alive, X-Hop")
		req.Header.Set("X-Hop", "dropped")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Custom", "kept")
		b, resp := do(req, 200)
		want := fmt.Sprintf(`GET /get?q=1 tls=%v host=svc.local:8080 xfp=http rid=36 te="trailers" conn="" ka="" custom="kept" cl=0 len=0`, overTLS)
		if b != want || resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.ContentLength != int64(len(want)) ||
			resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("GET: %q (want %q), length %d, headers %v", b, want, resp.ContentLength, resp.Header)
		}
		// Beyond the upstream's and the proxy's windows both ways.
		big := strings.Repeat("0123456789", 30000)
		req, _ = http.NewRequest("POST", "http://"+addr+"/big", strings.NewReader(big))
		if b, resp = do(req, 200); b != big || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
			t.Errorf("POST /big: %d bytes back (want %d), length %d, %v", len(b), len(big), resp.ContentLength, resp.TransferEncoding)
		}
		// A chunked request body (no length known).
		req, _ = http.NewRequest("PUT", "http://"+addr+"/chunked", io.MultiReader(strings.NewReader(big), strings.NewReader("!")))
		if b, _ = do(req, 200); !strings.HasSuffix(b, fmt.Sprintf("cl=-1 len=%d", len(big)+1)) {
			t.Errorf("PUT chunked: %q", b)
		}
		req, _ = http.NewRequest("POST", "http://"+addr+"/trailer", strings.NewReader("abc"))
		if b, resp = do(req, 200); b != "with trailer" || resp.Trailer.Get("X-Sum") != "3" {
			t.Errorf("trailer: %q, trailers %v", b, resp.Trailer)
		}
		req, _ = http.NewRequest("GET", "http://"+addr+"/empty", nil)
		do(req, 204)
		req, _ = http.NewRequest("GET", "http://"+addr+"/reset", nil)
		// Envoy's remote reset, on every path (TestUpstreamBadResponseSamePaths).
		if b, _ = do(req, 503); b != "upstream connect error or disconnect/reset before headers. reset reason: remote reset" {
			t.Errorf("reset before the head: %q", b)
		}
		req, _ = http.NewRequest("GET", "http://"+addr+"/down", nil)
		if b, _ = do(req, 503); b != refusedBody {
			t.Errorf("unreachable: %q", b)
		}
		req, _ = http.NewRequest("GET", "http://"+addr+"/flaky", nil)
		req.Host = "flaky.local"
		do(req, 200)
		if n := dials.Load(); n != 1 {
			t.Errorf("%d client connections for the requests above, want 1 (keep-alive)", n)
		}
		// One client connection (so one loop): each request found the
		// upstream connection of the one before idle in the pool.
		wantShakes := map[bool]int64{false: 0, true: 1}[overTLS]
		if n, shakes := h.stat("cluster.h2.upstream_cx_total"), h.stat("cluster.h2.ssl.handshake"); n != 1 || shakes != wantShakes {
			t.Errorf("the requests above made %d upstream connections, %d TLS handshakes; want 1, %d", n, shakes, wantShakes)
		}
		// Pipelined: a POST with a body, then a GET, in one write; the
		// answers come in order on the one connection.
		pc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		_, _ = io.WriteString(pc, "POST /p1 HTTP/1.1\r\nHost: svc.local\r\nContent-Length: 4\r\n\r\nbodyGET /p2 HTTP/1.1\r\nHost: svc.local\r\n\r\n")
		_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(pc)
		for _, w := range []string{"POST /p1 ", "GET /p2 "} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("pipelined %s: %v", w, err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || !strings.HasPrefix(string(b), w) {
				t.Errorf("pipelined: %q (%v), want %s...", b, err, w)
			}
		}
		// An upstream reset after the head: the response is cut.
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_, _ = io.WriteString(raw, "GET /cut HTTP/1.1\r\nHost: svc.local\r\n\r\n")
		_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err = http.ReadResponse(bufio.NewReader(raw), nil)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, resp.Body); resp.StatusCode != 200 || err == nil || n != 1000 {
			t.Errorf("cut after the head: %d, %d bytes, %v (want 200, 1000 bytes then an error)", resp.StatusCode, n, err)
		}
		l := h.listener("egress")
		if l.OnLoops() != loops || l.HandedOff() != 0 {
			t.Fatalf("on the loops %v (want %v), %d connections handed off", l.OnLoops(), loops, l.HandedOff())
		}
		if streams := l.LoopH2UpstreamStreams(); loops && streams != 12 {
			t.Errorf("%d requests on the loops' HTTP/2 upstreams, want 12", streams)
		}
		if n := h.stat("cluster.h2.upstream_rq_retry"); n != 1 {
			t.Errorf("upstream_rq_retry %d, want 1", n)
		}
	}
	for _, up := range []struct {
		name    string
		overTLS bool
	}{{"h2c", false}, {"tls", true}} {
		t.Run(up.name+"/goroutines", func(t *testing.T) { flaky.Store(0); run(t, false, up.overTLS) })
		t.Run(up.name+"/loops", func(t *testing.T) { flaky.Store(0); run(t, true, up.overTLS) })
	}
}

// TestEvloopTLSToH2Upstream: App Mesh's STRICT (mutual TLS) listener in
// front of an http2 application: with --h2loops the loops serve the TLS
// connection and send its HTTP/1.1 requests as streams of their HTTP/2
// connections to the application (x-forwarded-proto https), a body beyond
// the windows both ways included.
func TestEvloopTLSToH2Upstream(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	up, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Proto+" "+r.Header.Get("X-Forwarded-Proto"))
		_, _ = w.Write(body)
	}))
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	allowed := "spiffe://weft.local/mesh/m/virtualNode/front"
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(true, allowed),
		RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))), edsCluster("h2", h2Upstream), cla("h2", up))
	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local", ca.Issue(t, nil, allowed).TLS(t))}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	big := strings.Repeat("x", 200000)
	for _, body := range []string{"", "small", big} {
		resp, err := c.Post("https://"+h.addr("ingress")+"/echo", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(b) != body || resp.Header.Get("X-Seen") != "HTTP/2.0 https" {
			t.Fatalf("POST %d bytes: %d, %d bytes back (%v), headers %v", len(body), resp.StatusCode, len(b), err, resp.Header)
		}
	}
	l := h.listener("ingress")
	if !l.OnLoops() || l.HandedOff() != 0 || l.LoopTLSConns() == 0 || l.LoopH2UpstreamStreams() != 3 {
		t.Fatalf("on the loops %v, %d handed off, %d TLS connections on the loops, %d streams to HTTP/2 upstreams (want 3)",
			l.OnLoops(), l.HandedOff(), l.LoopTLSConns(), l.LoopH2UpstreamStreams())
	}
}
