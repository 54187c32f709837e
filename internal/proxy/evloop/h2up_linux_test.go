package evloop

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2UpRouter routes every h2c stream to an HTTP/2 cluster, with retry
// when set.
type h2UpRouter struct {
	h2TestRouter
	retry *proxyroute.RetryPolicy
	idle  time.Duration // the cluster's idle timeout
}

func (r h2UpRouter) RouteH2(h proxyroute.Head) Target {
	t := r.Route(h)
	t.HTTP2, t.Retry, t.IdleTimeout = true, r.retry, r.idle
	return t
}

// rawUp is a test's raw HTTP/2 upstream connection, the proxy its client.
type rawUp struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	// The windows the proxy gave, as until read them: its
	// SETTINGS_INITIAL_WINDOW_SIZE (0 until one came) and its
	// connection WINDOW_UPDATEs (sendBody starts from them).
	init, connCredit int64
}

// startH2Up runs a loop serving h2c with every stream sent to an HTTP/2
// upstream the test plays (accept), which answers the proxy's preface
// with settings.
func startH2Up(t *testing.T, mod ...func(*Config)) (srv *Server, accept func(settings ...http2.Setting) *rawUp) {
	return startH2UpRetry(t, nil, mod...)
}

// openH2Up is startH2Up with one GET on stream 1 already at the upstream:
// the client's connection, the upstream's, and the upstream's stream id.
func openH2Up(t *testing.T) (h *h2Raw, u *rawUp, id uint32) {
	t.Helper()
	srv, accept := startH2Up(t)
	h = dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	u = accept()
	return h, u, u.request().StreamID
}

// until reads frames until want says stop; nil when the connection ends.
func (u *rawUp) until(want func(http2.Frame) bool) http2.Frame {
	u.t.Helper()
	for {
		f, err := u.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				u.t.Fatal("upstream: nothing within 10 s")
			}
			return nil
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
				u.init = int64(v)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				u.connCredit += int64(f.Increment)
			}
		}
		if want(f) {
			return f
		}
	}
}

// request reads the next request HEADERS.
func (u *rawUp) request() *http2.MetaHeadersFrame {
	u.t.Helper()
	f := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
	if f == nil {
		u.t.Fatal("upstream: closed before a request")
	}
	return f.(*http2.MetaHeadersFrame)
}

func (u *rawUp) headers(id uint32, end bool, fields ...string) {
	u.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = u.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	_ = u.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: u.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

func isRST(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }

func isHeaders(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }

// TestH2UpstreamRequest: the upstream gets the client's fields as
// decoded (no HTTP/1.1 head in between) plus weft's, the response's
// HEADERS, DATA and trailers come back, and a PING of the upstream's is
// answered.
func TestH2UpstreamRequest(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true, ":path", "/p?q=1", "x-a", "1", "te", "trailers", "cookie", "a=1", "cookie", "b=2")
	u := accept()
	req := u.request()
	got := []string{}
	for _, f := range req.Fields {
		if f.Name != "x-request-id" {
			got = append(got, f.Name+"="+f.Value)
		}
	}
	want := ":method=GET :scheme=http :authority=x :path=/p?q=1 x-a=1 te=trailers cookie=a=1 cookie=b=2 x-forwarded-proto=http"
	if strings.Join(got, " ") != want || len(req.PseudoValue("path")) == 0 || !req.StreamEnded() {
		t.Errorf("upstream got %s (ended %v), want %s", strings.Join(got, " "), req.StreamEnded(), want)
	}
	_ = u.fr.WritePing(false, [8]byte{1, 2, 3})
	ack := u.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
	if ack == nil || ack.(*http2.PingFrame).Data != [8]byte{1, 2, 3} {
		t.Fatalf("PING not answered: %v", ack)
	}
	u.headers(req.StreamID, false, ":status", "200", "content-type", "application/grpc", "connection", "close")
	_ = u.fr.WriteData(req.StreamID, false, []byte("body"))
	u.headers(req.StreamID, true, "grpc-status", "7", "grpc-message", "denied")
	var fields []string
	var body []byte
	h.until(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				switch hf.Name {
				case "x-envoy-upstream-service-time":
				case "date":
					fields = append(fields, "date") // the proxy's: the upstream sent none
				default:
					fields = append(fields, hf.Name+"="+hf.Value)
				}
			}
			return f.StreamEnded()
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			return f.StreamEnded()
		}
		return false
	})
	want = ":status=200 content-type=application/grpc server=envoy date grpc-status=7 grpc-message=denied"
	if strings.Join(fields, " ") != want || string(body) != "body" {
		t.Errorf("client got %s, body %q; want %s", strings.Join(fields, " "), body, want)
	}
}

// TestH2UpstreamResets: RST_STREAM both ways, GOAWAY from the upstream.
func TestH2UpstreamResets(t *testing.T) {
	t.Run("upstream reset before the response", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, true)
		u := accept()
		_ = u.fr.WriteRSTStream(u.request().StreamID, http2.ErrCodeInternal)
		f := h.until(isHeaders)
		if f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "503" {
			t.Fatalf("client got %v, want 503", f)
		}
	})
	t.Run("upstream reset mid-response", func(t *testing.T) {
		h, u, id := openH2Up(t)
		u.headers(id, false, ":status", "200")
		_ = u.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		if f := h.until(isRST); f == nil || f.(*http2.RSTStreamFrame).StreamID != 1 {
			t.Fatalf("client got %v, want RST_STREAM on 1", f)
		}
		h.headers(3, true) // the connection goes on
		id = u.request().StreamID
		u.headers(id, true, ":status", "204")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "204" {
			t.Fatalf("next stream: %v", f)
		}
	})
	t.Run("client reset", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, false)
		u := accept()
		id := u.request().StreamID
		_ = h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		f := u.until(isRST)
		if f == nil || f.(*http2.RSTStreamFrame).StreamID != id || f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeCancel {
			t.Fatalf("upstream got %v, want RST_STREAM CANCEL", f)
		}
	})
	t.Run("upstream GOAWAY", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, true)
		h.headers(3, true)
		u := accept()
		first := u.request().StreamID
		u.request()
		_ = u.fr.WriteGoAway(first, http2.ErrCodeNo, nil)
		// Stream 3 was not processed: refused, for the client to retry.
		if f := h.until(isRST); f == nil || f.(*http2.RSTStreamFrame).StreamID != 3 ||
			f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeRefusedStream {
			t.Fatalf("client got %v, want RST_STREAM REFUSED_STREAM on 3", f)
		}
		// Stream 1 finishes, then the connection is closed.
		u.headers(first, true, ":status", "200")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).StreamID != 1 {
			t.Fatalf("client got %v, want stream 1's response", f)
		}
		if f := u.until(func(http2.Frame) bool { return false }); f != nil {
			t.Fatal("unreachable")
		}
		// A new stream goes over a new connection.
		h.headers(5, true)
		u2 := accept()
		u2.headers(u2.request().StreamID, true, ":status", "200")
		if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).StreamID != 5 {
			t.Fatalf("client got %v, want stream 5's response", f)
		}
	})
}

// TestH2UpstreamConcurrency: past the upstream's
// SETTINGS_MAX_CONCURRENT_STREAMS a second connection is opened.
func TestH2UpstreamConcurrency(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, true)
	u := accept(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	id := u.request().StreamID
	u.until(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	h.headers(3, true)
	u2 := accept()
	u2.headers(u2.request().StreamID, true, ":status", "201")
	u.headers(id, true, ":status", "200")
	codes := map[uint32]string{}
	h.until(func(f http2.Frame) bool {
		if m, ok := f.(*http2.MetaHeadersFrame); ok {
			codes[m.StreamID] = m.PseudoValue("status")
		}
		return len(codes) == 2
	})
	if codes[1] != "200" || codes[3] != "201" {
		t.Fatalf("responses %v", codes)
	}
}

// FuzzH2UpstreamFrames: any bytes from an HTTP/2 upstream in answer to a
// stream, then its close: the client's stream is answered or reset, and
// its next stream is served over a new upstream connection (no panic, no
// stuck loop).
func FuzzH2UpstreamFrames(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettingsAck()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	f.Add(append([]byte(nil), b.Bytes()...))
	_ = fr.WriteData(1, false, []byte("data"))
	_ = fr.WriteWindowUpdate(0, 10)
	_ = fr.WritePing(false, [8]byte{1})
	f.Add(append([]byte(nil), b.Bytes()...))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x40, 1, 'a', 1, 'b'}, EndStream: true, EndHeaders: true})
	f.Add(append([]byte(nil), b.Bytes()...))
	_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	f.Add(append([]byte(nil), b.Bytes()...))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.c.SetDeadline(time.Now().Add(5 * time.Second))
		h.headers(1, true)
		u := accept()
		u.request()
		_, _ = u.c.Write(in)
		u.c.Close()
		if f := h.until(func(f http2.Frame) bool {
			m, ok := f.(*http2.MetaHeadersFrame)
			return ok && m.StreamEnded() || isRST(f) || func() bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamEnded() }()
		}); f == nil {
			t.Fatal("the client's stream was neither answered nor reset")
		}
		h.headers(3, true)
		u2 := accept()
		u2.headers(u2.request().StreamID, true, ":status", "204")
		f := h.until(func(f http2.Frame) bool { m, ok := f.(*http2.MetaHeadersFrame); return ok && m.StreamID == 3 })
		if f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "204" {
			t.Fatalf("next stream: %v", f)
		}
	})
}

// TestH2UpstreamManyLargeResponses: eight 2 MB responses at once from
// x/net's h2c server through one client connection, which opens its
// windows wide: more than the connection's output bound waits at once,
// so streams are paused for room and resumed as it drains, and each
// resumption credits the upstream; every byte arrives.
func TestH2UpstreamManyLargeResponses(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 2<<20)
	up := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(big)
	}), &http2.Server{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }() // ends with up.Close in Cleanup
	t.Cleanup(func() { _ = up.Close() })
	rc := routesToA(t)
	r := h2UpRouter{h2TestRouter: h2TestRouter{&ConfigRouter{Routes: rc,
		Hosts: map[string][]netip.AddrPort{"a": {netip.MustParseAddrPort(ln.Addr().String())}}}}}
	srv, _ := start(t, Config{Loops: 1, Router: r, H2: true})
	h := dialH2Raw(t, srv, http2.ClientPreface)
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	for id := uint32(1); id <= 7; id += 2 {
		h.headers(id, true)
	}
	time.Sleep(300 * time.Millisecond) // the proxy's output fills before the client reads
	got := map[uint32]int{}
	done := 0
	h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got[d.StreamID] += len(d.Data())
			if d.StreamEnded() {
				done++
			}
		}
		return done == 4
	})
	for id := uint32(1); id <= 7; id += 2 {
		if got[id] != len(big) {
			t.Errorf("stream %d: %d bytes, want %d", id, got[id], len(big))
		}
	}
}

// TestH2UpstreamBodyBufferReused: the buffer that holds a request body on
// its way to an HTTP/2 upstream goes back to the loop's free list once
// sent, so that a stream of uploads (every gRPC call has a body) takes
// its buffers from there. Sent whole, the buffer was resliced past its
// bytes, and putBuf, which keeps only buffers of bufSize, dropped it: one
// 16 KiB buffer made per request.
func TestH2UpstreamBodyBufferReused(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	const calls = 50
	var u *rawUp
	var made0 int64
	for i := range calls {
		id := uint32(2*i + 1)
		h.headers(id, false, ":path", "/upload", "content-type", "application/grpc")
		_ = h.fr.WriteData(id, true, []byte("\x00\x00\x00\x00\x03abc"))
		if u == nil {
			u = accept()
		}
		req := u.request()
		if d := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }); d == nil || !d.(*http2.DataFrame).StreamEnded() {
			t.Fatalf("call %d: upstream got %v, want the body with END_STREAM", i, d)
		}
		u.headers(req.StreamID, true, ":status", "200")
		if f := h.until(func(f http2.Frame) bool { return f.Header().StreamID == id && isHeaders(f) }); f == nil {
			t.Fatalf("call %d: no response", i)
		}
		if i == 0 {
			made0 = srv.bufsMade.Load() // the first call's buffers: the free list starts empty
		}
	}
	if made := srv.bufsMade.Load() - made0; made > 2 {
		t.Errorf("the loop made %d buffers over %d more calls with a body; want them reused (at most 2)", made, calls-1)
	}
}
