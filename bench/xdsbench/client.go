package main

import (
	"context"
	"slices"
	"sync"
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
