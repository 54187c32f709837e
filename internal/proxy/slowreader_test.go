package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// slowReaderSetup serves, behind listener "egress", a route with a 300 ms
// timeout to an upstream that sends 64 MiB, with opts. It returns the
// harness.
func slowReaderSetup(t *testing.T, opts ...func(*Config)) *harness {
	t.Helper()
	return bigResponseSetup(t, func(ra *routev3.RouteAction) { ra.Timeout = durationpb.New(300 * time.Millisecond) }, opts...)
}

// bigResponseSetup serves, behind listener "egress", a route changed by
// mod to an upstream ("big") that sends 64 MiB, with opts. It returns the
// harness.
func bigResponseSetup(t *testing.T, mod func(*routev3.RouteAction), opts ...func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, opts...)
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for range 1024 {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	t.Cleanup(big.Close)
	rt := routeTo("/", "big")
	mod(rt.GetRoute())
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, rt)),
		edsCluster("big"), cla("big", big.Listener.Addr().String()))
	return h
}

// waitFreed waits until the proxy holds no request and no upstream
// connection of the stalled one.
func waitFreed(t *testing.T, h *harness, downstreamConns bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if h.stat("http.egress.downstream_rq_active") == 0 && h.stat("cluster.big.upstream_rq_active") == 0 &&
			(!downstreamConns || h.stat("http.egress.downstream_cx_active") == 0) {
			return
		}
	}
	t.Fatalf("seconds after the 300 ms timeout, with the client not reading: %d requests active, %d connections, upstream %d requests",
		h.stat("http.egress.downstream_rq_active"), h.stat("http.egress.downstream_cx_active"), h.stat("cluster.big.upstream_rq_active"))
}

// goroutinePath serves every listener on the goroutine path, which the
// loops also hand some requests to (a path to normalise, a request they
// do not forward).
func goroutinePath(c *Config) { c.Goroutines = true }

// TestSlowReaderH1: a client that sends a request and never reads the
// response. The route timeout ends the stream, and with it the write the
// proxy was blocked in: the connection closes, as Envoy resets it. On
// the goroutine path, the write held the request, its goroutine and its
// upstream connection for good (max_connections counts them). The event
// loops were bounded already, and are tested too.
func TestSlowReaderH1(t *testing.T) {
	for name, opts := range map[string][]func(*Config){"goroutines": {goroutinePath}, "loops": nil} {
		t.Run(name, func(t *testing.T) { slowReaderH1(t, opts...) })
	}
}

func slowReaderH1(t *testing.T, opts ...func(*Config)) {
	h := slowReaderSetup(t, opts...)
	c, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := c.Write([]byte("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the request reached the proxy", func() bool { return h.stat("http.egress.downstream_rq_total") >= 1 })
	waitFreed(t, h, true)
}

// TestSlowReaderH2: the same over HTTP/2, a client that never opens its
// flow-control window: the route timeout resets the stream.
func TestSlowReaderH2(t *testing.T) {
	for name, opts := range map[string][]func(*Config){"goroutines": {goroutinePath}, "loops": nil} {
		t.Run(name, func(t *testing.T) { slowReaderH2(t, opts...) })
	}
}

func slowReaderH2(t *testing.T, opts ...func(*Config)) {
	h := slowReaderSetup(t, opts...)
	cl := dialH2(t, h.addr("egress"))
	if err := cl.headers(1, "/big"); err != nil {
		t.Fatal(err)
	}
	_ = cl.bw.Flush()
	waitUntil(t, 5*time.Second, "the request reached the proxy", func() bool { return h.stat("http.egress.downstream_rq_total") >= 1 })
	waitFreed(t, h, false)
	for f := range cl.frames {
		if f.typ == http2.FrameRSTStream && f.stream == 1 {
			if f.code != http2.ErrCodeInternal {
				t.Errorf("RST_STREAM %v, want INTERNAL_ERROR (x/net's, resetting a stream whose write deadline passed)", f.code)
			}
			return
		}
	}
	t.Fatal("the connection ended without a RST_STREAM of the stalled stream")
}

// TestSlowReaderStreamingH2: an HTTP/2 client that gives no window
// (SETTINGS_INITIAL_WINDOW_SIZE 0) while the upstream keeps sending, on a
// route without a timeout (App Mesh's perRequest 0) and a 300 ms idle
// timeout. The response's end never comes, so stream_flush_timeout does
// not apply (Envoy arms it once the end is buffered); the stream idle
// timeout does, as the loops bound a blocked stream (stallDeadline): the
// stream is reset (INTERNAL_ERROR) and counted as Envoy counts a stream
// idle timeout, downstream_rq_idle_timeout. The loops hand a connection
// with such a route to the goroutine path; both configurations are run.
func TestSlowReaderStreamingH2(t *testing.T) {
	for name, opts := range map[string][]func(*Config){"goroutines": {goroutinePath}, "loops": nil} {
		t.Run(name, func(t *testing.T) { slowReaderStreamingH2(t, opts...) })
	}
}

func slowReaderStreamingH2(t *testing.T, opts ...func(*Config)) {
	h := bigResponseSetup(t, func(ra *routev3.RouteAction) {
		ra.Timeout = durationpb.New(0)
		ra.IdleTimeout = durationpb.New(300 * time.Millisecond)
	}, opts...)
	cl := dialH2(t, h.addr("egress"))
	if err := cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	if err := cl.headers(1, "/big"); err != nil {
		t.Fatal(err)
	}
	_ = cl.bw.Flush()
	reset := false
	for f := range cl.frames {
		if f.typ == http2.FrameRSTStream && f.stream == 1 {
			if f.code != http2.ErrCodeInternal {
				t.Errorf("RST_STREAM %v, want INTERNAL_ERROR", f.code)
			}
			reset = true
			break
		}
	}
	if !reset {
		t.Fatal("the connection ended without a RST_STREAM of the stalled stream")
	}
	waitFreed(t, h, false)
	if got := h.stat("http.egress.downstream_rq_idle_timeout"); got != 1 {
		t.Errorf("downstream_rq_idle_timeout = %d, want 1", got)
	}
	if got := h.stat("http2.tx_flush_timeout"); got != 0 {
		t.Errorf("http2.tx_flush_timeout = %d, want 0 (the response's end never came)", got)
	}
}

// TestKeepAliveAfterTimeout: a route timeout answered 504 on a kept
// HTTP/1.1 connection bounds that response's writes (abortWrites); the
// next request on the connection, after the bound has passed, is served.
func TestKeepAliveAfterTimeout(t *testing.T) {
	h := newHarness(t, goroutinePath)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(600 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	rt := routeTo("/", "c")
	rt.GetRoute().Timeout = durationpb.New(200 * time.Millisecond)
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, rt)),
		edsCluster("c"), cla("c", up.Listener.Addr().String()))
	c, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(path string) int {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s on the kept connection: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("GET %s: the proxy closes the connection after its %d", path, resp.StatusCode)
		}
		return resp.StatusCode
	}
	if code := get("/slow"); code != http.StatusGatewayTimeout {
		t.Fatalf("GET /slow: %d, want 504", code)
	}
	time.Sleep(1500 * time.Millisecond) // past the 504's write bound, a second (httpconn.writeGrace)
	if code := get("/fast"); code != http.StatusOK {
		t.Fatalf("GET /fast: %d, want 200", code)
	}
}

// smallResponseSetup serves, behind listener "egress" with its
// connection manager changed by hcm, a route to an upstream that answers
// 3,000 bytes of declared length (the proxy does not flush as it copies
// them), with opts. It returns the harness.
func smallResponseSetup(t *testing.T, hcm func(*hcmv3.HttpConnectionManager), opts ...func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, opts...)
	body := strings.Repeat("x", 3000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(up.Close)
	h.push(
		httpListener("egress", httpManager("egress", "rds", hcm)),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "small"))),
		edsCluster("small"), cla("small", up.Listener.Addr().String()))
	return h
}

// TestSlowReaderLastFlush: a client pipelines requests for small
// responses and never reads. Each response fits the connection's write
// buffer, so the handler returns, with its timeouts stopped, before the
// write that blocks: the last flush. The idle timeout (here 300 ms; the
// route timeout is the default 15 s) bounds it, and the connection
// closes, on both paths. The goroutine path held it for good.
func TestSlowReaderLastFlush(t *testing.T) {
	for name, opts := range map[string][]func(*Config){"goroutines": {goroutinePath}, "loops": nil} {
		t.Run(name, func(t *testing.T) { slowReaderLastFlush(t, opts...) })
	}
}

func slowReaderLastFlush(t *testing.T, opts ...func(*Config)) {
	h := smallResponseSetup(t, func(m *hcmv3.HttpConnectionManager) {
		m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(300 * time.Millisecond)}
	}, opts...)
	c, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	sent := make(chan struct{})
	go func() { // ends when the proxy closes the connection, or the test does
		defer close(sent)
		req := []byte("GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
		for range 20000 {
			if _, err := c.Write(req); err != nil {
				return
			}
		}
	}()
	waitUntil(t, 5*time.Second, "the responses fill the socket buffers", func() bool {
		return h.stat("http.egress.downstream_rq_total") >= 100
	})
	waitUntil(t, 5*time.Second, "the proxy closes the connection the client does not read", func() bool {
		return h.stat("http.egress.downstream_cx_active") == 0
	})
	if got := h.stat("http.egress.downstream_cx_idle_timeout"); got != 1 {
		t.Errorf("downstream_cx_idle_timeout = %d, want 1", got)
	}
	c.Close()
	<-sent
}

// TestSlowReaderLastFlushH2: the same over HTTP/2, a client that gives the
// proxy no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0) asks for a
// small response: it is reset (INTERNAL_ERROR, as x/net resets a stream
// whose write deadline passed) once stream_flush_timeout passes without
// the window opening, and counted as Envoy counts it, on both paths.
func TestSlowReaderLastFlushH2(t *testing.T) {
	for name, opts := range map[string][]func(*Config){"goroutines": {goroutinePath}, "loops": nil} {
		t.Run(name, func(t *testing.T) { slowReaderLastFlushH2(t, opts...) })
	}
}

func slowReaderLastFlushH2(t *testing.T, opts ...func(*Config)) {
	h := smallResponseSetup(t, func(m *hcmv3.HttpConnectionManager) {
		m.StreamFlushTimeout = durationpb.New(300 * time.Millisecond)
	}, opts...)
	cl := dialH2(t, h.addr("egress"))
	if err := cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	if err := cl.headers(1, "/small"); err != nil {
		t.Fatal(err)
	}
	_ = cl.bw.Flush()
	waitUntil(t, 5*time.Second, "the request reached the proxy", func() bool { return h.stat("http.egress.downstream_rq_total") >= 1 })
	reset := false
	for f := range cl.frames {
		if f.typ == http2.FrameRSTStream && f.stream == 1 {
			if f.code != http2.ErrCodeInternal {
				t.Errorf("RST_STREAM %v, want INTERNAL_ERROR", f.code)
			}
			reset = true
			break
		}
	}
	if !reset {
		t.Fatal("the connection ended without a RST_STREAM of the stalled stream")
	}
	waitUntil(t, 5*time.Second, "the proxy ends the stream the client gives no window", func() bool {
		return h.stat("http.egress.downstream_rq_active") == 0
	})
	if got := h.stat("http2.tx_flush_timeout"); got != 1 {
		t.Errorf("http2.tx_flush_timeout = %d, want 1", got)
	}
	// Its end never went out: Envoy's connection manager completes the
	// request's timespan only once the codec sent the frame with
	// END_STREAM (onCodecEncodeComplete), so a stream reset before
	// records none.
	if got := histogramCount(t, h, "envoy_http_downstream_rq_time", `envoy_http_conn_manager_prefix="egress"`); got != "0" {
		t.Errorf("downstream_rq_time count %s, want 0", got)
	}
}
