package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestH2WindowStalledStreamSamePaths: on one client connection, stream A
// goes to an upstream that takes none of its body (its window for A stays
// 0) and the client sends A all its windows let, first; stream B's
// upload, 3 MiB, three stream windows, then completes on every path. The
// connection's window was the stream's (1 MiB), credited only as bytes
// are passed on: A held all of it and B got nothing more, head-of-line
// blocked behind A for as long as A stood (Envoy's edge best practice
// gives a connection 16 stream windows; its defaults 256 MiB each).
func TestH2WindowStalledStreamSamePaths(t *testing.T) {
	up := windowUpstream(t, nil)
	const bodyB = 3 << 20
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
				edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
				cla("h2", up))
			cl := dialWindowClient(t, h.addr("egress"))
			const a, b = 1, 3
			cl.open(a, "/stall")
			cl.open(b, "/count")
			var sentA, sentB int
			chunk := make([]byte, 16384)
			for sentB < bodyB {
				switch n := min(len(chunk), cl.avail(a)); {
				case n > 0:
					cl.data(a, chunk[:n], false)
					sentA += n
				default:
					n = min(len(chunk), cl.avail(b), bodyB-sentB)
					if n == 0 {
						if !cl.await() {
							t.Fatalf("no window for 10 s: stream A sent %d bytes, B %d of %d; the connection's window %d",
								sentA, sentB, bodyB, cl.conn)
						}
						continue
					}
					cl.data(b, chunk[:n], sentB+n == bodyB)
					sentB += n
				}
			}
			for cl.answers[b] == "" {
				if !cl.await() {
					t.Fatalf("no answer to B for 10 s (A sent %d bytes)", sentA)
				}
			}
			t.Logf("A sent %d bytes, stalled; B's %d bytes answered %s", sentA, bodyB, cl.answers[b])
			if want := "200 x-got " + strconv.Itoa(bodyB); cl.answers[b] != want {
				t.Errorf("B answered %q, want %q", cl.answers[b], want)
			}
			if cl.answers[a] != "" {
				t.Errorf("A answered %q before its body ended", cl.answers[a])
			}
		})
	}
}

// TestH2WindowsFromOptionsSamePaths: every path gives a client the
// windows of its connection manager's http2_protocol_options
// (initial_stream_window_size in SETTINGS_INITIAL_WINDOW_SIZE,
// initial_connection_window_size by a WINDOW_UPDATE right after), and an
// HTTP/2 upstream its cluster's, from typed_extension_protocol_options or
// the deprecated http2_protocol_options; unset, weft's 1 MiB and 4 MiB
// toward clients, and on the loops toward upstreams (the goroutine
// path's Transport keeps x/net's). weft accepted the fields and gave 1
// MiB, stream and connection, whatever they said.
func TestH2WindowsFromOptionsSamePaths(t *testing.T) {
	windows := func(stream, conn uint32) *corev3.Http2ProtocolOptions {
		return &corev3.Http2ProtocolOptions{InitialStreamWindowSize: wrapperspb.UInt32(stream),
			InitialConnectionWindowSize: wrapperspb.UInt32(conn)}
	}
	typed := func(o *corev3.Http2ProtocolOptions) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: o}}}})}
		}
	}
	deprecated := func(o *corev3.Http2ProtocolOptions) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = o }
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			seen := make(chan string, 16)
			up := windowUpstream(t, seen)
			h := newHarness(t, p.on)
			set := func(m *hcmv3.HttpConnectionManager) { m.Http2ProtocolOptions = windows(100000, 3000000) }
			h.push(httpListener("set", httpManager("set", "rds-typed", set)),
				httpListener("deprecated", httpManager("deprecated", "rds-deprecated", set)),
				httpListener("unset", httpManager("unset", "rds-unset")),
				routeConfig("rds-typed", vhost("v", []string{"*"}, routeTo("/", "typed"))),
				routeConfig("rds-deprecated", vhost("v", []string{"*"}, routeTo("/", "deprecated"))),
				routeConfig("rds-unset", vhost("v", []string{"*"}, routeTo("/", "unset"))),
				edsCluster("typed", typed(windows(200000, 5000000))), cla("typed", up),
				edsCluster("deprecated", deprecated(windows(70000, 131071))), cla("deprecated", up),
				edsCluster("unset", deprecated(&corev3.Http2ProtocolOptions{})), cla("unset", up))
			upUnset := "stream 1048576, connection 4194304" // the loops'
			if p.goroutines || p.h2Goroutines {
				upUnset = "stream 4194304, connection 1073807359" // x/net's Transport's
			}
			for _, c := range []struct{ listener, client, upstream string }{
				{"set", "stream 100000, connection 3000000", "stream 200000, connection 5000000"},
				{"deprecated", "stream 100000, connection 3000000", "stream 70000, connection 131071"},
				{"unset", "stream 1048576, connection 4194304", upUnset},
			} {
				cl := dialWindowClient(t, h.addr(c.listener))
				if got := cl.granted(); got != c.client {
					t.Errorf("%s: the client was given %s; want %s", c.listener, got, c.client)
				}
				cl.open(1, "/get")
				cl.end(1)
				for cl.answers[1] == "" {
					if !cl.await() {
						t.Fatalf("%s: no answer for 10 s", c.listener)
					}
				}
				select {
				case got := <-seen:
					if got != c.upstream {
						t.Errorf("%s: the upstream was given %s; want %s", c.listener, got, c.upstream)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: no upstream connection", c.listener)
				}
				_ = cl.c.Close()
			}
		})
	}
}

// windowUpstream serves h2c on loopback until the test ends: it gives
// the proxy a stream window of 0 (SETTINGS_INITIAL_WINDOW_SIZE) and
// opens none for a stream to /stall, which so takes no body; other
// streams get all the window they want and are answered, once their
// body ended, 200 with x-got the body's length. Each connection tells
// seen (when not nil) the windows the proxy gave it: "stream S,
// connection C", C counting RFC 9113's initial 65,535.
func windowUpstream(t *testing.T, seen chan<- string) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { serveWindowUpstream(c, seen) }) // ends when the proxy closes the connection
}

func serveWindowUpstream(c net.Conn, seen chan<- string) {
	defer c.Close()
	w := acceptRawH2(c, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if w == nil {
		return
	}
	got := map[uint32]int{} // body bytes of the streams read
	stream, told := uint32(65535), false
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			return
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					stream = v
				}
				_ = w.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame:
			if id == 0 && !told && seen != nil {
				seen <- fmt.Sprintf("stream %d, connection %d", stream, 65535+f.Increment)
			}
			told = told || id == 0
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = w.fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			if f.PseudoValue("path") == "/stall" {
				break
			}
			got[id] = 0
			_ = w.fr.WriteWindowUpdate(id, 1<<30)
			if f.StreamEnded() {
				w.headers(id, true, 0, ":status", "200", "x-got", "0")
			}
		case *http2.DataFrame:
			// The connection's window is credited for every stream's bytes:
			// /stall's too, which the proxy may send before this SETTINGS
			// closes its window; held, they must not close the others'.
			if l := f.Header().Length; l > 0 {
				_ = w.fr.WriteWindowUpdate(0, l)
			}
			n, ok := got[id]
			if !ok {
				break
			}
			got[id] = n + len(f.Data())
			if f.StreamEnded() {
				w.headers(id, true, 0, ":status", "200", "x-got", strconv.Itoa(got[id]))
			}
		}
		_ = w.bw.Flush()
	}
}

// windowClient is a raw HTTP/2 client that keeps count of the windows
// the proxy gives it.
type windowClient struct {
	t       *testing.T
	c       net.Conn
	bw      *bufio.Writer
	fr      *http2.Framer
	hbuf    bytes.Buffer
	enc     *hpack.Encoder
	in      chan http2Event // closed when the connection ends
	first   http2Event      // the proxy's first SETTINGS
	update  int64           // the connection's first WINDOW_UPDATE, 0 before it
	conn    int64           // what it may send on the connection
	init    int64           // the proxy's SETTINGS_INITIAL_WINDOW_SIZE
	streams map[uint32]int64
	answers map[uint32]string // a stream's answer: "<status> x-got <value>", "RST_STREAM <code>"
}

// http2Event is what windowClient reads of a frame.
type http2Event struct {
	typ      http2.FrameType
	stream   uint32
	ack      bool
	initWin  uint32 // SETTINGS_INITIAL_WINDOW_SIZE, when hasInit
	hasInit  bool
	incr     uint32 // WINDOW_UPDATE's
	answer   string // HEADERS', RST_STREAM's, GOAWAY's
	goingOff bool   // GOAWAY
}

// dialWindowClient starts HTTP/2 to addr and waits for the proxy's
// SETTINGS; the test's end closes the connection.
func dialWindowClient(t *testing.T, addr string) *windowClient {
	t.Helper()
	c := dialRaw(t, addr)
	cl := &windowClient{t: t, c: c, bw: bufio.NewWriter(c), in: make(chan http2Event, 1<<16), conn: 65535, init: 65535,
		streams: map[uint32]int64{}, answers: map[uint32]string{}}
	cl.fr = http2.NewFramer(cl.bw, nil)
	cl.enc = hpack.NewEncoder(&cl.hbuf)
	_, _ = io.WriteString(cl.bw, http2.ClientPreface)
	_ = cl.fr.WriteSettings()
	_ = cl.bw.Flush()
	rf := http2.NewFramer(nil, c)
	rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	go readWindowEvents(rf, cl.in) // ends when the connection does (closed by dialRaw's cleanup)
	for cl.first.typ != http2.FrameSettings {
		if !cl.await() {
			t.Fatal("no SETTINGS from the proxy")
		}
	}
	return cl
}

func readWindowEvents(rf *http2.Framer, in chan<- http2Event) {
	defer close(in)
	for {
		f, err := rf.ReadFrame()
		if err != nil {
			return
		}
		e := http2Event{typ: f.Header().Type, stream: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			e.ack = f.IsAck()
			e.initWin, e.hasInit = f.Value(http2.SettingInitialWindowSize)
		case *http2.WindowUpdateFrame:
			e.incr = f.Increment
		case *http2.MetaHeadersFrame:
			e.answer = f.PseudoValue("status")
			for _, hf := range f.RegularFields() {
				if hf.Name == "x-got" {
					e.answer += " x-got " + hf.Value
				}
			}
		case *http2.RSTStreamFrame:
			e.answer = "RST_STREAM " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			e.answer, e.goingOff = "GOAWAY "+f.ErrCode.String(), true
		}
		in <- e // the test reads every frame until it ends; the buffer holds what comes after
	}
}

// await flushes what was written, then applies the next frame the proxy
// sent; false when none came for 10 s or the connection ended.
func (cl *windowClient) await() bool {
	_ = cl.bw.Flush()
	select {
	case e, ok := <-cl.in:
		if !ok {
			return false
		}
		cl.apply(e)
		for len(cl.in) > 0 { // and what else came
			cl.apply(<-cl.in)
		}
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

func (cl *windowClient) apply(e http2Event) {
	switch e.typ {
	case http2.FrameSettings:
		if e.ack {
			return
		}
		if cl.first.typ != http2.FrameSettings {
			cl.first = e
		}
		if e.hasInit {
			for id := range cl.streams {
				cl.streams[id] += int64(e.initWin) - cl.init
			}
			cl.init = int64(e.initWin)
		}
		_ = cl.fr.WriteSettingsAck()
	case http2.FrameWindowUpdate:
		if e.stream == 0 {
			if cl.update == 0 {
				cl.update = int64(e.incr)
			}
			cl.conn += int64(e.incr)
		} else {
			cl.streams[e.stream] += int64(e.incr)
		}
	case http2.FrameHeaders, http2.FrameRSTStream:
		if cl.answers[e.stream] == "" {
			cl.answers[e.stream] = e.answer
		}
	case http2.FrameGoAway:
		cl.t.Fatalf("the proxy sent %s", e.answer)
	}
}

// granted is what the proxy's first frames gave: "stream S, connection
// C" (C counting RFC 9113's initial 65,535).
func (cl *windowClient) granted() string {
	for cl.update == 0 {
		if !cl.await() {
			cl.t.Fatal("no WINDOW_UPDATE of the connection from the proxy")
		}
	}
	stream := uint32(65535)
	if cl.first.hasInit {
		stream = cl.first.initWin
	}
	return fmt.Sprintf("stream %d, connection %d", stream, 65535+cl.update)
}

// open sends a POST's HEADERS on stream id, its body to follow.
func (cl *windowClient) open(id uint32, path string) {
	cl.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true})
	cl.streams[id] = cl.init
}

// avail is what the windows let the client send on stream id now.
func (cl *windowClient) avail(id uint32) int { return int(max(0, min(cl.conn, cl.streams[id]))) }

// data sends b on stream id (within avail), ending it if end.
func (cl *windowClient) data(id uint32, b []byte, end bool) {
	_ = cl.fr.WriteData(id, end, b)
	cl.conn -= int64(len(b))
	cl.streams[id] -= int64(len(b))
}

// end ends stream id's body with an empty DATA frame.
func (cl *windowClient) end(id uint32) { cl.data(id, nil, true) }
