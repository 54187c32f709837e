package main

import (
	"context"
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
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient

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
	c.stream, c.versions, c.nonces, c.names = s, map[string]string{}, map[string]string{}, map[string][]string{}
	node := &core.Node{Id: nodeID, Cluster: nodeID, UserAgentName: "envoy"}
	if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: cdsType}); err != nil {
		return err
	}
	if err := s.Send(&discovery.DiscoveryRequest{TypeUrl: ldsType}); err != nil {
		return err
	}
	go c.receive() // ends when the stream does (ctx or the server)
	return nil
}

func (c *client) request(typ string) error {
	c.mu.Lock()
	v := c.versions[typ]
	c.mu.Unlock()
	return c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: v, ResponseNonce: c.nonces[typ], ResourceNames: c.names[typ]})
}

func (c *client) receive() {
	for {
		r, err := c.stream.Recv()
		if err != nil {
			return
		}
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
			return
		}
		c.events <- ackEvent{client: c.id, typ: typ, version: r.GetVersionInfo(), first: first, at: time.Now()}
		if follow != "" {
			slices.Sort(names)
			names = slices.Compact(names)
			if !slices.Equal(names, c.names[follow]) {
				c.names[follow] = names
				if err := c.request(follow); err != nil {
					return
				}
			}
		}
	}
}

// fleet is the simulated proxies: clients[i] is proxy i of virtual node
// client-(i/replicas), and perConn streams share each gRPC connection to
// the server's xDS address. Every client's ACKs go to events.
type fleet struct {
	xdsAddr           string
	dial              []grpc.DialOption
	replicas, perConn int
	events            chan ackEvent
	clients           []*client
	conns             []*grpc.ClientConn
	conn              *grpc.ClientConn // the newest connection, which the next clients share
}

// newFleet makes a fleet of n proxies; connect opens their streams.
func newFleet(n, replicas, perConn int, xdsAddr string, dial []grpc.DialOption) *fleet {
	return &fleet{xdsAddr: xdsAddr, dial: dial, replicas: replicas, perConn: perConn, events: make(chan ackEvent, 1<<16), clients: make([]*client, n)}
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
		if i%f.perConn == 0 {
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
			if err := f.clients[i].start(ctx, cc, fmt.Sprintf("mesh/bench/virtualNode/client-%d", i/f.replicas)); err != nil {
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
	log.Printf("%d clients connected and configured in %v (%d in all, on %d gRPC connections)", to-from, connected.Round(time.Millisecond), to, len(f.conns))
	return connected, nil
}

// close closes the fleet's gRPC connections, and with them its streams.
func (f *fleet) close() {
	for _, c := range f.conns {
		c.Close()
	}
}
