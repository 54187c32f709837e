package evloop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// backend is a real net/http server that echoes what it saw.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-Hop", r.Header.Get("X-Hop"))
		switch {
		case strings.HasPrefix(r.URL.Path, "/big/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/big/"))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(bytes.Repeat([]byte("x"), n))
		case r.URL.Path == "/chunked":
			fl := w.(http.Flusher)
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				fl.Flush()
			}
		case r.URL.Path == "/nobody":
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/continue":
			w.WriteHeader(http.StatusContinue)
			_, _ = w.Write(body)
		default:
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// start runs a prototype listener on loopback until the test ends.
func start(t *testing.T, cfg Config) (*Server, *stats.Store) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.NewStore()
	}
	srv, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }() // ends at cancel, in the cleanup below
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return srv, cfg.Stats
}

func oneRoute(t *testing.T) (*Server, *stats.Store, *httptest.Server) {
	return oneRouteLocked(t, false)
}

func oneRouteLocked(t *testing.T, locked bool) (*Server, *stats.Store, *httptest.Server) {
	return oneRouteWait(t, locked, false)
}

func oneRouteWait(t *testing.T, locked, raw bool) (*Server, *stats.Store, *httptest.Server) {
	b := backend(t, "a")
	loops := 2
	if raw {
		loops = runtime.GOMAXPROCS(0) - 1
		if loops < 1 {
			t.Skip("raw waits need GOMAXPROCS above 1") // GOMAXPROCS=1 runs only
		}
	}
	srv, st := start(t, Config{Loops: loops, LockThreads: locked, RawWait: raw, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	return srv, st, b
}

func TestForwardsWithWeftsHeaders(t *testing.T) {
	for _, w := range []struct{ locked, raw bool }{{false, false}, {true, false}, {false, true}} {
		t.Run(fmt.Sprintf("locked threads %v raw %v", w.locked, w.raw), func(t *testing.T) { testForwards(t, w.locked, w.raw) })
	}
}

func testForwards(t *testing.T, locked, raw bool) {
	srv, st, _ := oneRouteWait(t, locked, raw)
	c := &http.Client{Timeout: 5 * time.Second}
	ids := map[string]bool{}
	for i := range 20 {
		resp, err := c.Post("http://"+srv.Addr()+"/echo?q="+strconv.Itoa(i), "text/plain", strings.NewReader("hello "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello "+strconv.Itoa(i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		id := resp.Header.Get("X-Seen-Request-Id")
		if len(id) != 36 || id[14] != '4' || ids[id] {
			t.Errorf("request %d: x-request-id %q (want a new version 4 UUID)", i, id)
		}
		ids[id] = true
		if got := resp.Header.Get("X-Seen-Proto"); got != "http" {
			t.Errorf("x-forwarded-proto %q", got)
		}
		if got := resp.Header.Get("X-Seen-Path"); got != "/echo?q="+strconv.Itoa(i) {
			t.Errorf("path %q", got)
		}
		if resp.Header.Get("Server") != "envoy" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("response headers %v", resp.Header)
		}
	}
	// A request ID the client sent is kept.
	req, _ := http.NewRequest("GET", "http://"+srv.Addr()+"/", nil)
	req.Header.Set("X-Request-Id", "mine")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Seen-Request-Id"); got != "mine" {
		t.Errorf("x-request-id %q, want the client's", got)
	}
	for name, want := range map[string]int64{"http.ingress.downstream_rq_total": 21, "http.ingress.downstream_rq_2xx": 21,
		"cluster.a.upstream_rq_total": 21, "cluster.a.upstream_rq_2xx": 21} {
		if v, _ := st.Value(name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
	// Keep-alive both ways: the client's one connection, and the
	// upstream connections reused (at most one per loop).
	if v, _ := st.Value("cluster.a.upstream_cx_total"); v > 2 {
		t.Errorf("upstream_cx_total %d: upstream connections not reused", v)
	}
}

func TestRoutesByHostAndPrefix(t *testing.T) {
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	srv, _ := start(t, Config{Loops: 1, Routes: []Route{
		{Domain: "api.example", Prefix: "/v2/", Cluster: "b"},
		{Domain: "*.example", Prefix: "/", Cluster: "c"},
		{Domain: "*", Prefix: "/", Cluster: "a"},
	}, Clusters: map[string][]string{"a": {hostOf(a)}, "b": {hostOf(b)}, "c": {hostOf(c)}}})
	for _, tc := range []struct{ host, path, want string }{
		{"api.example", "/v2/x", "b"}, {"API.Example:8080", "/v2/x", "b"}, {"api.example", "/v1/x", "c"},
		{"www.example", "/v2/x", "c"}, {"example", "/v2/x", "a"}, {"other", "/", "a"},
	} {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr()+tc.path, nil)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != tc.want {
			t.Errorf("%s%s went to %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
}

// TestNoRoute: a request no route matches is answered 404, with no
// body and so no content-type, and counted.
func TestNoRoute(t *testing.T) {
	b := backend(t, "a")
	srv, st := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/only/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	resp, err := http.Get("http://" + srv.Addr() + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
	// As the goroutine path's and Envoy's local reply without a body: a
	// length and a date, no type.
	if _, ok := resp.Header["Content-Type"]; ok || resp.ContentLength != 0 || resp.Header.Get("Date") == "" {
		t.Errorf("head %v (length %d), want a date and a length of 0 and no content-type", resp.Header, resp.ContentLength)
	}
	if v, _ := st.Value("http.ingress.no_route"); v != 1 {
		t.Errorf("no_route %d", v)
	}
}

// raw sends bytes on one connection and reads n responses.
func raw(t *testing.T, addr, send string, n int) ([]*http.Response, []string, net.Conn) {
	t.Helper()
	return rawMethods(t, addr, send, make([]string, n))
}

// rawMethods reads one response per method (empty: GET); a HEAD's
// response has no body whatever its Content-Length says.
func rawMethods(t *testing.T, addr, send string, methods []string) ([]*http.Response, []string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var rs []*http.Response
	var bodies []string
	for _, m := range methods {
		var req *http.Request
		if m != "" {
			req = &http.Request{Method: m}
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("response %d: %v", len(rs), err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", len(rs), err)
		}
		rs, bodies = append(rs, resp), append(bodies, string(b))
	}
	return rs, bodies, c
}

func TestPipelinedInOrder(t *testing.T) {
	srv, _, _ := oneRoute(t)
	var send strings.Builder
	var want []string
	for i := range 10 {
		body := strings.Repeat(strconv.Itoa(i), i*3)
		fmt.Fprintf(&send, "POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body)
		want = append(want, body)
	}
	send.WriteString("GET /big/100000 HTTP/1.1\r\nHost: x\r\n\r\nGET /nobody HTTP/1.1\r\nHost: x\r\n\r\nHEAD /big/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	methods := make([]string, 13)
	methods[12] = "HEAD"
	rs, bodies, c := rawMethods(t, srv.Addr(), send.String(), methods)
	for i := range 10 {
		if bodies[i] != want[i] || rs[i].Header.Get("X-Seen-Path") != "/p"+strconv.Itoa(i) {
			t.Errorf("response %d: %q for %s, want %q", i, bodies[i], rs[i].Header.Get("X-Seen-Path"), want[i])
		}
	}
	if len(bodies[10]) != 100000 {
		t.Errorf("big body %d bytes", len(bodies[10]))
	}
	if rs[11].StatusCode != 204 || rs[12].StatusCode != 200 || rs[12].ContentLength != 10 || bodies[12] != "" {
		t.Errorf("204 then HEAD: %d, %d cl=%d %q", rs[11].StatusCode, rs[12].StatusCode, rs[12].ContentLength, bodies[12])
	}
	// Connection: close on the last request: the proxy closes.
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after Connection: close: read %d, %v; want EOF", n, err)
	}
}

func TestRequestInPieces(t *testing.T) {
	srv, _, _ := oneRoute(t)
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "POST /pieces HTTP/1.1\r\nHost: x\r\nX-Hop: kept\r\nContent-Length: 11\r\n\r\nhello world"
	for i := 0; i < len(req); i += 7 {
		if _, err := io.WriteString(c, req[i:min(i+7, len(req))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // separate segments, so the proxy reads a piece at a time
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello world" || resp.Header.Get("X-Seen-Hop") != "kept" {
		t.Errorf("got %q hop %q", b, resp.Header.Get("X-Seen-Hop"))
	}
}

func TestLargeBodiesBothWays(t *testing.T) {
	srv, _, _ := oneRoute(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: partial writes and pauses
	resp, err := http.Post("http://"+srv.Addr()+"/", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("echo of 1 MiB: %d bytes, %v", len(got), err)
	}
	resp, err = http.Get("http://" + srv.Addr() + "/big/5000000")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 5000000 {
		t.Fatalf("5 MB response: %d bytes, %v", n, err)
	}
}

func TestChunkedResponseRelayed(t *testing.T) {
	srv, _, _ := oneRoute(t)
	rs, bodies, _ := raw(t, srv.Addr(), "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", 2)
	for i := range 2 {
		if bodies[i] != "part0;part1;part2;" || len(rs[i].TransferEncoding) != 1 {
			t.Errorf("response %d: %q %v", i, bodies[i], rs[i].TransferEncoding)
		}
	}
}

// TestInterimResponseDropped: an upstream's 1xx response is dropped, as
// Envoy drops it without proxy_100_continue; the final one follows.
func TestInterimResponseDropped(t *testing.T) {
	srv, _, _ := oneRoute(t)
	rs, bodies, _ := raw(t, srv.Addr(), "POST /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"+
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2)
	if rs[0].StatusCode != 200 || bodies[0] != "ok" || rs[1].StatusCode != 200 {
		t.Errorf("responses %d %q, then %d; want 200 ok, then 200", rs[0].StatusCode, bodies[0], rs[1].StatusCode)
	}
}

func TestBadRequests(t *testing.T) {
	srv, st, _ := oneRoute(t)
	for _, tc := range []struct {
		name, send string
		status     int
	}{
		{"garbage", "\x00\x01\x02 nonsense\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400},
		{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"smuggling", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"ctl in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n", 400},
		{"gzip request", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"two codings", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 426}, // as Envoy without accept_http_10
		{"chunked HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 426},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 426},
		{"framing hop-by-hop", "POST / HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad chunk", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 501},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 501},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 501}, // without H2 and HandOff
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"too many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 101) + "\r\n", 431},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 61<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, _, c := raw(t, srv.Addr(), tc.send, 1)
			if rs[0].StatusCode != tc.status {
				t.Errorf("status %d, want %d", rs[0].StatusCode, tc.status)
			}
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("connection still open after %d: read %d", tc.status, n)
			}
		})
	}
	// The proxy still serves.
	resp, err := http.Get("http://" + srv.Addr() + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after bad requests: %v %v", resp, err)
	}
	resp.Body.Close()
	if v, _ := st.Value("http.ingress.downstream_cx_protocol_error"); v == 0 {
		t.Error("protocol errors not counted")
	}
}

func TestConcurrentClients(t *testing.T) {
	for _, w := range []struct{ locked, raw bool }{{false, false}, {true, false}, {false, true}} {
		t.Run(fmt.Sprintf("locked threads %v raw %v", w.locked, w.raw), func(t *testing.T) { testConcurrent(t, w.locked, w.raw) })
	}
}

func testConcurrent(t *testing.T, locked, raw bool) {
	srv, st, _ := oneRouteWait(t, locked, raw)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() { // one client; ends after its requests
			defer wg.Done()
			for i := range 50 {
				body := fmt.Sprintf("w%d-%d", w, i)
				resp, err := c.Post("http://"+srv.Addr()+"/", "text/plain", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != body {
					errs <- fmt.Errorf("got %q want %q", got, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v, _ := st.Value("http.ingress.downstream_rq_2xx"); v != 32*50 {
		t.Errorf("2xx %d", v)
	}
}

// Expect: 100-continue is answered by the proxy, as weft proxy does, and
// not forwarded.
func TestExpectContinue(t *testing.T) {
	var sawExpect bool
	var mu sync.Mutex
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawExpect = r.Header.Get("Expect") != ""
		mu.Unlock()
		_, _ = io.Copy(w, r.Body)
	}))
	defer b.Close()
	srv, _ := start(t, Config{Loops: 1, Routes: []Route{{Domain: "*", Prefix: "/", Cluster: "a"}},
		Clusters: map[string][]string{"a": {hostOf(b)}}})
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	br := bufio.NewReader(c)
	first, err := http.ReadResponse(br, nil)
	if err != nil || first.StatusCode != 100 {
		t.Fatalf("before the body: %v %v, want 100 Continue", first, err)
	}
	_, _ = io.WriteString(c, "body")
	final, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(final.Body)
	if final.StatusCode != 200 || string(got) != "body" {
		t.Errorf("%d %q", final.StatusCode, got)
	}
	mu.Lock()
	defer mu.Unlock()
	if sawExpect {
		t.Error("Expect reached the upstream")
	}
}

// Chunked request bodies are relayed as they are, in one piece or many,
// and the next pipelined request follows.
func TestChunkedRequestBody(t *testing.T) {
	srv, _, _ := oneRoute(t)
	send := "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: 1\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
	rs, bodies, _ := raw(t, srv.Addr(), send, 2)
	if bodies[0] != "hello world" || bodies[1] != "ok" || rs[1].Header.Get("X-Seen-Path") != "/b" {
		t.Errorf("got %q, %q", bodies[0], bodies[1])
	}
	// A large chunked body from Go's client (a reader of unknown length).
	big := bytes.Repeat([]byte("chunk"), 200000)
	resp, err := http.Post("http://"+srv.Addr()+"/", "text/plain", io.MultiReader(bytes.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, big) {
		t.Errorf("chunked 1 MB body: %d bytes back", len(got))
	}
}

// A refused request followed by more bytes: the proxy reads and drops
// them before closing, so the client sees the answer and then the end of
// the stream, not a reset (closing with unread bytes sends one).
func TestErrorReplyNotReset(t *testing.T) {
	srv, _, _ := oneRoute(t)
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	junk := "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" + strings.Repeat("x", 100<<10)
	if _, err := io.WriteString(c, junk); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 400 {
		t.Errorf("status %d", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want the end of the stream", err)
	}
}

// dial connects to the proxy at addr; the connection is closed when the
// test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
