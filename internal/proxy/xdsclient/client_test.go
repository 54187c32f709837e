package xdsclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
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

// handler is a small fake at weft's own seam: it records what it was
// given and rejects clusters named "bad".
type handler struct {
	mu  sync.Mutex
	log []string
}

func (h *handler) add(s string) {
	h.mu.Lock()
	h.log = append(h.log, s)
	h.mu.Unlock()
}

func (h *handler) Clusters(_ context.Context, v string, cs []*clusterv3.Cluster) ([]string, error) {
	var names []string
	for _, c := range cs {
		if c.GetName() == "bad" {
			return nil, errors.New("cluster bad: rejected")
		}
		names = append(names, c.GetName())
	}
	h.add(fmt.Sprintf("CDS %s %v", v, names))
	return names, nil
}

func (h *handler) Endpoints(_ context.Context, v string, es []*endpointv3.ClusterLoadAssignment) error {
	var names []string
	for _, e := range es {
		names = append(names, e.GetClusterName())
	}
	h.add(fmt.Sprintf("EDS %s %v", v, names))
	return nil
}

func (h *handler) Listeners(_ context.Context, v string, ls []*listenerv3.Listener) ([]string, error) {
	h.add(fmt.Sprintf("LDS %s %d", v, len(ls)))
	return []string{"r1"}, nil
}

func (h *handler) Routes(_ context.Context, v string, rs []*routev3.RouteConfiguration) error {
	h.add(fmt.Sprintf("RDS %s %d", v, len(rs)))
	return nil
}

func short(url string) string { return url[strings.LastIndex(url, ".")+1:] }

// TestProtocol checks the request transcript of a state-of-the-world stream: subscribe,
// ACK, subscribe to dependent names, NACK with the previous version,
// and resubscribe after the server restarts.
func TestProtocol(t *testing.T) {
	srv := xdstest.Start(t, "n1")
	h := &handler{}
	c := xdsclient.New(xdsclient.Config{Server: srv.Addr, Node: &corev3.Node{Id: "n1"}, BackoffBase: 10 * time.Millisecond, Protocol: xdsclient.ProtocolSotW}, h,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	run(t, c)
	srv.WaitFor(5*time.Second, "initial CDS and LDS", func(r xdstest.Request) bool { return r.TypeURL == xdsclient.ListenerType })

	v1 := srv.Set(&clusterv3.Cluster{Name: "a"}, &endpointv3.ClusterLoadAssignment{ClusterName: "a"},
		&listenerv3.Listener{Name: "l"}, &routev3.RouteConfiguration{Name: "r1"})
	srv.WaitACK(xdsclient.RouteType, v1)
	srv.WaitACK(xdsclient.EndpointType, v1)
	mark := srv.Mark()
	srv.Set(&clusterv3.Cluster{Name: "bad"}, &listenerv3.Listener{Name: "l"}, &routev3.RouteConfiguration{Name: "r1"})
	nack := srv.WaitSince(mark, 5*time.Second, "CDS NACK", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.ClusterType && r.Error != ""
	})
	if nack.Version != v1 || !strings.Contains(nack.Error, "cluster bad: rejected") {
		t.Errorf("NACK %+v: want version %s and the handler's error", nack, v1)
	}

	var got []string
	for _, r := range srv.Requests() {
		e := ""
		if r.Error != "" {
			e = " NACK"
		}
		got = append(got, fmt.Sprintf("%s v=%q names=%v%s", short(r.TypeURL), r.Version, r.Names, e))
	}
	want := []string{
		`Cluster v="" names=[]`,
		`Listener v="" names=[]`,
		`Cluster v="v1" names=[]`,
		`ClusterLoadAssignment v="" names=[a]`,
		`Listener v="v1" names=[]`,
		`RouteConfiguration v="" names=[r1]`,
	}
	// The server answers types in its own order; check each type's own
	// sequence rather than the interleaving.
	for _, typ := range []string{"Cluster ", "Listener ", "ClusterLoadAssignment ", "RouteConfiguration "} {
		var g, w []string
		for _, x := range got {
			if strings.HasPrefix(x, typ) {
				g = append(g, x)
			}
		}
		for _, x := range want {
			if strings.HasPrefix(x, typ) {
				w = append(w, x)
			}
		}
		for i := range w {
			if i >= len(g) || g[i] != w[i] {
				t.Errorf("%s transcript:\n got %q\nwant prefix %q", typ, g, w)
				break
			}
		}
	}
	if !c.Connected() {
		t.Error("not connected")
	}

	// Restart: the client reconnects and re-sends its accepted versions
	// (CDS stays at v1: v2 was rejected) and its subscriptions.
	mark = srv.Mark()
	srv.Restart()
	srv.WaitSince(mark, 10*time.Second, "CDS resubscription at v1", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.ClusterType && r.Version == v1 && r.Nonce == ""
	})
	srv.WaitSince(mark, 10*time.Second, "EDS resubscription", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.EndpointType && len(r.Names) == 1 && r.Names[0] == "a" && r.Nonce == ""
	})
}

// run runs c until the test ends; Run must then return without an error.
func run(t *testing.T, c *xdsclient.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }() // ends with cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}
