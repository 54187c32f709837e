package evloop

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestRouterRoutes: with a Router, the loops send each request where
// weft's route configuration says (virtual host, prefix and header
// matchers, direct responses), to a host of the cluster's list, and count
// it under the cluster's name; no route is 404, a cluster without hosts
// 503.
func TestRouterRoutes(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	toCluster := func(name string, m *routev3.RouteMatch) *routev3.Route {
		return &routev3.Route{Name: name, Match: m,
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}}
	}
	prefix := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	canary := prefix("/b")
	canary.Headers = []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "yes"}, IgnoreCase: true}}}}
	rc, err := proxyroute.Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{
		{Name: "svc", Domains: []string{"svc.local", "svc.local:80"}, Routes: []*routev3.Route{
			toCluster("b", canary),
			{Name: "direct", Match: prefix("/direct"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "hi"}}}}},
			toCluster("empty", prefix("/empty")),
			toCluster("a", prefix("/")),
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	r := &ConfigRouter{Routes: rc, Hosts: map[string][]netip.AddrPort{"a": {ap(hostOf(a))}, "b": {ap(hostOf(b))}}}
	srv, st := start(t, Config{Loops: 2, Router: r})
	c := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		host, path, canary string
		status             int
		backend, body      string
	}{
		{"svc.local", "/", "", 200, "a", ""},
		{"SVC.local", "/b/x", "", 200, "a", ""},
		{"svc.local", "/b/x", "YES", 200, "b", ""},
		{"svc.local:80", "/b", "yes", 200, "b", ""},
		{"svc.local", "/direct", "", 200, "", "hi"},
		{"svc.local", "/empty", "", 503, "", "no healthy upstream"},
		{"other.local", "/", "", 404, "", ""},
	} {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr()+tc.path, nil)
		req.Host = tc.host
		if tc.canary != "" {
			req.Header.Set("X-Canary", tc.canary)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("X-Backend") != tc.backend || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s%s canary %q: %d from %q, %q; want %d from %q", tc.host, tc.path, tc.canary,
				resp.StatusCode, resp.Header.Get("X-Backend"), body, tc.status, tc.backend)
		}
	}
	for name, want := range map[string]int64{"cluster.a.upstream_rq_total": 2, "cluster.b.upstream_rq_total": 2,
		"cluster.b.upstream_rq_2xx": 2, "http.ingress.no_route": 1, "http.ingress.downstream_rq_5xx": 1} {
		if got, _ := st.Value(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestHandOff: an h2c preface, an Upgrade request and a request the
// Router hands off reach Config.HandOff with the descriptor and every
// byte the client sent; the loop serves the connection no longer.
func TestHandOff(t *testing.T) {
	a := backend(t, "a")
	rc, err := proxyroute.Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{{Name: "a", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	inner := &ConfigRouter{Routes: rc, Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(hostOf(a))}}}
	handed := make(chan string, 4)
	srv, _ := start(t, Config{Loops: 1, Router: handOffRouter{inner}, HandOff: func(fd int, buffered []byte, _ Counted) {
		f := os.NewFile(uintptr(fd), "handed")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Error(err)
			return
		}
		go func() { // answers the handed connection; ends when the client closed it
			defer c.Close()
			rest, _ := io.ReadAll(c)
			handed <- string(buffered) + string(rest)
		}()
	}})
	for _, send := range []string{
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes",
		"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /handoff HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
		want := send
		if strings.HasPrefix(send, "GET /first") {
			// The first request is the loop's; the rest is handed off.
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.Header.Get("X-Backend") != "a" {
				t.Fatalf("first request: %v %v", resp, err)
			}
			want = send[strings.Index(send, "GET /handoff"):]
		}
		c.(*net.TCPConn).CloseWrite()
		select {
		case got := <-handed:
			if got != want {
				t.Errorf("handed off %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: not handed off", send)
		}
		c.Close()
	}
}

// handOffRouter hands off the requests for /handoff.
type handOffRouter struct{ inner Router }

func (h handOffRouter) Route(hd proxyroute.Head) Target {
	if strings.HasPrefix(string(hd.Target()), "/handoff") {
		return Target{HandOff: true}
	}
	return h.inner.Route(hd)
}

// TestRetryOnStatus: a Target retrying gateway errors sends the request
// again after a 503 (the 503 is not seen), and gives the client the last
// answer once the budget is spent; a 500 is not a gateway error.
func TestRetryOnStatus(t *testing.T) {
	var hits, fail, failCode atomic.Int32
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		if fail.Add(-1) >= 0 {
			w.WriteHeader(int(failCode.Load()))
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(b.Close)
	host := netip.MustParseAddrPort(hostOf(b))
	srv, _ := start(t, Config{Loops: 1, Router: routerFunc(func(proxyroute.Head) Target {
		return Target{Cluster: "c", Host: host, Retry: &proxyroute.RetryPolicy{On: proxyroute.OnGatewayError, NumRetries: 2}}
	})})
	c := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		fails, code  int32
		status, hits int
	}{
		{1, 503, 200, 2}, {2, 502, 200, 3}, {3, 504, 504, 3}, {1, 500, 500, 1},
	} {
		hits.Store(0)
		fail.Store(tc.fails)
		failCode.Store(tc.code)
		resp, err := c.Post("http://"+srv.Addr()+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || int(hits.Load()) != tc.hits || (tc.status == 200 && string(body) != "payload") {
			t.Errorf("%d failures with %d: %d %q after %d attempts, want %d after %d", tc.fails, tc.code, resp.StatusCode, body, hits.Load(), tc.status, tc.hits)
		}
	}
}

type routerFunc func(proxyroute.Head) Target

func (f routerFunc) Route(h proxyroute.Head) Target { return f(h) }

// TestShutdownDrains: after Shutdown, the request in flight is answered
// (with Connection: close), an idle connection is closed, new
// connections are refused, and Serve returns once nothing is left.
func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	host := netip.MustParseAddrPort(hostOf(b))
	srv, err := Listen(Config{Listen: "127.0.0.1:0", Loops: 2, Router: routerFunc(func(proxyroute.Head) Target {
		return Target{Cluster: "c", Host: host}
	})})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }() // ends when drained after Shutdown, below
	idle, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	busy, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, _ = io.WriteString(busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	srv.Shutdown()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idleR.ReadByte(); err == nil {
		t.Error("the idle connection was not closed")
	}
	close(release)
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the request in flight: %v %v", resp, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return once drained")
	}
	if c, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("a connection was accepted after Shutdown")
	}
}

// TestHandOffBehindPipelinedResponse: a request to hand off, pipelined
// behind a response the client has not read yet (the proxy cannot write
// it all), goes to HandOff once that response is out, instead of a 501.
func TestHandOffBehindPipelinedResponse(t *testing.T) {
	const big = 16 << 20 // more than the sockets buffer: the proxy waits for the client
	handed := make(chan string, 1)
	srv, _ := start(t, Config{Loops: 1, Router: handOffRouter{routerFunc(func(proxyroute.Head) Target {
		return Target{Status: 200, Body: strings.Repeat("x", big)} // a direct response, written at once
	})}, HandOff: func(fd int, buffered []byte, _ Counted) {
		handed <- string(buffered)
		f := os.NewFile(uintptr(fd), "handed")
		defer f.Close()
		_, _ = io.WriteString(f, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhanded")
	}})
	c := dial(t, srv.Addr())
	second := "GET /handoff HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"+second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // not reading: the first response fills the buffers
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first response: %v %v", resp, err)
	}
	if n, _ := io.Copy(io.Discard, resp.Body); n != big {
		t.Fatalf("first response: %d bytes, want %d", n, big)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "handed" {
		t.Errorf("second response: %d %q, want the handed-off connection's", resp.StatusCode, body)
	}
	select {
	case got := <-handed:
		if got != second {
			t.Errorf("handed off %q, want %q", got, second)
		}
	default:
		t.Error("not handed off")
	}
}
