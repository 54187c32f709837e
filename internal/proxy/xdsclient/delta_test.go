package xdsclient_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// TestDeltaProtocol runs the client, in its default protocol (delta),
// against go-control-plane's delta server: it subscribes, ACKs each
// response, NACKs a bad one keeping what it had, and after a restart
// reopens each type with the versions of the resources it holds.
func TestDeltaProtocol(t *testing.T) {
	srv := xdstest.Start(t, "n1")
	h := &handler{}
	c := xdsclient.New(xdsclient.Config{Server: srv.Addr, Node: &corev3.Node{Id: "n1"}, BackoffBase: 10 * time.Millisecond}, h,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	run(t, c)
	first := srv.WaitFor(5*time.Second, "initial CDS", func(r xdstest.Request) bool { return r.TypeURL == xdsclient.ClusterType })
	if !first.Delta {
		t.Fatal("the client did not open a delta stream")
	}
	v1 := srv.Set(&clusterv3.Cluster{Name: "a"}, &endpointv3.ClusterLoadAssignment{ClusterName: "a"},
		&listenerv3.Listener{Name: "l"}, &routev3.RouteConfiguration{Name: "r1"})
	for _, typ := range []string{xdsclient.ClusterType, xdsclient.EndpointType, xdsclient.ListenerType, xdsclient.RouteType} {
		srv.WaitACK(typ, v1)
	}
	srv.WaitFor(5*time.Second, "EDS subscription to a", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.EndpointType && strings.Join(r.Names, ",") == "a"
	})

	mark := srv.Mark()
	srv.Set(&clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "bad"}, &endpointv3.ClusterLoadAssignment{ClusterName: "a"},
		&listenerv3.Listener{Name: "l"}, &routev3.RouteConfiguration{Name: "r1"})
	nack := srv.WaitSince(mark, 5*time.Second, "CDS NACK", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.ClusterType && r.Error != ""
	})
	if nack.Version != v1 || !strings.Contains(nack.Error, "cluster bad: rejected") {
		t.Errorf("NACK %+v: want the handler's error, v1 still ACKed", nack)
	}

	// Restart: each type reopens with the versions of what the client
	// accepted (cluster a, not the rejected bad).
	mark = srv.Mark()
	srv.Restart()
	re := srv.WaitSince(mark, 10*time.Second, "CDS resubscription", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.ClusterType && r.Nonce == ""
	})
	if _, ok := re.Initial["a"]; !ok || len(re.Initial) != 1 {
		t.Errorf("CDS reopened with initial versions %v, want cluster a only", re.Initial)
	}
	srv.WaitSince(mark, 10*time.Second, "EDS resubscription", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.EndpointType && strings.Join(r.Names, ",") == "a" && r.Nonce == "" && r.Initial["a"] != ""
	})
}
