package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// sim is a simulated proxy: weft proxy's xDS client with a handler that
// applies nothing and records the route weight and when it arrived. The
// client ACKs once the handler returns.
type sim struct {
	c     *xdsclient.Client
	track *tracker
	// replica is the index of the replica the last stream was dialled to.
	replica atomic.Int32

	mu    sync.Mutex
	write uint32 // the write of the last accepted routes (writeOf)
	// After watchFrom(since): when the stream ended, when the next one
	// opened and when a response was first applied on it (zero until
	// then).
	since                      time.Time
	downAt, connectAt, applyAt time.Time
}

func newSim(node string, servers []string, protocol string, track *tracker) *sim {
	s := &sim{track: track}
	index := map[string]int32{}
	for i, a := range servers {
		index[a] = int32(i)
	}
	// The dialler notes which replica the proxy is on, for the write
	// breakdown per replica.
	dial := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			s.replica.Store(index[addr])
		}
		return conn, err
	})
	s.c = xdsclient.New(xdsclient.Config{Server: strings.Join(servers, ","), Protocol: protocol, DialOptions: []grpc.DialOption{dial},
		Node: &corev3.Node{Id: "mesh/" + mesh + "/virtualNode/" + node, Cluster: node}}, s, slog.New(slog.DiscardHandler))
	s.c.OnConnect = func(up bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.since.IsZero():
		case !up && s.downAt.IsZero():
			s.downAt = time.Now()
		case up && !s.downAt.IsZero() && s.connectAt.IsZero():
			s.connectAt = time.Now()
		}
	}
	return s
}

func (s *sim) watchFrom(since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.since, s.downAt, s.connectAt, s.applyAt = since, time.Time{}, time.Time{}, time.Time{}
}

func (s *sim) failoverTimes() (down, connect, apply time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downAt, s.connectAt, s.applyAt
}

// response records a response applied on a stream opened since watchFrom.
func (s *sim) response() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connectAt.IsZero() && s.applyAt.IsZero() {
		s.applyAt = time.Now()
	}
}

func (s *sim) Clusters(context.Context, string, []*clusterv3.Cluster) ([]string, error) {
	s.response()
	return nil, nil
}

func (s *sim) Endpoints(context.Context, string, []*endpointv3.ClusterLoadAssignment) error {
	s.response()
	return nil
}

func (s *sim) Listeners(_ context.Context, _ string, ls []*listenerv3.Listener) ([]string, error) {
	s.response()
	var rds []string
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds().GetRouteConfigName() != "" {
					rds = append(rds, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	return rds, nil
}

func (s *sim) Routes(_ context.Context, _ string, rs []*routev3.RouteConfiguration) error {
	now := time.Now()
	s.response()
	var blue, green uint32
	for _, rc := range rs {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					switch {
					case strings.Contains(wc.GetName(), "blue"):
						blue = wc.GetWeight().GetValue()
					case strings.Contains(wc.GetName(), "green"):
						green = wc.GetWeight().GetValue()
					}
				}
			}
		}
	}
	w := writeOf(blue, green)
	s.mu.Lock()
	prev := s.write
	s.write = w
	s.mu.Unlock()
	s.track.applied(prev, w, now, int(s.replica.Load()))
	return nil
}
