package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// getOn sends GET path on c (keep-alive) and decodes the backend's echo.
func getOn(t *testing.T, c *http.Client, url string) (int, echo) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var e echo
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, e
}

// TestEvloopServesMutualTLS: on the event loops, an App Mesh
// STRICT listener with mutual TLS (client certificate required, SPIFFE
// SAN matched) is served by the loops: the handshake is weft's (a client
// with another SAN is refused and counted in ssl.fail_verify_san, as on
// the goroutine path, and never reaches the loops' connection manager);
// an allowed client's keep-alive requests are forwarded by the loops over
// TLS (counted by the loops, none handed off, X-Forwarded-Proto https),
// and a request whose route the loops do not implement hands the TLS
// connection to the goroutine path, which serves it and the requests
// after it on the same connection.
func TestEvloopServesMutualTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	b := newBackend(t, "b")
	allowed := "spiffe://weft.local/mesh/m/virtualNode/front"
	rw := routeTo("/rw/", "c")
	rw.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "1"}}}
	rw.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added-response", Value: "1"}}}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(true, allowed),
		RequireClientCertificate: wrapperspb.Bool(true)}),
		routeConfig("rds", vhost("v", []string{"*"}, rw, routeTo("/", "c"))), staticCluster("c", b.addr()))
	l := h.listener("ingress")
	if !l.OnLoops() {
		t.Fatal("the mutual-TLS listener is not on the loops")
	}
	addr := h.addr("ingress")

	other := ca.Issue(t, nil, "spiffe://weft.local/mesh/m/virtualNode/other")
	if _, _, err := tlsGet(addr, clientTLS(ca, "svc.local", other.TLS(t))); err == nil {
		t.Fatal("a client whose SAN is not listed was served")
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_san = 1", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_san") == 1 })
	waitUntil(t, 5*time.Second, "the refused connection closed", func() bool {
		return h.listenerStat("ingress", "downstream_cx_destroy") == 1
	})
	if n := h.stat("http.ingress.downstream_cx_total"); n != 0 {
		t.Errorf("http.ingress.downstream_cx_total = %d after a refused handshake, want 0", n)
	}

	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local", ca.Issue(t, nil, allowed).TLS(t)), MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 3 {
		code, e := getOn(t, c, "https://"+addr+"/a")
		if code != 200 || e.Path != "/a" {
			t.Fatalf("request %d: %d %+v", i, code, e)
		}
		if p := e.Header.Get("X-Forwarded-Proto"); p != "https" {
			t.Errorf("request %d: upstream got X-Forwarded-Proto %q, want https", i, p)
		}
	}
	if n, handed := l.LoopTLSConns(), l.HandedOff(); n != 1 || handed != 0 {
		t.Fatalf("on the loops: %d connections over TLS, %d handed off; want 1 and 0", n, handed)
	}
	// The response header mutation is the goroutine path's: the connection goes there.
	if code, e := getOn(t, c, "https://"+addr+"/rw/y"); code != 200 || e.Path != "/rw/y" || e.Header.Get("X-Added") != "1" {
		t.Fatalf("request on the header-adding route: %d %+v", code, e)
	}
	if code, e := getOn(t, c, "https://"+addr+"/a"); code != 200 || e.Path != "/a" {
		t.Fatalf("after the hand-off: %d %+v", code, e)
	}
	if handed := l.HandedOff(); handed != 1 {
		t.Errorf("%d connections handed off, want 1", handed)
	}
	if n := h.listenerStat("ingress", "ssl.handshake"); n != 1 {
		t.Errorf("ssl.handshake = %d, want 1 (one connection for every allowed request)", n)
	}
	if b.count() != 5 {
		t.Errorf("backend saw %d requests, want 5", b.count())
	}
}

// TestEvloopTLSUpdate: an update that makes a plaintext listener on the
// loops TLS-only keeps it on the loops; the connections accepted after it
// are served over TLS there, plaintext ones are refused.
func TestEvloopTLSUpdate(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	a := newBackend(t, "a")
	rc, cl, ep := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), cla("c", a.addr())
	h.push(httpListener("ingress", httpManager("ingress", "rds")), rc, cl, ep)
	l := h.listener("ingress")
	if code, err := plainGet(h.addr("ingress")); err != nil || code != 200 {
		t.Fatalf("plaintext on the loops: %d %v", code, err)
	}
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}), rc, cl, ep)
	if h.listener("ingress") != l || !l.OnLoops() {
		t.Fatal("the update replaced the listener or took it off the loops")
	}
	code, st, err := tlsGet(h.addr("ingress"), clientTLS(ca, "svc.local"))
	if err != nil || code != 200 || st == nil {
		t.Fatalf("TLS after the update: %d %v", code, err)
	}
	if code, err := plainGet(h.addr("ingress")); err == nil && code == 200 {
		t.Error("plaintext still served after the listener became TLS-only")
	}
	if n, handed := l.LoopTLSConns(), l.HandedOff(); n != 1 || handed != 0 {
		t.Errorf("%d connections over TLS on the loops, %d handed off; want 1 and 0", n, handed)
	}
}

// TestEvloopSidecarToSidecarMutualTLS: App Mesh's mTLS path with both
// sidecar legs on the loops: an egress listener whose cluster originates
// TLS (client certificate, the server's SPIFFE SAN checked) to a STRICT
// ingress listener requiring the client's. The loops make a pooled TLS
// connection between them and reuse it (one handshake each side per
// loop's pool, no connection handed off); an upstream whose certificate does not carry
// the SAN the cluster asks for is refused as on the goroutine path (503,
// ssl.fail_verify_san, upstream_cx_connect_fail).
func TestEvloopSidecarToSidecarMutualTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	h := newHarness(t, func(c *Config) { c.Goroutines = false })
	ca := tlstest.NewCA(t, "mesh")
	front, back := "spiffe://weft.local/mesh/m/virtualNode/front", "spiffe://weft.local/mesh/m/virtualNode/back"
	server := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"back.local"}, back))
	client := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, nil, front))
	b := newBackend(t, "b")
	in := httpListener("ingress", httpManager("ingress", "rds-in"))
	in.FilterChains[0].TransportSocket = tlsSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: server.common(true, front),
		RequireClientCertificate: wrapperspb.Bool(true)})
	inRoutes, app := routeConfig("rds-in", vhost("in", []string{"*"}, routeTo("/", "app"))), staticCluster("app", b.addr())
	h.push(in, inRoutes, app)
	mesh := func(san string) *clusterv3.Cluster {
		c := staticCluster("mesh", h.addr("ingress"))
		c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "back.local", CommonTlsContext: client.common(true, san)})
		return c
	}
	out, outRoutes := httpListener("egress", httpManager("egress", "rds")), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "mesh")))
	h.push(in, inRoutes, app, out, outRoutes, mesh(back))
	for _, name := range []string{"ingress", "egress"} {
		if !h.listener(name).OnLoops() {
			t.Fatalf("%s is not on the loops", name)
		}
	}
	// The egress's routes come after its listener: until then the
	// goroutine path answers 404 (its connection handed off, on a
	// connection of its own).
	once := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	waitUntil(t, 10*time.Second, "the egress's routes", func() bool {
		resp, _, _ := get(t, once, h.addr("egress"), "svc.local", "/a")
		return resp.StatusCode == 200
	})
	handed := h.listener("egress").HandedOff() + h.listener("ingress").HandedOff()
	shakes := h.stat("cluster.mesh.ssl.handshake") // a pool per loop: one connection, or one per loop the warm-up reached
	c := newClient(t)
	for i := range 3 {
		resp, e, body := get(t, c, h.addr("egress"), "svc.local", "/a")
		if resp.StatusCode != 200 || e.Backend != "b" || e.Path != "/a" {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := h.listener("egress").HandedOff() + h.listener("ingress").HandedOff() - handed; n != 0 {
		t.Errorf("%d connections handed off, want none", n)
	}
	n := h.stat("cluster.mesh.ssl.handshake")
	if n-shakes > 1 {
		t.Errorf("cluster.mesh.ssl.handshake went from %d to %d for three requests on one connection, want one new at most (pooled)", shakes, n)
	}
	if tc := h.listener("ingress").LoopTLSConns(); tc != n {
		t.Errorf("the ingress loops served %d connections over TLS, want %d (each of the egress's)", tc, n)
	}

	h.push(in, inRoutes, app, out, outRoutes, mesh("spiffe://weft.local/mesh/m/virtualNode/elsewhere"))
	if resp, _, body := get(t, c, h.addr("egress"), "svc.local", "/a"); resp.StatusCode != 503 || body != verifyFailedBody {
		t.Fatalf("upstream without the SAN asked for: %d %q, want 503 and the goroutine path's connection failure", resp.StatusCode, body)
	}
	if n := h.stat("cluster.mesh.ssl.fail_verify_san"); n != 1 {
		t.Errorf("cluster.mesh.ssl.fail_verify_san = %d, want 1", n)
	}
	if n := h.stat("cluster.mesh.upstream_cx_connect_fail"); n != 1 {
		t.Errorf("cluster.mesh.upstream_cx_connect_fail = %d, want 1", n)
	}
	if n := h.listener("egress").HandedOff() + h.listener("ingress").HandedOff() - handed; n != 0 {
		t.Errorf("%d connections handed off, want none", n)
	}
}
