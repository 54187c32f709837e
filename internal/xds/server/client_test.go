package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// proxyState records what weft proxy's xDS client hands its proxy.
type proxyState struct {
	mu       sync.Mutex
	clusters []string
	eps      map[string]int // endpoints per cluster
	routes   int
	changed  chan struct{} // closed and replaced at each update
}

func (p *proxyState) update(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *proxyState) Clusters(_ context.Context, _ string, cs []*clusterv3.Cluster) ([]string, error) {
	var names []string
	for _, c := range cs {
		names = append(names, c.GetName())
	}
	p.update(func() { p.clusters = names })
	return names, nil
}

func (p *proxyState) Endpoints(_ context.Context, _ string, es []*endpointv3.ClusterLoadAssignment) error {
	p.update(func() {
		p.eps = map[string]int{}
		for _, e := range es {
			for _, l := range e.GetEndpoints() {
				p.eps[e.GetClusterName()] += len(l.GetLbEndpoints())
			}
		}
	})
	return nil
}

func (p *proxyState) Listeners(_ context.Context, _ string, ls []*listenerv3.Listener) ([]string, error) {
	return []string{"rds_egress_http_80"}, nil
}

func (p *proxyState) Routes(_ context.Context, _ string, rs []*routev3.RouteConfiguration) error {
	p.update(func() { p.routes = len(rs) })
	return nil
}

// waitFor waits until ok holds of the state.
func (p *proxyState) waitFor(t *testing.T, what string, ok func(p *proxyState) bool) {
	t.Helper()
	deadline := time.After(wait)
	for {
		p.mu.Lock()
		done, ch := ok(p), p.changed
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("proxy never had %s", what)
		}
	}
}

// runWeftClient runs weft proxy's xDS client for node against the server
// at addr, in protocol, until the test ends, and returns what it was
// handed; opts are added to its dial options.
func runWeftClient(t *testing.T, addr, node, protocol string, opts ...grpc.DialOption) *proxyState {
	t.Helper()
	p := &proxyState{changed: make(chan struct{})}
	c := xdsclient.New(xdsclient.Config{Server: addr, Node: &core.Node{Id: node}, Protocol: protocol, BackoffBase: 10 * time.Millisecond, DialOptions: opts},
		p, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }() // ends with cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return p
}

// TestWeftProxyClient: weft proxy's xDS client, in both protocols,
// against the server: it gets its configuration, follows a write, and
// over delta is sent only the type the write changed.
func TestWeftProxyClient(t *testing.T) {
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		t.Run(protocol, func(t *testing.T) {
			st := colorStore(t)
			srv := startServer(t, st, fakeTranslate)
			p := runWeftClient(t, srv.addr, "mesh/m/virtualNode/red", protocol)
			p.waitFor(t, "its configuration", func(p *proxyState) bool {
				return slices.Equal(p.clusters, []string{"cds_egress_m_blue"}) && p.eps["cds_egress_m_blue"] == 1 && p.routes == 1
			})
			waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
				for _, typ := range []string{"cds", "eds", "lds", "rds"} {
					if ts := p.Types[typ]; ts.Acked == "" || ts.Acked != ts.Version {
						return false
					}
				}
				return true
			})
			pushes := func() string {
				var s string
				for _, typ := range []string{"cds", "eds", "lds", "rds"} {
					s += fmt.Sprintf("%s=%v ", typ, testutil.ToFloat64(srv.hub.metrics.pushes.WithLabelValues(typ)))
				}
				return s
			}
			before := pushes()
			putInstance(t, st, "blue", "blue-2", "10.0.0.2")
			p.waitFor(t, "the new endpoint", func(p *proxyState) bool { return p.eps["cds_egress_m_blue"] == 2 })
			after := pushes()
			// One EDS push, nothing else.
			if want := bumpEDS(t, before); after != want {
				t.Fatalf("pushes %s, then %s; want %s", before, after, want)
			}
		})
	}
}

// TestWeftProxyNoPings: weft proxy's client and the server, over a real
// connection, follow writes without a PING either way: the client keeps
// fixed windows (xdsclient.WindowOptions) and so does the server
// (limits.go); grpc-go's default bandwidth-delay estimation on either
// side sends a PING after the data of each push or ACK it receives.
func TestWeftProxyNoPings(t *testing.T) {
	const writes = 20
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		t.Run(protocol, func(t *testing.T) {
			st := colorStore(t)
			srv := startServer(t, st, fakeTranslate)
			var pings xdstest.Pings
			p := runWeftClient(t, srv.addr, "mesh/m/virtualNode/red", protocol, pings.Dialer())
			p.waitFor(t, "its configuration", func(p *proxyState) bool { return p.eps["cds_egress_m_blue"] == 1 })
			for i := range writes {
				// Instance blue-2 registered, then deregistered.
				want := 1
				if i%2 == 0 {
					putInstance(t, st, "blue", "blue-2", "10.0.0.2")
					want = 2
				} else {
					del(t, st, cloudmap.InstanceKey("srv-blue", "blue-2"))
				}
				p.waitFor(t, fmt.Sprintf("%d endpoints after write %d", want, i), func(p *proxyState) bool { return p.eps["cds_egress_m_blue"] == want })
			}
			conns, sent, received := pings.Count()
			t.Logf("%d writes followed over %d connection(s): %d PINGs from the client, %d from the server", writes, conns, sent, received)
			if conns == 0 || sent > 1 || received > 1 {
				t.Errorf("%d PINGs from the client and %d from the server over %d writes; want none", sent, received, writes)
			}
		})
	}
}

// bumpEDS is a pushes() string with one more EDS push.
func bumpEDS(t *testing.T, s string) string {
	t.Helper()
	var cds, eds, lds, rds float64
	if _, err := fmt.Sscanf(s, "cds=%v eds=%v lds=%v rds=%v ", &cds, &eds, &lds, &rds); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("cds=%v eds=%v lds=%v rds=%v ", cds, eds+1, lds, rds)
}

// TestWeftProxyClientAcrossStreamAge: with streams reset at their age,
// weft proxy's client connects again (authorized each time) in both
// protocols and keeps following writes.
func TestWeftProxyClientAcrossStreamAge(t *testing.T) {
	for _, protocol := range []string{xdsclient.ProtocolDelta, xdsclient.ProtocolSotW} {
		t.Run(protocol, func(t *testing.T) {
			st := colorStore(t)
			var streams atomic.Int32
			srv := startServer(t, st, fakeTranslate, func(o *Options) {
				o.Limits.MaxStreamAge = 200 * time.Millisecond
				o.Authorize = func(context.Context, translate.Identity) (bool, error) {
					streams.Add(1)
					return false, nil
				}
			})
			p := runWeftClient(t, srv.addr, "mesh/m/virtualNode/red", protocol)
			p.waitFor(t, "its configuration", func(p *proxyState) bool { return p.eps["cds_egress_m_blue"] == 1 })
			deadline := time.Now().Add(wait)
			for streams.Load() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("%d streams within %v, want 3: the client did not connect again", streams.Load(), wait)
				}
				time.Sleep(20 * time.Millisecond)
			}
			putInstance(t, st, "blue", "blue-2", "10.0.0.2")
			p.waitFor(t, "the new endpoint after the resets", func(p *proxyState) bool { return p.eps["cds_egress_m_blue"] == 2 })
		})
	}
}
