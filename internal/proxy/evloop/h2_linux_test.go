package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// h2TestRouter serves HTTP/2 on the loops with a ConfigRouter's routes.
type h2TestRouter struct{ *ConfigRouter }

func (r h2TestRouter) H2() (H2Settings, bool) {
	return H2Settings{MaxStreams: 4, MaxHeaderList: 8 << 10, ResetLifetime: time.Second,
		TooManyResets: func(ended, premature int64) bool { return premature >= 10 }}, true
}

func (r h2TestRouter) RouteH2(h proxyroute.Head) Target { return r.Route(h) }

// startH2 runs a loop serving h2c with every path routed to a backend.
func startH2(t *testing.T, mod ...func(*Config)) *Server {
	t.Helper()
	return startH2To(t, hostOf(backend(t, "a")), mod...)
}

// routesToA compiles a route configuration sending every path to
// cluster "a", the route most of the loops' HTTP/2 tests need.
func routesToA(t *testing.T) *proxyroute.Config {
	t.Helper()
	rc, err := proxyroute.Compile(&routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{{Name: "a",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"}}}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// startH2To runs a loop serving h2c with every path routed to the
// HTTP/1.1 server at hostport.
func startH2To(t *testing.T, hostport string, mod ...func(*Config)) *Server {
	t.Helper()
	rc := routesToA(t)
	r := h2TestRouter{&ConfigRouter{Routes: rc, Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(hostport)}}}}
	cfg := Config{Loops: 1, Router: r, H2: true}
	for _, m := range mod {
		m(&cfg)
	}
	srv, _ := start(t, cfg)
	return srv
}

// h2Raw is a test's raw HTTP/2 client connection.
type h2Raw struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialH2Raw(t *testing.T, srv *Server, preface string) *h2Raw {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &h2Raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.AllowIllegalWrites = true
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(c, preface); err != nil {
		t.Fatal(err)
	}
	if preface == http2.ClientPreface {
		_ = h.fr.WriteSettings()
	}
	return h
}

func (h *h2Raw) headers(id uint32, end bool, fields ...string) {
	h.hbuf.Reset()
	path := "/"
	if len(fields) >= 2 && fields[0] == ":path" {
		path, fields = fields[1], fields[2:]
	}
	fs := append([]string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", path}, fields...)
	for i := 0; i+1 < len(fs); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: fs[i], Value: fs[i+1]})
	}
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

// until reads frames until want says stop (true) or the connection ends;
// it returns the frame want stopped at, nil at the end.
func (h *h2Raw) until(want func(http2.Frame) bool) http2.Frame {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				h.t.Fatal("no answer within 10 s")
			}
			return nil
		}
		if want(f) {
			return f
		}
	}
}

// goAway returns the GOAWAY's code and checks the connection closes after it.
func (h *h2Raw) goAway() http2.ErrCode {
	h.t.Helper()
	f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if f == nil {
		h.t.Fatal("closed without GOAWAY")
	}
	code := f.(*http2.GoAwayFrame).ErrCode
	if h.until(func(http2.Frame) bool { return false }) != nil {
		h.t.Fatal("unreachable")
	}
	return code
}

// TestH2LoopFrameErrors: frames RFC 9113 makes connection errors end the
// connection with GOAWAY and the code it names, stream errors reset the
// stream with RST_STREAM; the loop goes on serving other connections.
func TestH2LoopFrameErrors(t *testing.T) {
	srv := startH2(t)
	conn := []struct {
		name string
		send func(h *h2Raw)
		code http2.ErrCode
	}{
		{"DATA on stream 0", func(h *h2Raw) { _ = h.fr.WriteData(0, false, []byte("x")) }, http2.ErrCodeProtocol},
		{"HEADERS on an even stream", func(h *h2Raw) { h.headers(2, true) }, http2.ErrCodeProtocol},
		{"HEADERS on a stream below the last", func(h *h2Raw) { h.headers(5, true); h.headers(3, true) }, http2.ErrCodeStreamClosed},
		{"frame over SETTINGS_MAX_FRAME_SIZE", func(h *h2Raw) { _ = h.fr.WriteData(1, false, make([]byte, 20000)) }, http2.ErrCodeFrameSize},
		{"CONTINUATION announcing 1 MiB", func(h *h2Raw) {
			_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}})
			_, _ = h.c.Write([]byte{0x10, 0, 0, byte(http2.FrameContinuation), 0, 0, 0, 0, 1, 0x84})
		}, http2.ErrCodeFrameSize},
		{"WINDOW_UPDATE of 0 on the connection", func(h *h2Raw) { _ = h.fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
		{"connection window overflow", func(h *h2Raw) { _ = h.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", func(h *h2Raw) {
			_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"DATA on an idle stream", func(h *h2Raw) { _ = h.fr.WriteData(7, false, []byte("x")) }, http2.ErrCodeProtocol},
		{"RST_STREAM on an idle stream", func(h *h2Raw) { _ = h.fr.WriteRSTStream(9, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"PUSH_PROMISE from the client", func(h *h2Raw) {
			_ = h.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", func(h *h2Raw) { _ = h.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol},
		{"bad HPACK", func(h *h2Raw) {
			_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
	}
	for _, tc := range conn {
		h := dialH2Raw(t, srv, http2.ClientPreface)
		tc.send(h)
		if code := h.goAway(); code != tc.code {
			t.Errorf("%s: GOAWAY %v, want %v", tc.name, code, tc.code)
		}
	}
	h := dialH2Raw(t, srv, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
	if code := h.goAway(); code != http2.ErrCodeProtocol {
		t.Errorf("bad preface: GOAWAY %v", code)
	}
	stream := []struct {
		name   string
		fields []string
		code   http2.ErrCode
	}{
		{"connection-specific header", []string{"connection", "keep-alive"}, http2.ErrCodeProtocol},
		{"transfer-encoding", []string{"transfer-encoding", "chunked"}, http2.ErrCodeProtocol},
		{"te other than trailers", []string{"te", "gzip"}, http2.ErrCodeProtocol},
		{"upper-case name", []string{"X-Up", "1"}, http2.ErrCodeProtocol},
		{"bad content-length", []string{"content-length", "x"}, http2.ErrCodeProtocol},
	}
	for _, tc := range stream {
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, true, tc.fields...)
		f := h.until(func(f http2.Frame) bool {
			_, ok := f.(*http2.RSTStreamFrame)
			_, away := f.(*http2.GoAwayFrame)
			return ok || away
		})
		rst, ok := f.(*http2.RSTStreamFrame)
		if !ok || rst.StreamID != 1 || rst.ErrCode != tc.code {
			t.Errorf("%s: got %v, want RST_STREAM %v on stream 1", tc.name, f, tc.code)
		}
		// The connection stays: the next stream is served.
		h.headers(3, true)
		if f := h.until(func(f http2.Frame) bool { return f.Header().StreamID == 3 }); f == nil {
			t.Errorf("%s: no answer on stream 3", tc.name)
		} else if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "200" {
			t.Errorf("%s: stream 3 got %v", tc.name, f)
		}
	}
	if n := srv.H2Conns(); n != int64(len(conn)+1+len(stream)) {
		t.Errorf("H2Conns = %d, want %d", n, len(conn)+1+len(stream))
	}
}

// TestH2LoopControlFrames: PING is answered, SETTINGS acknowledged with
// the limits advertised, streams beyond SETTINGS_MAX_CONCURRENT_STREAMS
// refused, a response larger than the stream's window waits for
// WINDOW_UPDATE, and rapid resets send the connection away.
func TestH2LoopControlFrames(t *testing.T) {
	srv := startH2(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	sf := h.until(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && !s.IsAck() }).(*http2.SettingsFrame)
	if v, _ := sf.Value(http2.SettingMaxConcurrentStreams); v != 4 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d", v)
	}
	if v, _ := sf.Value(http2.SettingMaxHeaderListSize); v != 8<<10 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d", v)
	}
	_ = h.fr.WritePing(false, [8]byte{1, 2, 3})
	p := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
	if !p.IsAck() || p.Data != [8]byte{1, 2, 3} {
		t.Errorf("PING answer %v", p)
	}
	// A 100,000-byte response with the stream's window at 1,000: 1,000
	// bytes come, the rest after WINDOW_UPDATE.
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	h.headers(1, true, ":path", "/big/100000")
	got := 0
	for got < 1000 {
		f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
		got += len(f.(*http2.DataFrame).Data())
	}
	if got != 1000 {
		t.Fatalf("%d bytes beyond a window of 1,000", got)
	}
	_ = h.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if f, err := h.fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok {
			t.Fatalf("DATA of %d bytes beyond the window", len(d.Data()))
		}
	}
	_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_ = h.fr.WriteWindowUpdate(1, 99000)
	_ = h.fr.WriteWindowUpdate(0, 99000) // the connection's window (65,535) is the other bound
	for got < 100000 {
		f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
		got += len(f.(*http2.DataFrame).Data())
		if f.(*http2.DataFrame).StreamEnded() {
			break
		}
	}
	if got != 100000 {
		t.Errorf("%d of 100,000 bytes", got)
	}

	// A chunked response comes as DATA without the chunks' framing.
	h.headers(3, true, ":path", "/chunked")
	var body []byte
	for {
		f := h.until(func(f http2.Frame) bool { return f.Header().StreamID == 3 })
		if f == nil {
			t.Fatal("connection ended")
		}
		if d, ok := f.(*http2.DataFrame); ok {
			body = append(body, d.Data()...)
			if d.StreamEnded() {
				break
			}
		}
	}
	if string(body) != "part0;part1;part2;" {
		t.Errorf("chunked response as %q", body)
	}

	// Rapid reset: HEADERS then RST_STREAM, again and again, to an
	// upstream that does not answer (one that did could end a stream
	// before its reset was read, and the stream would not count).
	hold := make(chan struct{})
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hold:
		}
	}))
	t.Cleanup(held.Close)
	t.Cleanup(func() { close(hold) }) // runs first: held.Close waits for its handlers
	h = dialH2Raw(t, startH2To(t, hostOf(held)), http2.ClientPreface)
	for i := range 30 {
		h.headers(uint32(2*i+1), true, ":path", "/slow")
		_ = h.fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
	}
	if code := h.goAway(); code != http2.ErrCodeNo {
		t.Errorf("rapid reset: GOAWAY %v, want NO_ERROR", code)
	}
}

// TestH2LoopLimits: a header list over SETTINGS_MAX_HEADER_LIST_SIZE is
// answered 431; a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS is
// refused while the others are open (held by a closed window here).
func TestH2LoopLimits(t *testing.T) {
	srv := startH2(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	var big []string
	for i := range 10 {
		big = append(big, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 1<<10))
	}
	h.headers(1, true, big...)
	f := h.until(func(f http2.Frame) bool { return f.Header().StreamID == 1 })
	if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "431" {
		t.Fatalf("over the header list limit: %v", f)
	}
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for i := range 4 {
		// A body the zero window holds back keeps each stream open
		// however the client's frames are split into reads (an empty
		// one ended them as soon as the upstream answered).
		h.headers(uint32(3+2*i), true, ":path", "/big/10")
	}
	h.headers(11, true) // the fifth open stream: the limit is 4
	f = h.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 11 ||
		(rst.ErrCode != http2.ErrCodeRefusedStream && rst.ErrCode != http2.ErrCodeProtocol) {
		t.Fatalf("fifth stream: %v", f)
	}
}

// TestH2LoopIdleTimeout: a connection whose last stream ended is closed
// after the idle timeout, with GOAWAY NO_ERROR.
func TestH2LoopIdleTimeout(t *testing.T) {
	srv := startH2(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true, ":path", "/big/70000") // beyond the first window: WINDOW_UPDATE needed
	got := 0
	h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
			if got >= 65535 && got < 70000 {
				_ = h.fr.WriteWindowUpdate(0, 10000)
				_ = h.fr.WriteWindowUpdate(1, 10000)
			}
			return d.StreamEnded()
		}
		return false
	})
	if got != 70000 {
		t.Fatalf("%d of 70,000 bytes", got)
	}
	start := time.Now()
	if code := h.goAway(); code != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v", code)
	}
	t.Logf("closed %v after the stream", time.Since(start))
}

// TestH2LoopIdleAfterSlowStream: the idle timeout passes while a stream
// waits for a slow upstream; once that stream ends (an upstream event,
// nothing from the client) the connection's idle timeout runs again.
func TestH2LoopIdleAfterSlowStream(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(600 * time.Millisecond)
		_, _ = io.WriteString(w, "late")
	}))
	t.Cleanup(slow.Close)
	srv := startH2(t, func(c *Config) {
		c.IdleTimeout = 300 * time.Millisecond
		r := c.Router.(h2TestRouter)
		r.Hosts = map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(hostOf(slow))}}
	})
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	if f := h.until(func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamEnded() }); f == nil {
		t.Fatal("no response")
	}
	start := time.Now()
	if code := h.goAway(); code != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed %v after its last stream, idle timeout 300 ms", d)
	}
}

// FuzzH2LoopFrames: whatever follows the preface, the loop answers or
// closes, and serves the next connection.
func FuzzH2LoopFrames(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82, 0x86, 0x84, 0x41, 0x01, 'x'}, EndStream: true, EndHeaders: true})
	f.Add(b.Bytes())
	_ = fr.WriteData(1, true, []byte("x"))
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := startH2(t)
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write(append([]byte(http2.ClientPreface), in...))
		_ = c.(*net.TCPConn).CloseWrite() // the loop sees the end of the input
		_, _ = io.Copy(io.Discard, c)     // until closed or the deadline
		c2, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 12)
		if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "HTTP/1.1 200" {
			t.Fatalf("the loop no longer serves: %q %v", buf, err)
		}
	})
}

// TestH2LoopResumesAfterSocketFull: a response far beyond h2MaxOut to a
// client whose windows allow all of it, and who reads only after a pause
// and sends nothing more: the socket fills, the upstream is paused, and
// the socket's draining (EPOLLOUT alone, no frame from the client)
// resumes it to the end.
func TestH2LoopResumesAfterSocketFull(t *testing.T) {
	srv := startH2(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	const size = 16 << 20
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	h.headers(1, true, ":path", fmt.Sprintf("/big/%d", size))
	time.Sleep(200 * time.Millisecond) // the socket fills meanwhile
	_ = h.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := 0
	f := h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
			return d.StreamEnded()
		}
		_, rst := f.(*http2.RSTStreamFrame)
		return rst
	})
	if f == nil || got != size {
		t.Fatalf("%d of %d bytes, then %v", got, size, f)
	}
}

// TestH2LoopTrailersAfterReset: trailers the client sends on a stream
// the proxy reset meanwhile are ignored (RFC 9113 5.1), not a
// connection error: the connection serves the next stream.
func TestH2LoopTrailersAfterReset(t *testing.T) {
	srv := startH2(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post", "content-length", "1")
	_ = h.fr.WriteData(1, false, []byte("xx")) // beyond its content-length: reset
	f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 1 {
		t.Fatalf("stream 1: %v", f)
	}
	h.hbuf.Reset()
	_ = h.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "1"})
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	h.headers(3, true)
	f = h.until(func(f http2.Frame) bool {
		_, away := f.(*http2.GoAwayFrame)
		return away || f.Header().StreamID == 3
	})
	if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "200" {
		t.Fatalf("after trailers on a reset stream: %v", f)
	}
}

// TestH2LoopStreamBadRequest: a stream whose request the HTTP/1.1
// parser refuses is answered 400 on its own; the connection is not in
// error (downstream_cx_protocol_error stays 0) and serves the next one.
func TestH2LoopStreamBadRequest(t *testing.T) {
	st := stats.NewStore()
	srv := startH2(t, func(c *Config) { c.Stats = st })
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true, ":path", "/a b")
	f := h.until(func(f http2.Frame) bool { return f.Header().StreamID == 1 })
	if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "400" {
		t.Fatalf("stream 1: %v", f)
	}
	h.headers(3, true)
	f = h.until(func(f http2.Frame) bool { return f.Header().StreamID == 3 })
	if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "200" {
		t.Fatalf("stream 3: %v", f)
	}
	if v, _ := st.Value("http.ingress.downstream_cx_protocol_error"); v != 0 {
		t.Errorf("downstream_cx_protocol_error = %d for a stream's error", v)
	}
}
