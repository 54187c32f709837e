package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// xnetH2CUpstream serves h over h2c with golang.org/x/net/http2's server
// until the test ends, and returns its address and how many of the
// connections it accepted are still open.
func xnetH2CUpstream(tb testing.TB, h http.Handler) (addr string, open *atomic.Int64) {
	return xnetH2CUpstreamWith(tb, &http2.Server{}, h)
}

// xnetH2CUpstreamWith is xnetH2CUpstream with the HTTP/2 server's settings.
func xnetH2CUpstreamWith(tb testing.TB, h2s *http2.Server, h http.Handler) (addr string, open *atomic.Int64) {
	open = new(atomic.Int64)
	srv := &http.Server{Handler: h2c.NewHandler(h, h2s)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(countingListener{ln, open}) }() // ends with srv.Close in Cleanup
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), open
}

// countingListener counts its connections until they are closed.
type countingListener struct {
	net.Listener
	open *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// TestH2CLoopsH2Upstream: with --h2loops, h2c streams to a cluster that
// speaks HTTP/2 go out over the loops' own HTTP/2 connections (counted by
// them; nothing handed off): the request's fields, bodies beyond both
// windows, trailers both ways, concurrent streams, an upstream that
// cannot be reached (503), and the loops' upstream connections closed
// once the proxy stops.
func TestH2CLoopsH2Upstream(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	up, open := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("Server", "app")
		fmt.Fprintf(w, "%s %s %s host=%s xfp=%s rid=%d cookie=%q te=%q trailer=%q len=%d\n", r.Method, r.URL.RequestURI(),
			r.Proto, r.Host, r.Header.Get("X-Forwarded-Proto"), len(r.Header.Get("X-Request-Id")),
			strings.Join(r.Header.Values("Cookie"), "|"), r.Header.Get("Te"), r.Trailer.Get("X-Req-Sum"), len(body))
		_, _ = w.Write(body)
		w.Header().Set("X-Sum", fmt.Sprint(len(body)))
	}))
	t.Cleanup(func() { // after the proxy stopped (cleanups run last first)
		waitUntil(t, 5*time.Second, "the loops' upstream connections closed", func() bool { return open.Load() == 0 })
	})
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/down", "dead"), routeTo("/", "h2"))),
		edsCluster("h2", h2Upstream), cla("h2", up), edsCluster("dead", h2Upstream), cla("dead", deadAddr(t)))
	cl := h2cClient(t)
	base := "http://" + h.addr("egress")
	do := func(req *http.Request) (string, *http.Response) {
		t.Helper()
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("X-Proto") != "HTTP/2.0" ||
			resp.Header.Get("Server") != "envoy" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Errorf("%s %s: HTTP/%d %d, headers %v", req.Method, req.URL, resp.ProtoMajor, resp.StatusCode, resp.Header)
		}
		return string(b), resp
	}
	req, _ := http.NewRequest("GET", base+"/get?q=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	b, resp := do(req)
	want := fmt.Sprintf("GET /get?q=1 HTTP/2.0 host=%s xfp=http rid=36 cookie=\"a=1; b=2\" te=\"\" trailer=\"\" len=0\n", h.addr("egress"))
	if b != want {
		t.Errorf("GET: upstream saw\n%s want\n%s", b, want)
	}
	if resp.Trailer.Get("X-Sum") != "0" {
		t.Errorf("GET: response trailers %v", resp.Trailer)
	}
	big := strings.Repeat("x", 300<<10) // beyond both windows, both ways
	req, _ = http.NewRequest("POST", base+"/post", strings.NewReader(big))
	req.Trailer = http.Header{"X-Req-Sum": nil}
	req.ContentLength = -1
	pr, pw := io.Pipe()
	req.Body = pr
	go func() { // ends once the body and its trailer are written
		_, _ = io.WriteString(pw, big)
		req.Trailer.Set("X-Req-Sum", "300k")
		_ = pw.Close()
	}()
	b, resp = do(req)
	if !strings.HasSuffix(b, big) || !strings.Contains(b, `trailer="300k" len=307200`) {
		t.Errorf("POST: upstream saw %.200q (%d bytes)", b, len(b))
	}
	if resp.Trailer.Get("X-Sum") != "307200" {
		t.Errorf("POST: response trailers %v", resp.Trailer)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() { // one stream; ends with its response
			defer wg.Done()
			resp, err := cl.Get(fmt.Sprintf("%s/c/%d", base, i))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), fmt.Sprintf("GET /c/%d ", i)) {
				t.Errorf("stream %d: %s", i, b)
			}
		}()
	}
	wg.Wait()
	resp, err := cl.Get(base + "/down")
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(b2) != refusedBody {
		t.Errorf("unreachable upstream: %d %q", resp.StatusCode, b2)
	}
	l := h.listener("egress")
	if n, handed, ups := l.LoopH2Conns(), l.HandedOff(), l.LoopH2UpstreamStreams(); n != 1 || handed != 0 || ups != 23 {
		t.Errorf("loops served %d h2c connections, handed off %d, sent %d streams to HTTP/2 upstreams; want 1, 0, 23", n, handed, ups)
	}
	for name, want := range map[string]int64{"http.egress.downstream_rq_2xx": 22, "http.egress.downstream_rq_5xx": 1,
		"cluster.h2.upstream_rq_total": 22, "cluster.h2.upstream_rq_2xx": 22, "cluster.dead.upstream_cx_connect_fail": 1} {
		if n := h.stat(name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
	if n := open.Load(); n < 1 {
		t.Errorf("upstream has %d connections open", n)
	}
	cl.CloseIdleConnections()
}

// streamService adds server streaming to testService.
type streamService struct{ testService }

func (s *streamService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, st testpb.TestService_StreamingOutputCallServer) error {
	for i, p := range in.GetResponseParameters() {
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(strings.Repeat("s", int(p.GetSize())))}}); err != nil {
			return err
		}
		if i == 1 {
			st.SetTrailer(metadata.Pairs("x-sent", "2+"))
		}
	}
	if in.GetResponseStatus() != nil {
		return status.Error(codes.Code(in.GetResponseStatus().GetCode()), in.GetResponseStatus().GetMessage())
	}
	return nil
}

// TestGRPCLoops: a real grpc-go client and server through weft proxy's
// loops (--h2loops), the cluster speaking HTTP/2 and the route without a
// retry policy: unary calls with trailers, a non-OK status in the
// trailers, server streaming past the windows, bidirectional streaming,
// a call the client cancels, and a local reply as a gRPC status; every
// stream on the loops.
func TestGRPCLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	up := grpcUpstream(t, &streamService{})
	rt := routeTo("/", "grpc")
	rt.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("dead", []string{"dead.local:8080"}, routeTo("/", "dead")), vhost("grpc", []string{"*"}, rt)),
		edsCluster("grpc", h2Upstream), cla("grpc", up), edsCluster("dead", h2Upstream), cla("dead", deadAddr(t)))
	client := grpcClient(t, h.addr("egress"), grpc.WithAuthority("grpc.local:8080"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var trailer metadata.MD
	resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetPayload().GetBody()) != "hello" || len(trailer.Get("x-trailer")) != 1 || trailer.Get("x-trailer")[0] != "t-value" {
		t.Fatalf("unary: payload %q trailer %v", resp.GetPayload().GetBody(), trailer)
	}
	if got := trailer.Get("x-authority"); len(got) != 1 || got[0] != "grpc.local:8080" {
		t.Errorf("unary: upstream :authority %v", got)
	}
	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
		t.Fatalf("unary status: got %v", err)
	}
	big := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(strings.Repeat("p", 200<<10))}}
	if resp, err := client.UnaryCall(ctx, big); err != nil || len(resp.GetPayload().GetBody()) != 200<<10 {
		t.Fatalf("unary 200 KB: %v", err)
	}

	ssTrailer := serverStreaming(ctx, t, client, []*testpb.ResponseParameters{{Size: 10}, {Size: 100 << 10}, {Size: 50 << 10}, {Size: 1}})
	if got := ssTrailer.Get("x-sent"); len(got) != 1 || got[0] != "2+" {
		t.Errorf("server streaming trailer %v", ssTrailer)
	}

	fd, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := fmt.Sprintf("m%d", i)
		if err := fd.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		out, err := fd.Recv() // each echo before the next send: the proxy streams
		if err != nil || string(out.GetPayload().GetBody()) != msg {
			t.Fatalf("echo %d: %v %q", i, err, out.GetPayload().GetBody())
		}
	}
	_ = fd.CloseSend()
	if _, err := fd.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}

	// A call the client cancels mid-stream: the upstream stream is reset.
	cctx, ccancel := context.WithCancel(ctx)
	fd2, err := client.FullDuplexCall(cctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = fd2.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}})
	if _, err := fd2.Recv(); err != nil {
		t.Fatal(err)
	}
	ccancel()
	if _, err := fd2.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v", err)
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("after a cancel: %v", err)
	}
	// A local reply (the upstream cannot be reached) is a gRPC status, as
	// the goroutine path answers it.
	_, err = grpcClient(t, h.addr("egress"), grpc.WithAuthority("dead.local:8080")).UnaryCall(ctx, &testpb.SimpleRequest{})
	if s := status.Convert(err); s.Code() != codes.Unavailable ||
		s.Message() != refusedBody {
		t.Fatalf("unreachable upstream: %v", err)
	}
	l := h.listener("egress")
	if n, handed, ups := l.LoopH2Conns(), l.HandedOff(), l.LoopH2UpstreamStreams(); n != 2 || handed != 0 || ups != 8 {
		t.Errorf("loops served %d h2c connections, handed off %d, sent %d streams upstream; want 2, 0, 8", n, handed, ups)
	}
	waitUntil(t, 5*time.Second, "the cancel counted", func() bool { return h.stat("http.egress.downstream_rq_rx_reset") == 1 })
}

// TestGRPCLoopsRetries: a route with App Mesh's gRPC retry policy (no
// per-try timeout) to an HTTP/2 cluster stays on the loops, and a call
// the server fails with UNAVAILABLE twice is retried there (the
// trailers-only response's grpc-status), counted by the cluster.
func TestGRPCLoopsRetries(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux")
	}
	h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = false, false })
	svc := &testService{}
	up := grpcUpstream(t, svc)
	rt := routeTo("/", "grpc")
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable,reset,refused-stream,connect-failure", NumRetries: u32(2)}
	h.push(httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("grpc", []string{"*"}, rt)),
		edsCluster("grpc", h2Upstream), cla("grpc", up))
	client := grpcClient(t, h.addr("egress"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc.unavailable.Store(2)
	body := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(strings.Repeat("r", 10<<10))}}
	if resp, err := client.UnaryCall(ctx, body); err != nil || len(resp.GetPayload().GetBody()) != 10<<10 {
		t.Fatalf("after 2 retries: %v", err)
	}
	svc.unavailable.Store(3)
	if _, err := client.UnaryCall(ctx, body); status.Code(err) != codes.Unavailable {
		t.Fatalf("past the retries: %v", err)
	}
	l := h.listener("egress")
	if n, handed, ups := l.LoopH2Conns(), l.HandedOff(), l.LoopH2UpstreamStreams(); n != 1 || handed != 0 || ups != 6 {
		t.Errorf("loops served %d h2c connections, handed off %d, sent %d streams upstream; want 1, 0, 6", n, handed, ups)
	}
	for name, want := range map[string]int64{"cluster.grpc.upstream_rq_retry": 4, "cluster.grpc.upstream_rq_retry_success": 1,
		"cluster.grpc.upstream_rq_retry_limit_exceeded": 1} {
		if n := h.stat(name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
}

// serverStreaming makes a server-streaming call asking for messages of
// the sizes given, ending in FailedPrecondition, checks each message's
// size and the status, and returns the call's trailer.
func serverStreaming(ctx context.Context, t *testing.T, client testpb.TestServiceClient, sizes []*testpb.ResponseParameters) metadata.MD {
	t.Helper()
	ss, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: sizes,
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "after the last"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range sizes {
		m, err := ss.Recv()
		if err != nil || len(m.GetPayload().GetBody()) != int(p.GetSize()) {
			t.Fatalf("server streaming message %d: %v (%d bytes)", i, err, len(m.GetPayload().GetBody()))
		}
	}
	if _, err := ss.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("server streaming end: %v", err)
	}
	return ss.Trailer()
}
