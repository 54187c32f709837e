package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// h2cClient is an HTTP/2 client with prior knowledge (h2c).
func h2cClient(tb testing.TB) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h2cUpstream serves h on loopback over h2c with prior knowledge until
// the test ends, and returns its address. It answers no HTTP/1.1 request
// (Protocols without HTTP1: the server closes such a connection unread);
// h1h2cUpstream serves both.
func h2cUpstream(tb testing.TB, h http.Handler) string {
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }() // ends with srv.Close in Cleanup
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestH2CLoops: with --h2loops, an h2c connection to a listener whose
// routes all go to HTTP/1.1 clusters is served by the loops (counted by
// them, none handed off): GETs and POSTs with and without a
// content-length, concurrent streams on one connection, weft's headers
// and stats as on the goroutine path.
func TestH2CLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", "b")
		w.Header().Set("X-Proto", r.Proto)
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.RequestURI(), "host": r.Host, "body": string(body),
			"len": r.ContentLength, "xfp": r.Header.Get("X-Forwarded-Proto"), "rid": r.Header.Get("X-Request-Id"),
			"cookie": r.Header.Get("Cookie")})
	}))
	t.Cleanup(up.Close)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", strings.TrimPrefix(up.URL, "http://")))
	cl := h2cClient(t)
	base := "http://" + h.addr("egress")
	type answer struct {
		Path, Host, Body, Xfp, Rid, Cookie string
		Len                                int64
	}
	do := func(req *http.Request) (answer, *http.Response) {
		t.Helper()
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatalf("%s %s: %d: %v", req.Method, req.URL, resp.StatusCode, err)
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b" ||
			resp.Header.Get("Server") != "envoy" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("%s %s: HTTP/%d %d, headers %v", req.Method, req.URL, resp.ProtoMajor, resp.StatusCode, resp.Header)
		}
		return a, resp
	}
	req, _ := http.NewRequest("GET", base+"/get?q=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	a, resp := do(req)
	if resp.ContentLength <= 0 {
		t.Errorf("GET: the upstream's content-length did not come through (%d)", resp.ContentLength)
	}
	if a.Path != "/get?q=1" || a.Xfp != "http" || len(a.Rid) != 36 || a.Cookie != "a=1; b=2" || a.Host != h.addr("egress") {
		t.Errorf("GET: upstream saw %+v", a)
	}
	big := strings.Repeat("x", 300<<10) // beyond both windows: WINDOW_UPDATEs needed
	req, _ = http.NewRequest("POST", base+"/post", strings.NewReader(big))
	if a, _ := do(req); a.Body != big || a.Len != int64(len(big)) {
		t.Errorf("POST with content-length: upstream got %d bytes (length %d)", len(a.Body), a.Len)
	}
	req, _ = http.NewRequest("POST", base+"/chunked", io.MultiReader(strings.NewReader("abc"), strings.NewReader(big)))
	req.ContentLength = -1
	if a, _ := do(req); a.Body != "abc"+big || a.Len != -1 {
		t.Errorf("POST without content-length: upstream got %d bytes (length %d)", len(a.Body), a.Len)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() { // one stream; ends with its response
			defer wg.Done()
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/c/%d", base, i), nil)
			resp, err := cl.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), fmt.Sprintf(`"/c/%d"`, i)) {
				t.Errorf("stream %d: %s", i, b)
			}
		}()
	}
	wg.Wait()
	l := h.listener("egress")
	if n, handed := l.LoopH2Conns(), l.HandedOff(); n != 1 || handed != 0 {
		t.Errorf("loops served %d h2c connections and handed off %d, want 1 and 0", n, handed)
	}
	if n := h.stat("http.egress.downstream_rq_http2_total"); n != 23 {
		t.Errorf("downstream_rq_http2_total = %d, want 23", n)
	}
	if n := h.stat("http.egress.downstream_rq_2xx"); n != 23 {
		t.Errorf("downstream_rq_2xx = %d, want 23", n)
	}
	// A local reply: no route.
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"nothere"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", strings.TrimPrefix(up.URL, "http://")))
	resp, err := h2cClient(t).Get(base + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.ProtoMajor != 2 {
		t.Errorf("no route: HTTP/%d %d %q", resp.ProtoMajor, resp.StatusCode, b)
	}
	if n := l.LoopH2Conns(); n != 2 {
		t.Errorf("loops served %d h2c connections, want 2", n)
	}
}

// TestH2CLoopsKeepsQueueingClustersOnGoroutines: a listener with a
// route to an HTTP/1.1 cluster whose max_connections (below Envoy's
// default) may make a stream wait, which the loops do not do, keeps its
// h2c connections on the goroutine path, switch on or not. (An HTTP/2
// cluster's max_requests, which kept them there too, the loops apply.)
func TestH2CLoopsKeepsQueueingClustersOnGoroutines(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	t.Cleanup(up.Close)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "q"))),
		edsCluster("q", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(10)}}}
		}),
		cla("q", strings.TrimPrefix(up.URL, "http://")))
	resp, err := h2cClient(t).Get("http://" + h.addr("egress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/1.1" {
		t.Fatalf("downstream HTTP/%d, upstream %q", resp.ProtoMajor, b)
	}
	l := h.listener("egress")
	if n, handed := l.LoopH2Conns(), l.HandedOff(); n != 0 || handed != 1 {
		t.Errorf("loops served %d h2c connections and handed off %d, want 0 and 1", n, handed)
	}
}

// TestH2CLoopsRefusesAfterUpdate: an update that takes a listener's h2c
// off the loops (its route now goes to an HTTP/1.1 cluster whose
// max_connections may make a stream wait) while a connection is on them: that connection's next stream
// is refused
// (REFUSED_STREAM, GOAWAY), and the client's retry on a new connection
// is served by the goroutine path.
func TestH2CLoopsRefusesAfterUpdate(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	up := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	up1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	t.Cleanup(up1.Close)
	h2 := func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }
	queues := func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(10)}}}
	}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
		edsCluster("q", queues), cla("q", strings.TrimPrefix(up1.URL, "http://")), edsCluster("h2", h2), cla("h2", up))
	cl := h2cClient(t)
	get := func() string {
		t.Helper()
		resp, err := cl.Get("http://" + h.addr("egress") + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("HTTP/%d %d %q", resp.ProtoMajor, resp.StatusCode, b)
		}
		return string(b)
	}
	if p := get(); p != "HTTP/2.0" {
		t.Fatalf("on the loops, the upstream spoke %s", p)
	}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "q"))),
		edsCluster("q", queues), cla("q", strings.TrimPrefix(up1.URL, "http://")), edsCluster("h2", h2), cla("h2", up))
	if p := get(); p != "HTTP/1.1" {
		t.Fatalf("after the update, the upstream spoke %s", p)
	}
	l := h.listener("egress")
	if n, handed := l.LoopH2Conns(), l.HandedOff(); n != 1 || handed != 1 {
		t.Errorf("loops served %d h2c connections and handed off %d, want 1 and 1", n, handed)
	}
}
