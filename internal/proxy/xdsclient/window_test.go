package xdsclient_test

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// TestNoPingPerPush: over a real gRPC connection to go-control-plane's
// server, the client ACKs pushes without sending a PING per response
// (grpc-go's bandwidth-delay estimation would send one after each; with
// it on, this test counts about one per push). Both protocols.
func TestNoPingPerPush(t *testing.T) {
	const pushes = 20
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		t.Run(protocol, func(t *testing.T) {
			srv := xdstest.Start(t, "n1")
			var pings xdstest.Pings
			c := xdsclient.New(xdsclient.Config{Server: srv.Addr, Node: &corev3.Node{Id: "n1"}, Protocol: protocol,
				DialOptions: []grpc.DialOption{pings.Dialer()}}, &handler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			run(t, c)
			srv.WaitFor(5*time.Second, "initial CDS", func(r xdstest.Request) bool { return r.TypeURL == xdsclient.ClusterType })
			for i := range pushes {
				v := srv.Set(&clusterv3.Cluster{Name: "c" + strconv.Itoa(i)})
				srv.WaitACK(xdsclient.ClusterType, v)
			}
			conns, sent, received := pings.Count()
			t.Logf("%d pushes ACKed over %d connection(s), %d PINGs from the client, %d from the server", pushes, conns, sent, received)
			if conns == 0 || sent > 1 {
				t.Errorf("the client sent %d PINGs for %d pushes; want none (a fixed window)", sent, pushes)
			}
		})
	}
}
