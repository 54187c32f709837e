package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// deltaClient is a scripted delta ADS client.
type deltaClient struct {
	t      *testing.T
	conn   *grpc.ClientConn
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *core.Node
	recv   chan *discovery.DeltaDiscoveryResponse // closed when the stream ends
	err    error
	cancel context.CancelFunc
}

func dialDelta(t *testing.T, addr string, node *core.Node) *deltaClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{t: t, conn: conn, stream: stream, node: node, recv: make(chan *discovery.DeltaDiscoveryResponse, 64), cancel: cancel}
	go func() { // ends when the stream fails or is cancelled by close
		defer close(c.recv)
		for {
			resp, err := stream.Recv()
			if err != nil {
				c.err = err
				return
			}
			c.recv <- resp
		}
	}()
	t.Cleanup(func() {
		c.cancel()
		for range c.recv {
		}
		c.conn.Close()
	})
	return c
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if c.node != nil {
		req.Node = c.node
		c.node = nil
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Logf("send: %v", err)
	}
}

func (c *deltaClient) subscribe(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

func (c *deltaClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func (c *deltaClient) next() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.recv:
		if !ok {
			c.t.Fatalf("stream ended: %v", c.err)
		}
		return r
	case <-time.After(wait):
		c.t.Fatalf("no response within %v", wait)
	}
	return nil
}

// expectDelta checks a delta response's type, resource names (sorted)
// and removed names (sorted), and that every resource has a version.
func expectDelta(t *testing.T, r *discovery.DeltaDiscoveryResponse, typeURL string, want, removed []string) {
	t.Helper()
	var got []string
	for _, res := range r.GetResources() {
		m, err := res.GetResource().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		var name string
		switch m := m.(type) {
		case *listenerv3.Listener:
			name = m.GetName()
		case *routev3.RouteConfiguration:
			name = m.GetName()
		case *clusterv3.Cluster:
			name = m.GetName()
		case *endpointv3.ClusterLoadAssignment:
			name = m.GetClusterName()
		}
		if name != res.GetName() || res.GetVersion() == "" {
			t.Fatalf("resource %q named %q, version %q", name, res.GetName(), res.GetVersion())
		}
		got = append(got, name)
	}
	sort.Strings(got)
	gotRemoved := slices.Sorted(slices.Values(r.GetRemovedResources()))
	if r.GetTypeUrl() != typeURL || !slices.Equal(got, want) || !slices.Equal(gotRemoved, removed) {
		t.Fatalf("got %s %v removed %v, want %s %v removed %v", r.GetTypeUrl(), got, gotRemoved, typeURL, want, removed)
	}
}

// deltaStart plays a delta client's start: wildcard CDS and LDS, then EDS
// and RDS for what they name, ACKing everything.
func deltaStart(t *testing.T, c *deltaClient) {
	t.Helper()
	c.subscribe(cdsType)
	c.subscribe(ldsType)
	cds := c.next()
	expectDelta(t, cds, cdsType, []string{"cds_egress_m_blue"}, nil)
	lds := c.next()
	expectDelta(t, lds, ldsType, []string{"lds_ingress_0.0.0.0_15000"}, nil)
	c.ack(cds)
	c.subscribe(edsType, "cds_egress_m_blue")
	eds := c.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_blue"}, nil)
	c.ack(eds)
	c.ack(lds)
	c.subscribe(rdsType, "rds_egress_http_80")
	rds := c.next()
	expectDelta(t, rds, rdsType, []string{"rds_egress_http_80"}, nil)
	c.ack(rds)
}

// TestDeltaProtocol: a delta stream is sent what changed only: an
// endpoint write sends the one assignment; a backend added sends the new
// cluster alone; a backend removed sends its removal; names subscribed
// that do not exist are answered as removed, once.
func TestDeltaProtocol(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	deltaStart(t, c)

	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	eds := c.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_blue"}, nil)
	var cla endpointv3.ClusterLoadAssignment
	if err := eds.GetResources()[0].GetResource().UnmarshalTo(&cla); err != nil || len(cla.GetEndpoints()[0].GetLbEndpoints()) != 2 {
		t.Fatalf("EDS: %v, %d endpoints, want 2", err, len(cla.GetEndpoints()[0].GetLbEndpoints()))
	}
	c.ack(eds)

	// A backend added: only the new cluster, then the route (which
	// changed); the blue cluster is not resent.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	cds := c.next()
	expectDelta(t, cds, cdsType, []string{"cds_egress_m_green"}, nil)
	rds := c.next()
	expectDelta(t, rds, rdsType, []string{"rds_egress_http_80"}, nil)
	c.ack(cds)
	c.ack(rds)
	c.subscribe(edsType, "cds_egress_m_green")
	eds = c.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_green"}, nil)
	c.ack(eds)

	// A backend removed: its cluster's removal.
	putNode(t, st, "m", "red", "green.local")
	cds = c.next()
	expectDelta(t, cds, cdsType, nil, []string{"cds_egress_m_blue"})
	// The assignment of the removed cluster: gone too.
	eds = c.next()
	expectDelta(t, eds, edsType, nil, []string{"cds_egress_m_blue"})
	c.ack(cds)
	c.ack(eds)
	rds = c.next()
	expectDelta(t, rds, rdsType, []string{"rds_egress_http_80"}, nil)
	c.ack(rds)

	// A name that does not exist: answered as removed, once; then
	// unsubscribed, and nothing more is said of it.
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: edsType, ResourceNamesSubscribe: []string{"nope"}, ResourceNamesUnsubscribe: []string{"cds_egress_m_blue"}})
	r := c.next()
	expectDelta(t, r, edsType, nil, []string{"nope"})
	c.ack(r)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: edsType, ResourceNamesUnsubscribe: []string{"nope"}})
	putCMService(t, st, "green")
	putInstance(t, st, "green", "green-1", "10.0.0.3")
	eds = c.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_green"}, nil)
	c.ack(eds)

	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Types["eds"].Acked != "" && p.Types["eds"].Acked == p.Types["eds"].Version && p.Types["cds"].Acked == p.Types["cds"].Version
	})
}

// TestDeltaReconnect: a client that reconnects with the versions it holds
// is sent nothing but an empty first response per type; one holding an
// old version of a resource gets that resource, and one holding a
// resource that no longer exists gets its removal.
func TestDeltaReconnect(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.subscribe(cdsType)
	cds := c.next()
	expectDelta(t, cds, cdsType, []string{"cds_egress_m_blue"}, nil)
	held := map[string]string{}
	for _, r := range cds.GetResources() {
		held[r.GetName()] = r.GetVersion()
	}

	c2 := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c2.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cdsType, InitialResourceVersions: held})
	expectDelta(t, c2.next(), cdsType, nil, nil)

	held["cds_egress_m_blue"] = "old"
	held["cds_egress_m_gone"] = "old"
	c3 := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c3.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cdsType, InitialResourceVersions: held})
	expectDelta(t, c3.next(), cdsType, []string{"cds_egress_m_blue"}, []string{"cds_egress_m_gone"})
}

// TestDeltaAndSotWShareOneTranslation: a delta and a state-of-the-world
// replica of one proxy are served from one translation; a NACK on the
// delta stream parks it until the next write, as on the other.
func TestDeltaAndSotWShareOneTranslation(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	translations := testutil.ToFloat64(srv.hub.metrics.translations)
	d := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	deltaStart(t, d)
	s := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	envoyStart(t, s)
	if n := testutil.ToFloat64(srv.hub.metrics.translations) - translations; n != 1 {
		t.Fatalf("%v translations for two replicas, want 1", n)
	}

	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	bad := d.next()
	expectDelta(t, bad, cdsType, []string{"cds_egress_m_green"}, nil)
	d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cdsType, ResponseNonce: bad.GetNonce(), ErrorDetail: &status.Status{Code: 3, Message: "no thanks"}})
	rds := d.next()
	expectDelta(t, rds, rdsType, []string{"rds_egress_http_80"}, nil)
	d.ack(rds)
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.LastNack != nil })
	// The next write sends the change, not the rejected cluster again.
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	eds := d.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_blue"}, nil)
}

// TestDeltaSubscriptionLimit: a delta client adding names request by
// request is closed with ResourceExhausted past maxSubscribedNames of
// one type, rather than growing the server's memory without bound.
func TestDeltaSubscriptionLimit(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	const batch = 20000
	for i := 0; i <= maxSubscribedNames/batch; i++ {
		names := make([]string, batch)
		for j := range names {
			names[j] = fmt.Sprintf("n%d-%d", i, j)
		}
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: edsType, ResourceNamesSubscribe: names})
	}
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-c.recv:
			if ok {
				continue
			}
			if code := grpcstatus.Code(c.err); code != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v, want ResourceExhausted", c.err)
			}
			return
		case <-deadline:
			t.Fatal("stream not closed")
		}
	}
}

// TestDeltaClusterChangeResendsItsAssignment: a cluster whose content
// changes is followed by its assignment, though the assignment did not
// change, as in state of the world: Envoy re-warms a changed cluster and
// waits for its endpoints.
func TestDeltaClusterChangeResendsItsAssignment(t *testing.T) {
	st := colorStore(t)
	// fakeTranslate, with every cluster's connect timeout longer while a
	// virtual service slow.local exists.
	tr := func(v *translate.View, id translate.Identity, m *translate.Memo) (*translate.Resources, error) {
		r, err := fakeTranslate(v, id, m)
		if err != nil {
			return nil, err
		}
		r.Deps = append(r.Deps, appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindVirtualService, Name: "slow.local"})
		if v.VirtualServices["slow.local"] != nil {
			for _, c := range r.Clusters {
				c.ConnectTimeout = durationpb.New(5 * time.Second)
			}
		}
		return r, nil
	}
	srv := startServer(t, st, tr)
	c := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	deltaStart(t, c)
	putService(t, st, "m", "slow.local", "")
	cds := c.next()
	expectDelta(t, cds, cdsType, []string{"cds_egress_m_blue"}, nil)
	eds := c.next()
	expectDelta(t, eds, edsType, []string{"cds_egress_m_blue"}, nil)
	c.ack(cds)
	c.ack(eds)
	// An endpoint write after it: the assignment alone, as usual.
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	expectDelta(t, c.next(), edsType, []string{"cds_egress_m_blue"}, nil)
}

// TestDeltaStatusWhenNothingDiffers: a write that changes a type's
// version for the identity but none of the resources a delta stream
// subscribes to sends that stream nothing, and /v1/proxies then shows
// the type ACKed at the new version: the client holds everything of it.
// (It stayed at the old version, so a client waiting for convergence
// waited for ever.)
func TestDeltaStatusWhenNothingDiffers(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialDelta(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	deltaStart(t, c)
	before := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Types["eds"].Acked != "" && p.Types["eds"].Acked == p.Types["eds"].Version
	}).Types["eds"].Version

	// A second backend: a new cluster and its assignment, which the
	// client does not subscribe to.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	putNode(t, st, "m", "red", "blue.local", "green.local")
	cds := c.next()
	expectDelta(t, cds, cdsType, []string{"cds_egress_m_green"}, nil)
	rds := c.next()
	expectDelta(t, rds, rdsType, []string{"rds_egress_http_80"}, nil)
	c.ack(cds)
	c.ack(rds)
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		eds := p.Types["eds"]
		return eds.Version != before && eds.Acked == eds.Version && p.Types["cds"].Acked == p.Types["cds"].Version
	})
	t.Logf("eds %s -> %s, acked %s", before, p.Types["eds"].Version, p.Types["eds"].Acked)
	// The proxies page shows where the proxy connects from.
	if len(p.Addresses) != 1 || !strings.HasPrefix(p.Addresses[0], "127.0.0.1:") {
		t.Errorf("addresses %q, want the client's one 127.0.0.1:port", p.Addresses)
	}
}
