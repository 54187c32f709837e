package xdsclient_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// refusingServer is an ADS server that ends every stream with one status,
// as weft's xDS server does for a node id it cannot parse
// (InvalidArgument) or a node that does not exist yet (NotFound).
type refusingServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	code    codes.Code
	streams atomic.Int64
	seen    chan struct{} // one send per stream
}

func (s *refusingServer) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	s.streams.Add(1)
	select {
	case s.seen <- struct{}{}:
	default:
	}
	return status.Error(s.code, "node.id \"foo\": refused for the test")
}

func (s *refusingServer) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	s.streams.Add(1)
	select {
	case s.seen <- struct{}{}:
	default:
	}
	return status.Error(s.code, "node.id \"foo\": refused for the test")
}

func serveRefusing(t *testing.T, code codes.Code) (*refusingServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rs := &refusingServer{code: code, seen: make(chan struct{}, 16)}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, rs)
	go srv.Serve(ln) // ends with Stop below
	t.Cleanup(srv.Stop)
	return rs, ln.Addr().String()
}

// TestInvalidArgumentIsFinal: a stream refused with InvalidArgument ends
// Run with the server's reason, after one attempt, in both protocols. The
// refusal often ends the stream while the client is still sending its
// first requests (their Send fails with io.EOF, the status comes from
// Recv): repeated so that this ordering is met.
func TestInvalidArgumentIsFinal(t *testing.T) {
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		for range 25 {
			rs, addr := serveRefusing(t, codes.InvalidArgument)
			c := xdsclient.New(xdsclient.Config{Server: addr, Node: &corev3.Node{Id: "foo"}, Protocol: protocol, BackoffBase: 10 * time.Millisecond}, &handler{}, slog.New(slog.DiscardHandler))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := c.Run(ctx)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "refused this proxy") || !strings.Contains(err.Error(), `node.id "foo"`) {
				t.Fatalf("%s: Run: %v; want the refusal and its reason", protocol, err)
			}
			if n := rs.streams.Load(); n != 1 {
				t.Fatalf("%s: %d streams, want 1: a permanent refusal is not retried", protocol, n)
			}
		}
	}
}

// TestNotFoundIsRetried: NotFound (a node not created yet) keeps the
// client reconnecting until its context ends.
func TestNotFoundIsRetried(t *testing.T) {
	rs, addr := serveRefusing(t, codes.NotFound)
	c := xdsclient.New(xdsclient.Config{Server: addr, Node: &corev3.Node{Id: "mesh/m/virtualNode/later"}, BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond}, &handler{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }() // ends with cancel below
	deadline := time.After(30 * time.Second)
	for i := 0; i < 3; i++ {
		select {
		case <-rs.seen:
		case err := <-done:
			t.Fatalf("Run returned after %d NotFound streams: %v", rs.streams.Load(), err)
		case <-deadline:
			t.Fatalf("only %d streams in 30s", rs.streams.Load())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}
