package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// holdBackend answers every request at once, except /hold, which it
// answers when the test releases it; arrived says a /hold request came.
type holdBackend struct {
	srv     *httptest.Server
	arrived chan struct{}
	release chan struct{}
}

func newHoldBackend(t *testing.T) *holdBackend {
	b := &holdBackend{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			b.arrived <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *holdBackend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// waitArrived waits for a /hold request to reach the backend.
func (b *holdBackend) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-b.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not reach the backend")
	}
}

// rawGet sends GET path on an open HTTP/1.1 connection and reads the
// response.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader, path string) (*http.Response, error) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// waitClosed fails the test unless the proxy closes c (EOF or reset)
// before the connection's deadline.
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	_, err := br.ReadByte()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: not closed (%v)", what, err)
	}
}

// TestDrainModifiedChainHTTP1: a keep-alive connection whose filter chain
// an LDS update changes gets "Connection: close" on the response in
// flight, and the client's next request goes on a new connection, which
// the new chain serves. An idle one is closed at once.
func TestDrainModifiedChainHTTP1(t *testing.T) {
	h := newHarness(t)
	b := newHoldBackend(t)
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(httpListener("l", httpManager("old", "rds")), rc, staticCluster("c", b.addr()))
	addr := h.addr("l")

	busy := dialRaw(t, addr)
	busyR := bufio.NewReader(busy)
	idle := dialRaw(t, addr)
	idleR := bufio.NewReader(idle)
	for _, c := range []struct {
		c  net.Conn
		br *bufio.Reader
	}{{busy, busyR}, {idle, idleR}} {
		if resp, err := rawGet(t, c.c, c.br, "/"); err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("first request: %v %v", resp, err)
		}
	}
	type result struct {
		resp *http.Response
		err  error
	}
	held := make(chan result, 1)
	go func() { // the request in flight; ends when the backend answers
		resp, err := rawGet(t, busy, busyR, "/hold")
		held <- result{resp, err}
	}()
	b.waitArrived(t)

	h.push(httpListener("l", httpManager("new", "rds")), rc, staticCluster("c", b.addr()))
	waitClosed(t, idle, idleR, "the idle connection of the changed chain")
	close(b.release)
	r := <-held
	if r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("request in flight: %v %v", r.resp, r.err)
	}
	if !r.resp.Close { // the reader takes "Connection: close" out of the header into Close
		t.Error("the response in flight does not say Connection: close")
	}
	waitClosed(t, busy, busyR, "the busy connection after its response")
	if n := h.stat("http.old.downstream_cx_drain_close"); n != 2 {
		t.Errorf("http.old.downstream_cx_drain_close = %d, want 2", n)
	}
	// A new connection gets the new chain.
	resp, _, _ := get(t, newClient(t), addr, "x", "/")
	if resp.StatusCode != 200 || h.stat("http.new.downstream_rq_total") != 1 {
		t.Errorf("new connection: %d, http.new.downstream_rq_total = %d", resp.StatusCode, h.stat("http.new.downstream_rq_total"))
	}
}

// TestDrainFreshConnection: a connection accepted just before an LDS
// update changes its chain, whose request was not read yet, still gets
// its request served, as the connection's last: its client has written
// the request already and would see an EOF it cannot retry. One that
// never sends a request is closed within the grace.
func TestDrainFreshConnection(t *testing.T) {
	h := newHarness(t)
	b := newHoldBackend(t)
	close(b.release)
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(httpListener("l", httpManager("old", "rds")), rc, staticCluster("c", b.addr()))
	addr := h.addr("l")

	fresh := dialRaw(t, addr)
	freshR := bufio.NewReader(fresh)
	silent := dialRaw(t, addr)
	silentR := bufio.NewReader(silent)
	waitUntil(t, 10*time.Second, "both connections accepted", func() bool {
		return h.stat("listener."+listener.StatName("127.0.0.1:0")+".downstream_cx_active") == 2 // the name of a listener on port 0
	})
	h.push(httpListener("l", httpManager("new", "rds")), rc, staticCluster("c", b.addr()))

	resp, err := rawGet(t, fresh, freshR, "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the request of a connection drained before it was read: %v %v", resp, err)
	}
	if !resp.Close {
		t.Error("the drained connection's response does not say Connection: close")
	}
	waitClosed(t, fresh, freshR, "the drained connection after its response")
	waitClosed(t, silent, silentR, "a drained connection that sends nothing")
	if n := h.stat("http.old.downstream_rq_total"); n != 1 {
		t.Errorf("http.old.downstream_rq_total = %d, want 1: the old chain serves the drained connection's request", n)
	}
}

// TestDrainKeepsUnchangedChains: neither an LDS update that changes
// another chain of the listener nor an RDS update drains a connection
// whose chain is unchanged.
func TestDrainKeepsUnchangedChains(t *testing.T) {
	h := newHarness(t)
	b := newHoldBackend(t)
	// Two chains told apart by the client's source address: 127.0.0.1
	// and 127.0.0.2 (both loopback on Linux).
	lis := func(prefixB string) *listenerv3.Listener {
		l := httpListener("l", httpManager("a", "rds"))
		fb := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
		l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{
			SourcePrefixRanges: []*corev3.CidrRange{{AddressPrefix: "127.0.0.1", PrefixLen: wrapperspb.UInt32(32)}}}
		fb.FilterChainMatch = &listenerv3.FilterChainMatch{
			SourcePrefixRanges: []*corev3.CidrRange{{AddressPrefix: "127.0.0.2", PrefixLen: wrapperspb.UInt32(32)}}}
		fb.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(httpManager(prefixB, "rds"))}
		l.FilterChains = append(l.FilterChains, fb)
		return l
	}
	h.push(lis("b1"), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", b.addr()))
	addr := h.addr("l")
	a := dialRaw(t, addr)
	aR := bufio.NewReader(a)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	bc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bc.Close() })
	_ = bc.SetDeadline(time.Now().Add(10 * time.Second))
	bR := bufio.NewReader(bc)
	for _, c := range []struct {
		c  net.Conn
		br *bufio.Reader
	}{{a, aR}, {bc, bR}} {
		if resp, err := rawGet(t, c.c, c.br, "/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first request: %v %v", resp, err)
		}
	}
	if h.stat("http.a.downstream_rq_total") != 1 || h.stat("http.b1.downstream_rq_total") != 1 {
		t.Fatal("the two connections did not match the two chains")
	}

	// Chain b changes: its connection drains, a's does not.
	h.push(lis("b2"), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", b.addr()))
	waitClosed(t, bc, bR, "the connection of the changed chain")
	// A route change never drains.
	h.push(lis("b2"), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"), routeTo("/other", "c"))),
		staticCluster("c", b.addr()))
	for i := 0; i < 2; i++ {
		resp, err := rawGet(t, a, aR, "/")
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("request %d on the unchanged chain's connection: %v %v", i, resp, err)
		}
	}
	if n := h.stat("http.a.downstream_rq_total"); n != 3 {
		t.Errorf("http.a.downstream_rq_total = %d, want 3", n)
	}
	if n := h.stat("http.a.downstream_cx_drain_close"); n != 0 {
		t.Errorf("http.a.downstream_cx_drain_close = %d, want 0", n)
	}
	// A change to the listener beyond its chains (here a listener filter)
	// replaces it as Envoy does: every connection drains.
	l := lis("b2")
	l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}
	h.push(l, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"), routeTo("/other", "c"))),
		staticCluster("c", b.addr()))
	waitClosed(t, a, aR, "the connection of an unchanged chain of a listener whose listener filters changed")
}

// TestDrainRevokedClient: a client whose SAN an update removes from a
// STRICT listener's validation is served at most once more on its
// connection, then refused at its next handshake.
func TestDrainRevokedClient(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	f := writeLeaf(t, t.TempDir(), ca, ca.Issue(t, []string{"svc.local"}))
	b := newHoldBackend(t)
	front := "spiffe://weft.local/mesh/m/virtualNode/front"
	back := "spiffe://weft.local/mesh/m/virtualNode/back"
	lis := func(sans ...string) *listenerv3.Listener {
		return strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(true, sans...),
			RequireClientCertificate: wrapperspb.Bool(true)})
	}
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(lis(front, back), rc, staticCluster("c", b.addr()))
	addr := h.addr("ingress")

	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local", ca.Issue(t, nil, front).TLS(t))}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var conns int
	getOnce := func(path string) (*http.Response, error) {
		resp, err := cl.Get("https://" + addr + path)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	if resp, err := getOnce("/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before revocation: %v %v", resp, err)
	}
	conns = int(h.listenerStat("ingress", "ssl.handshake"))
	type result struct {
		resp *http.Response
		err  error
	}
	held := make(chan result, 1)
	go func() { // the request in flight on the pooled connection; ends when the backend answers
		resp, err := getOnce("/hold")
		held <- result{resp, err}
	}()
	b.waitArrived(t)
	if n := int(h.listenerStat("ingress", "ssl.handshake")); n != conns {
		t.Fatalf("the held request opened a new connection (%d handshakes, had %d)", n, conns)
	}

	h.push(lis(back), rc, staticCluster("c", b.addr()))
	close(b.release)
	r := <-held
	if r.err != nil || r.resp.StatusCode != 200 || !r.resp.Close {
		t.Fatalf("the response in flight when access was revoked: %v %v, want 200 with Connection: close", r.resp, r.err)
	}
	if resp, err := getOnce("/"); err == nil {
		t.Fatalf("revoked client served on its next request: %d", resp.StatusCode)
	}
	waitUntil(t, 5*time.Second, "ssl.fail_verify_san", func() bool { return h.listenerStat("ingress", "ssl.fail_verify_san") == 1 })
	// The client still listed is served.
	if code, _, err := tlsGet(addr, clientTLS(ca, "svc.local", ca.Issue(t, nil, back).TLS(t))); err != nil || code != 200 {
		t.Fatalf("client still allowed: %d %v", code, err)
	}
}

// TestDrainH2GoAway: an h2c connection whose chain changes gets GOAWAY
// (NO_ERROR) at once; its stream in flight finishes, then the connection
// closes.
func TestDrainH2GoAway(t *testing.T) {
	h := newHarness(t)
	b := newHoldBackend(t)
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(httpListener("l", httpManager("old", "rds")), rc, staticCluster("c", b.addr()))
	cl := dialH2(t, h.addr("l"))
	if err := cl.headers(1, "/hold"); err != nil || cl.bw.Flush() != nil {
		t.Fatal(err)
	}
	b.waitArrived(t)
	h.push(httpListener("l", httpManager("new", "rds")), rc, staticCluster("c", b.addr()))
	var goAway *h2Frame
	for f := range cl.frames {
		if f.typ == http2.FrameGoAway {
			goAway = &f
			break
		}
		if f.stream == 1 {
			t.Fatal("stream 1 answered before the GOAWAY")
		}
	}
	if goAway == nil {
		t.Fatal("the connection ended without GOAWAY")
	}
	if goAway.code != http2.ErrCodeNo || goAway.lastStream < 1 {
		t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR and stream 1 kept", goAway.code, goAway.lastStream)
	}
	close(b.release)
	answered := false
	for f := range cl.frames { // ends when the proxy closes the connection
		if f.stream == 1 && f.typ == http2.FrameHeaders {
			answered = true
		}
	}
	if !answered {
		t.Error("the stream in flight was not answered")
	}
	var ne net.Error
	if _, err := cl.c.Read(make([]byte, 1)); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the proxy kept the drained connection open")
	}
	// Counted once ServeConn returns, just after the close.
	waitUntil(t, 5*time.Second, "http.old.downstream_cx_drain_close 1", func() bool {
		return h.stat("http.old.downstream_cx_drain_close") == 1
	})
}

// TestDrainTimeClosesTCP: a TCP proxy connection of a changed chain goes
// on during the drain time; one of a removed listener is closed when the
// drain time ends.
func TestDrainTimeClosesTCP(t *testing.T) {
	echoLn := echoServer(t)
	ping := func(c net.Conn) error {
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return err
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping\n" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	}
	tcp := func(prefix string) *listenerv3.Listener {
		return tcpListener("tcp", &tcpv3.TcpProxy{StatPrefix: prefix, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}})
	}
	other := httpListener("other", httpManager("other", "rds"))

	t.Run("default drain time", func(t *testing.T) {
		h := newHarness(t)
		h.push(tcp("one"), staticCluster("echo", echoLn.Addr().String()))
		c := dialRaw(t, h.addr("tcp"))
		if err := ping(c); err != nil {
			t.Fatal(err)
		}
		h.push(tcp("two"), staticCluster("echo", echoLn.Addr().String()))
		// Draining, but 600 s are far off: bytes still pass.
		if err := ping(c); err != nil {
			t.Fatalf("draining TCP connection: %v", err)
		}
	})
	t.Run("short drain time", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.DrainTime = 100 * time.Millisecond })
		h.push(tcp("one"), staticCluster("echo", echoLn.Addr().String()))
		c := dialRaw(t, h.addr("tcp"))
		if err := ping(c); err != nil {
			t.Fatal(err)
		}
		h.push(other, routeConfig("rds"), staticCluster("echo", echoLn.Addr().String()))
		waitClosed(t, c, bufio.NewReader(c), "TCP connection of the removed listener")
	})
}
