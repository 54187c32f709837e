package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

const (
	cdsType = resource.ClusterType
	edsType = resource.EndpointType
	ldsType = resource.ListenerType
	rdsType = resource.RouteType
)

// ackEvent is one ACK a client sent.
type ackEvent struct {
	client  int
	typ     string
	version string
	first   bool // the first response of the type on the stream
	at      time.Time
}

// client is an Envoy-like ADS client: wildcard CDS and LDS, EDS for the
// EDS clusters, RDS for the route tables the listeners name.
type client struct {
	id, node int
	events   chan<- ackEvent
	// send writes a request on the client's stream: grpc-go's stream's
	// Send, or the lean client's (lean.go).
	send func(*discovery.DiscoveryRequest) error

	mu       sync.Mutex // protects versions, read by the coordinator
	versions map[string]string

	// Owned by the receive goroutine.
	nonces map[string]string
	names  map[string][]string
}

func (c *client) version(typ string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[typ]
}

func (c *client) start(ctx context.Context, conn *grpc.ClientConn, nodeID string) error {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	c.send = s.Send
	if err := c.subscribe(nodeID); err != nil {
		return err
	}
	go c.receive(s) // ends when the stream does (ctx or the server)
	return nil
}

// subscribe sends the stream's first requests, as Envoy does: wildcard
// CDS, then LDS.
func (c *client) subscribe(nodeID string) error {
	c.versions, c.nonces, c.names = map[string]string{}, map[string]string{}, map[string][]string{}
	node := &core.Node{Id: nodeID, Cluster: nodeID, UserAgentName: "envoy"}
	if err := c.send(&discovery.DiscoveryRequest{Node: node, TypeUrl: cdsType}); err != nil {
		return err
	}
	return c.send(&discovery.DiscoveryRequest{TypeUrl: ldsType})
}

func (c *client) request(typ string) error {
	c.mu.Lock()
	v := c.versions[typ]
	c.mu.Unlock()
	return c.send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: v, ResponseNonce: c.nonces[typ], ResourceNames: c.names[typ]})
}

func (c *client) receive(s discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	for {
		r, err := s.Recv()
		if err != nil || c.handle(r) != nil {
			return
		}
	}
}

// handle ACKs a response, reports the ACK to events, and asks for the
// endpoints (routes) the clusters (listeners) it holds name.
func (c *client) handle(r *discovery.DiscoveryResponse) error {
	typ := r.GetTypeUrl()
	c.mu.Lock()
	first := c.versions[typ] == ""
	c.versions[typ] = r.GetVersionInfo()
	c.mu.Unlock()
	c.nonces[typ] = r.GetNonce()
	var follow string // the type whose subscription this response changes
	var names []string
	switch typ {
	case cdsType:
		follow = edsType
		for _, a := range r.GetResources() {
			var cl clusterv3.Cluster
			if a.UnmarshalTo(&cl) == nil && cl.GetType() == clusterv3.Cluster_EDS {
				names = append(names, cl.GetName())
			}
		}
	case ldsType:
		follow = rdsType
		for _, a := range r.GetResources() {
			var l listenerv3.Listener
			if a.UnmarshalTo(&l) != nil {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var hcm hcmv3.HttpConnectionManager
					if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
						names = append(names, hcm.GetRds().GetRouteConfigName())
					}
				}
			}
		}
	}
	if err := c.request(typ); err != nil {
		return err
	}
	c.events <- ackEvent{client: c.id, typ: typ, version: r.GetVersionInfo(), first: first, at: time.Now()}
	if follow != "" {
		slices.Sort(names)
		names = slices.Compact(names)
		if !slices.Equal(names, c.names[follow]) {
			c.names[follow] = names
			return c.request(follow)
		}
	}
	return nil
}

// fleet is the simulated proxies: clients[i] is proxy i of virtual node
// client-(i/replicas), and perConn streams share each gRPC connection to
// the server's xDS address. Every client's ACKs go to events.
type fleet struct {
	xdsAddr           string
	dial              []grpc.DialOption
	lean              bool        // -client lean: each proxy on a connection of its own, without grpc-go (lean.go)
	leanTLS           *tls.Config // the lean clients' TLS (nil: plaintext)
	leans             []*leanConn // the lean clients' connections, by client
	replicas, perConn int
	events            chan ackEvent
	clients           []*client
	conns             []*grpc.ClientConn
	conn              *grpc.ClientConn // the newest connection, which the next clients share
}

// fleetOptions is how the simulated proxies reach the server: grpc-go
// with dial's options, or the lean client (over tls when not nil).
type fleetOptions struct {
	dial []grpc.DialOption
	lean bool
	tls  *tls.Config
}

// newFleet makes a fleet of n proxies; connect opens their streams.
func newFleet(n, replicas, perConn int, xdsAddr string, o fleetOptions) *fleet {
	return &fleet{xdsAddr: xdsAddr, dial: o.dial, lean: o.lean, leanTLS: o.tls, replicas: replicas, perConn: perConn,
		events: make(chan ackEvent, 1<<16), clients: make([]*client, n), leans: make([]*leanConn, n)}
}

// connect opens the streams of clients[from:to] as a restarted server
// sees them: everyone at once (64 dials in flight), and waits until
// each has ACKed its first RDS (the last type). It returns how long
// that took.
func (f *fleet) connect(ctx context.Context, from, to int) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	var startErr atomic.Pointer[error]
	sem := make(chan struct{}, 64)
	for i := from; i < to; i++ {
		if !f.lean && i%f.perConn == 0 {
			c, err := grpc.NewClient(f.xdsAddr, f.dial...)
			if err != nil {
				return 0, err
			}
			f.conn = c
			f.conns = append(f.conns, f.conn)
		}
		f.clients[i] = &client{id: i, node: i / f.replicas, events: f.events}
		sem <- struct{}{}
		// The connection of this client, read now: conn changes as the
		// loop goes on (read inside the goroutine, it put most
		// clients on whichever connection was newest when they ran).
		cc := f.conn
		wg.Go(func() { // ends when the stream is open
			defer func() { <-sem }()
			nodeID := fmt.Sprintf("mesh/bench/virtualNode/client-%d", i/f.replicas)
			var err error
			if f.lean {
				f.leans[i], err = f.clients[i].startLean(ctx, f.xdsAddr, f.leanTLS, nodeID)
			} else {
				err = f.clients[i].start(ctx, cc, nodeID)
			}
			if err != nil {
				err = fmt.Errorf("client %d: %w", i, err)
				startErr.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if err := startErr.Load(); err != nil {
		return 0, *err
	}
	for ready := from; ready < to; {
		select {
		case e := <-f.events:
			if e.typ == rdsType && e.first {
				ready++
			}
		case <-time.After(60 * time.Second):
			return 0, fmt.Errorf("only %d of %d clients configured after 60 s", ready, to)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	connected := time.Since(start)
	conns, kind := len(f.conns), "gRPC"
	if f.lean {
		conns, kind = to, "lean HTTP/2"
	}
	log.Printf("%d clients connected and configured in %v (%d in all, on %d %s connections)", to-from, connected.Round(time.Millisecond), to, conns, kind)
	return connected, nil
}

// close closes the fleet's gRPC connections, and with them its streams.
func (f *fleet) close() {
	for _, c := range f.conns {
		c.Close()
	}
	for _, lc := range f.leans {
		if lc != nil {
			lc.conn.Close()
		}
	}
}
