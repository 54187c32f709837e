package xdsclient_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// TestFailover gives the client two servers: it is configured by one, and
// when that one stops it is configured by the other, keeping its
// configuration meanwhile.
func TestFailover(t *testing.T) {
	a, b := xdstest.Start(t, "n1"), xdstest.Start(t, "n1")
	va := a.Set(&clusterv3.Cluster{Name: "c"}, &listenerv3.Listener{Name: "from-a"})
	vb := b.Set(&clusterv3.Cluster{Name: "c"}, &listenerv3.Listener{Name: "from-b"})
	h := &handler{}
	c := xdsclient.New(xdsclient.Config{Server: a.Addr + "," + b.Addr, Node: &corev3.Node{Id: "n1"}, BackoffBase: 10 * time.Millisecond}, h,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	run(t, c)
	// Which server the client picked is random; wait for either's ACK.
	deadline := time.Now().Add(10 * time.Second)
	var first, other *xdstest.Server
	var otherVersion string
	for first == nil {
		for _, s := range []struct {
			srv, other *xdstest.Server
			v, ov      string
		}{{a, b, va, vb}, {b, a, vb, va}} {
			for _, r := range s.srv.Requests() {
				if r.TypeURL == xdsclient.ListenerType && r.Version == s.v && r.Error == "" {
					first, other, otherVersion = s.srv, s.other, s.ov
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no server configured the client")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mark := other.Mark()
	first.Stop()
	other.WaitSince(mark, 10*time.Second, "the failed-over client's ACK", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.ListenerType && r.Version == otherVersion && r.Error == ""
	})
}

func TestBadAddressList(t *testing.T) {
	c := xdsclient.New(xdsclient.Config{Server: "127.0.0.1:1,no-port", Node: &corev3.Node{Id: "n1"}}, &handler{},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("a list with an entry without a port was accepted")
	}
}
