package xdsclient_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// pingCounter wraps the client's connection and counts the PING frames
// (not PING ACKs) in the HTTP/2 bytes the client writes.
type pingCounter struct {
	net.Conn
	mu      sync.Mutex // protects the fields below
	preface int        // client preface bytes still to skip
	hdr     []byte     // a frame header read in part
	skip    int        // payload bytes of the current frame still to skip
	pings   int
}

func (c *pingCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.scan(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *pingCounter) scan(p []byte) {
	for len(p) > 0 {
		switch {
		case c.preface > 0:
			n := min(c.preface, len(p))
			c.preface -= n
			p = p[n:]
		case c.skip > 0:
			n := min(c.skip, len(p))
			c.skip -= n
			p = p[n:]
		default:
			n := min(9-len(c.hdr), len(p))
			c.hdr = append(c.hdr, p[:n]...)
			p = p[n:]
			if len(c.hdr) < 9 {
				return
			}
			length := int(binary.BigEndian.Uint32(append([]byte{0}, c.hdr[:3]...)))
			typ, flags := http2.FrameType(c.hdr[3]), http2.Flags(c.hdr[4])
			if typ == http2.FramePing && !flags.Has(http2.FlagPingAck) {
				c.pings++
			}
			c.hdr, c.skip = c.hdr[:0], length
		}
	}
}

func (c *pingCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pings
}

// TestNoPingPerPush: over a real gRPC connection to go-control-plane's
// server, the client ACKs pushes without sending a PING per response
// (grpc-go's bandwidth-delay estimation would send one after each; with
// it on, this test counts about one per push). Both protocols.
func TestNoPingPerPush(t *testing.T) {
	const pushes = 20
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		t.Run(protocol, func(t *testing.T) {
			srv := xdstest.Start(t, "n1")
			var (
				mu    sync.Mutex
				conns []*pingCounter
			)
			dialer := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				pc := &pingCounter{Conn: conn, preface: len(http2.ClientPreface)}
				mu.Lock()
				conns = append(conns, pc)
				mu.Unlock()
				return pc, nil
			})
			c := xdsclient.New(xdsclient.Config{Server: srv.Addr, Node: &corev3.Node{Id: "n1"}, Protocol: protocol,
				DialOptions: []grpc.DialOption{dialer}}, &handler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }() // ends with cancel below
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			srv.WaitFor(5*time.Second, "initial CDS", func(r xdstest.Request) bool { return r.TypeURL == xdsclient.ClusterType })
			for i := range pushes {
				v := srv.Set(&clusterv3.Cluster{Name: "c" + strconv.Itoa(i)})
				srv.WaitACK(xdsclient.ClusterType, v)
			}
			mu.Lock()
			defer mu.Unlock()
			pings := 0
			for _, pc := range conns {
				pings += pc.count()
			}
			t.Logf("%d pushes ACKed over %d connection(s), %d PINGs from the client", pushes, len(conns), pings)
			if len(conns) == 0 || pings > 1 {
				t.Errorf("the client sent %d PINGs for %d pushes; want none (a fixed window)", pings, pushes)
			}
		})
	}
}
