package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// h2Upstream makes a cluster speak h2c upstream, as the translator does
// for http2 and grpc listeners.
func h2Upstream(c *clusterv3.Cluster) {
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
}

type testService struct {
	testpb.UnimplementedTestServiceServer
	unavailable atomic.Int32 // fail this many calls with UNAVAILABLE first
}

func (s *testService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if s.unavailable.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "try again")
	}
	if in.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(in.GetResponseStatus().GetCode()), in.GetResponseStatus().GetMessage())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t-value", "x-authority", strings.Join(md[":authority"], ",")))
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-stream-end", "done"))
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

// grpcUpstream serves svc with gRPC (opts its server's) on a loopback
// port until the test ends, and returns its address.
func grpcUpstream(t *testing.T, svc testpb.TestServiceServer, opts ...grpc.ServerOption) string {
	t.Helper()
	gs := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(gs, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }() // ends with gs.Stop in Cleanup
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// grpcClient is a TestService client of the proxy listener at addr, over
// h2c (opts added to its dial options), closed when the test ends.
func grpcClient(t *testing.T, addr string, opts ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

func TestGRPCPassthrough(t *testing.T) {
	h := newHarness(t)
	svc := &testService{}
	up := grpcUpstream(t, svc)
	retry := retryRoute("grpc", "unavailable", 2)
	retry.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/grpc.testing.TestService/UnaryCall"},
		Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}}
	logPath := filepath.Join(t.TempDir(), "access.log")
	h.push(
		httpListener("egress", httpManager("egress", "rds", withAccessLog(logPath, nil))),
		routeConfig("rds",
			vhost("grpc", []string{"grpc.local:8080"}, retry, routeTo("/", "grpc")),
			vhost("broken", []string{"broken.local:8080"}, routeTo("/", "missing"))),
		edsCluster("grpc", h2Upstream), cla("grpc", up))
	client := grpcClient(t, h.addr("egress"), grpc.WithAuthority("grpc.local:8080"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary with trailers", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != "hello" || trailer.Get("x-trailer")[0] != "t-value" {
			t.Fatalf("payload %q trailer %v", resp.GetPayload().GetBody(), trailer)
		}
		if got := trailer.Get("x-authority"); len(got) != 1 || got[0] != "grpc.local:8080" {
			t.Errorf("upstream :authority %v", got)
		}
	})
	t.Run("status passes through", func(t *testing.T) {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
		if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("retry on grpc unavailable", func(t *testing.T) {
		svc.unavailable.Store(2)
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("after 2 retries: %v", err)
		}
	})
	t.Run("bidirectional streaming", func(t *testing.T) {
		st, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			msg := fmt.Sprintf("m%d", i)
			if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatal(err)
			}
			// Each echo arrives before the next send: the proxy streams.
			out, err := st.Recv()
			if err != nil || string(out.GetPayload().GetBody()) != msg {
				t.Fatalf("echo %d: %v %q", i, err, out.GetPayload().GetBody())
			}
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
		if st.Trailer().Get("x-stream-end")[0] != "done" {
			t.Errorf("stream trailer %v", st.Trailer())
		}
	})
	t.Run("local reply is a gRPC status", func(t *testing.T) {
		_, err := grpcClient(t, h.addr("egress"), grpc.WithAuthority("broken.local:8080")).UnaryCall(ctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want Unavailable", err)
		}
	})
	waitUntil(t, 5*time.Second, "HTTP/2 in the access log", func() bool {
		l, _ := os.ReadFile(logPath)
		return strings.Contains(string(l), `"POST /grpc.testing.TestService/UnaryCall HTTP/2" 200 - `)
	})
}

func TestH2C(t *testing.T) {
	h := newHarness(t)
	var sawProto atomic.Int32
	up := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawProto.Store(int32(r.ProtoMajor))
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "h2c ok")
		w.Header().Set("X-Sum", "42")
	}))
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))),
		edsCluster("h2", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }),
		cla("h2", up))
	resp, err := h2cClient(t).Get("http://" + h.addr("egress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || sawProto.Load() != 2 || string(body) != "h2c ok" {
		t.Fatalf("downstream HTTP/%d, upstream HTTP/%d, body %q", resp.ProtoMajor, sawProto.Load(), body)
	}
	if resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer lost: %v", resp.Trailer)
	}
	if h.stat("http.egress.downstream_rq_http2_total") != 1 {
		t.Errorf("downstream_rq_http2_total = %d", h.stat("http.egress.downstream_rq_http2_total"))
	}
}

func TestTCPProxy(t *testing.T) {
	h := newHarness(t)
	echoLn := echoServer(t)
	logPath := filepath.Join(t.TempDir(), "tcp.log")
	tp := &tcpv3.TcpProxy{StatPrefix: "egress", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"},
		IdleTimeout: durationpb.New(time.Hour), AccessLog: []*accesslogv3.AccessLog{fileLog(logPath, nil)}}
	h.push(tcpListener("tcp", tp), edsCluster("echo"), cla("echo", echoLn.Addr().String()))
	c, err := net.Dial("tcp", h.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "ping\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after half-close: %v, want EOF", err)
	}
	waitUntil(t, 5*time.Second, "tcp access log line", func() bool {
		l, _ := os.ReadFile(logPath)
		return strings.Contains(string(l), " 5 5 ") // BYTES_RECEIVED BYTES_SENT
	})
	if h.stat("tcp.egress.downstream_cx_total") != 1 || h.stat("tcp.egress.downstream_cx_rx_bytes_total") != 5 {
		t.Errorf("tcp stats: total %d rx %d", h.stat("tcp.egress.downstream_cx_total"), h.stat("tcp.egress.downstream_cx_rx_bytes_total"))
	}
}

// echoServer listens on a loopback port and writes back what each
// connection sends until it closes; closed at the test's end.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // echo server; ends when ln is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // one echo connection; ends when either side closes
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln
}
