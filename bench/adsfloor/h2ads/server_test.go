package h2ads

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

const adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

// recorder is a Handler that hands what it sees to the test.
type recorder struct {
	opened chan *Stream
	reqs   chan *discovery.DiscoveryRequest
	closed chan error
}

func newRecorder() *recorder {
	return &recorder{opened: make(chan *Stream, 16), reqs: make(chan *discovery.DiscoveryRequest, 1024), closed: make(chan error, 16)}
}

func (r *recorder) Open(s *Stream) { r.opened <- s }

func (r *recorder) Message(s *Stream, msg []byte) {
	req := &discovery.DiscoveryRequest{}
	if err := proto.Unmarshal(msg, req); err != nil {
		req.ErrorDetail = nil
		req.TypeUrl = "undecodable: " + err.Error()
	}
	r.reqs <- req
}

func (r *recorder) Closed(s *Stream, err error) { r.closed <- err }

func serve(t *testing.T, h Handler, opts Options) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(adsPath, h, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }() // ends with srv.Close below
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) discovery.AggregatedDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return discovery.NewAggregatedDiscoveryServiceClient(cc)
}

func recv[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing arrived in 10 s")
		panic("unreachable")
	}
}

// response is a DiscoveryResponse's encoding in two parts, as the
// benchmark sends it: the body, then the nonce's field.
func response(t *testing.T, version, nonce string, pad int) [][]byte {
	t.Helper()
	body, err := proto.Marshal(&discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		Canary: pad > 0, ControlPlane: &core.ControlPlane{Identifier: strings.Repeat("x", pad)}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := proto.Marshal(&discovery.DiscoveryResponse{Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{body, n}
}

// TestServesGRPCClient: a grpc-go ADS client, dialled as weft proxy dials
// and with grpc-go's defaults, subscribes, gets pushes, ACKs each (the
// Handler decodes them) and ends its stream with OK.
func TestServesGRPCClient(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []grpc.DialOption
	}{
		{"weft proxy's windows", xdsclient.WindowOptions()},
		{"grpc-go defaults", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			ads := dial(t, serve(t, rec, Options{}), c.opts...)
			st, err := ads.StreamAggregatedResources(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "n0"}, TypeUrl: "rds"}); err != nil {
				t.Fatal(err)
			}
			s := recv(t, rec.opened)
			if got := recv(t, rec.reqs); got.GetNode().GetId() != "n0" {
				t.Fatalf("first request %v, want node n0", got)
			}
			for i := range 5 {
				version, nonce := fmt.Sprint("v", i), fmt.Sprint("nonce-", i)
				// Every third response is larger than a frame (16 KiB).
				if err := s.Send(response(t, version, nonce, (i%3)*20000)...); err != nil {
					t.Fatal(err)
				}
				resp, err := st.Recv()
				if err != nil {
					t.Fatalf("push %d: %v", i, err)
				}
				if resp.GetVersionInfo() != version || resp.GetNonce() != nonce || len(resp.GetControlPlane().GetIdentifier()) != (i%3)*20000 {
					t.Fatalf("push %d: got version %q nonce %q", i, resp.GetVersionInfo(), resp.GetNonce())
				}
				if err := st.Send(&discovery.DiscoveryRequest{VersionInfo: version, ResponseNonce: nonce, TypeUrl: "rds"}); err != nil {
					t.Fatal(err)
				}
				if ack := recv(t, rec.reqs); ack.GetResponseNonce() != nonce || ack.GetVersionInfo() != version {
					t.Fatalf("ACK %d: %v", i, ack)
				}
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != io.EOF {
				t.Fatalf("after CloseSend, Recv = %v, want EOF (status OK)", err)
			}
			if err := recv(t, rec.closed); err != nil {
				t.Fatalf("Closed(%v), want nil", err)
			}
			if err := s.Send(response(t, "late", "late", 0)...); !errors.Is(err, ErrClosed) {
				t.Fatalf("Send on an ended stream = %v, want ErrClosed", err)
			}
		})
	}
}

// TestUnknownMethod: another method of the service is answered with
// Unimplemented, and the connection keeps serving.
func TestUnknownMethod(t *testing.T) {
	rec := newRecorder()
	ads := dial(t, serve(t, rec, Options{}))
	d, err := ads.DeltaAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("delta stream: %v, want Unimplemented", err)
	}
	st, err := ads.StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: "rds"}); err != nil {
		t.Fatal(err)
	}
	recv(t, rec.opened)
}

// TestTooLargeRequest: a request above MaxRecvMsgSize ends the stream
// with ResourceExhausted.
func TestTooLargeRequest(t *testing.T) {
	rec := newRecorder()
	ads := dial(t, serve(t, rec, Options{MaxRecvMsgSize: 1000}))
	st, err := ads.StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: strings.Repeat("t", 2000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Recv = %v, want ResourceExhausted", err)
	}
	if err := recv(t, rec.closed); err == nil {
		t.Fatal("Closed(nil), want the stream's error")
	}
}

// rawConn is a client speaking HTTP/2 frame by frame.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	fr *http2.Framer
}

func rawDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(nc, nc)
	fr.AllowIllegalWrites = true
	return &rawConn{t: t, nc: nc, fr: fr}
}

func (c *rawConn) start() {
	if _, err := io.WriteString(c.nc, http2.ClientPreface); err != nil {
		c.t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		c.t.Fatal(err)
	}
}

// openStream sends a HEADERS frame opening stream id on path.
func (c *rawConn) openStream(id uint32, path string) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "x"}, {"content-type", "application/grpc"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b.Bytes(), EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// until reads frames until one satisfies match, and fails if the
// connection ends first.
func (c *rawConn) until(what string, match func(http2.Frame) bool) {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

// closed reads frames until the connection ends, and fails if it does
// not end within the connection's deadline.
func (c *rawConn) closed() {
	c.t.Helper()
	for {
		_, err := c.fr.ReadFrame()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			c.t.Fatal("the connection is still open")
		case err != nil:
			return
		}
	}
}

func goAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

func rst(id uint32, code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == code
	}
}

// TestBadFrames: frames a server must refuse are answered with GOAWAY or
// RST_STREAM, and nothing panics; a connection error closes the
// connection.
func TestBadFrames(t *testing.T) {
	for _, c := range []struct {
		name  string
		send  func(c *rawConn)
		match func(http2.Frame) bool
		ends  bool // the connection is closed after
	}{
		{"DATA on stream 0", func(c *rawConn) { c.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) }, goAway(http2.ErrCodeProtocol), true},
		{"HEADERS on an even stream", func(c *rawConn) { c.openStream(2, adsPath) }, goAway(http2.ErrCodeProtocol), true},
		{"stream ids going down", func(c *rawConn) { c.openStream(5, adsPath); c.openStream(3, adsPath) }, goAway(http2.ErrCodeProtocol), true},
		{"DATA on an idle stream", func(c *rawConn) { c.fr.WriteData(9, false, []byte{0, 0, 0, 0, 0}) }, goAway(http2.ErrCodeProtocol), true},
		{"window overflow", func(c *rawConn) { c.fr.WriteWindowUpdate(0, 1<<31-1) }, goAway(http2.ErrCodeFlowControl), true},
		{"PUSH_PROMISE", func(c *rawConn) {
			c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, goAway(http2.ErrCodeProtocol), true},
		{"a bad SETTINGS value", func(c *rawConn) { c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 7}) }, goAway(http2.ErrCodeProtocol), true},
		{"WINDOW_UPDATE of 0 on a stream", func(c *rawConn) { c.openStream(1, adsPath); c.fr.WriteWindowUpdate(1, 0) }, rst(1, http2.ErrCodeProtocol), false},
		{"a compressed message", func(c *rawConn) { c.openStream(1, adsPath); c.fr.WriteData(1, false, []byte{1, 0, 0, 0, 1, 7}) }, rst(1, http2.ErrCodeNo), false},
		{"GET", func(c *rawConn) {
			var b bytes.Buffer
			enc := hpack.NewEncoder(&b)
			enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
			enc.WriteField(hpack.HeaderField{Name: ":path", Value: adsPath})
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b.Bytes(), EndHeaders: true})
		}, rst(1, http2.ErrCodeProtocol), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			rc := rawDial(t, serve(t, rec, Options{}))
			rc.start()
			c.send(rc)
			rc.until("the error", c.match)
			if c.ends {
				rc.closed()
			}
		})
	}
	t.Run("not HTTP/2", func(t *testing.T) {
		rc := rawDial(t, serve(t, newRecorder(), Options{}))
		io.WriteString(rc.nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if n, err := rc.nc.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes, want the connection closed", n)
		}
	})
	t.Run("PING answered", func(t *testing.T) {
		rc := rawDial(t, serve(t, newRecorder(), Options{}))
		rc.start()
		rc.fr.WritePing(false, [8]byte{1, 2, 3})
		rc.until("PING ACK", func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() && p.Data == [8]byte{1, 2, 3}
		})
	})
}

// TestClientStopsReading: a client that stops reading holds at most two
// responses of its stream in the server, whatever the pushes; Send never
// waits for it; and when it reads again it gets the latest.
func TestClientStopsReading(t *testing.T) {
	rec := newRecorder()
	const window = 64 << 10
	ads := dial(t, serve(t, rec, Options{}), grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	st, err := ads.StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: "rds"}); err != nil {
		t.Fatal(err)
	}
	s := recv(t, rec.opened)
	recv(t, rec.reqs)

	const pushes, size = 400, 40 << 10 // 16 MiB in all, 250 times the window
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	body := response(t, "v", "", size)[0]
	sent := make(chan error, 1)
	go func() { // ends when the pushes are sent
		for i := range pushes {
			nonce, _ := proto.Marshal(&discovery.DiscoveryResponse{Nonce: fmt.Sprint(i)})
			if err := s.Send(body, nonce); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	if err := recv(t, sent); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("heap grew by %d bytes over %d pushes of %d bytes to a client not reading", grew, pushes, size)
	}
	got := 0
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv after %d responses: %v", got, err)
		}
		got++
		if resp.GetNonce() == fmt.Sprint(pushes-1) {
			break
		}
		if got > 3 {
			t.Fatalf("response %d is nonce %s: more than the first, the one partly sent and the latest were kept", got, resp.GetNonce())
		}
	}
}
