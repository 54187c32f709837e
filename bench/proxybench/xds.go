package main

import (
	"context"
	"log"
	"net"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// xdsServer is the bench's xDS server: go-control-plane's snapshot cache
// served over ADS, one snapshot per node, from which the weft proxies of
// the paths take their configuration (-appmesh runs weft server instead).
type xdsServer struct {
	addr  string
	cache cachev3.SnapshotCache
}

// startXDS serves ADS on a loopback port until the process exits.
func startXDS(ctx context.Context) *xdsServer {
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	// weft proxy pings its xDS connection every 10 s; gRPC's default
	// policy (5 min) answers that with GOAWAY too_many_pings, and the
	// reconnect resends every resource, which a real weft server does not
	// cause (it permits 5 s, internal/xds/server's keepaliveMinTime) and
	// which leaves the decoding's pages resident in the proxy.
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, cache, nil))
	go func() { _ = g.Serve(ln) }() // lives as long as the bench process
	return &xdsServer{addr: ln.Addr().String(), cache: cache}
}

// set gives node the resources rs.
func (x *xdsServer) set(node string, rs []types.Resource) {
	by := map[string][]types.Resource{}
	for _, r := range rs {
		url := resourcev3.APITypePrefix + string(r.ProtoReflect().Descriptor().FullName())
		by[url] = append(by[url], r)
	}
	snap, err := cachev3.NewSnapshot("1", by)
	if err != nil {
		log.Fatal(err)
	}
	if err := x.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		log.Fatal(err)
	}
}

// accessLogs is -access-log, set once by main before any resources call.
var accessLogs bool

// resources is one sidecar's configuration, shaped like App Mesh's: a
// listener on 127.0.0.1:port whose route sends everything to clusterName
// (weighted cluster, 15 s timeout, retry policy, circuit breakers wide
// open), and that cluster with upstream as its one endpoint, static or
// through EDS.
func resources(prefix string, port int, clusterName, upstream string, static bool) []types.Resource {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	router, _ := anypb.New(&routerv3.Router{})
	var logs []*accesslogv3.AccessLog
	if accessLogs {
		fl, _ := anypb.New(&filev3.FileAccessLog{Path: "/dev/stdout"})
		logs = append(logs, &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fl}})
	}
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: prefix, AccessLog: logs,
		// As the translator: an empty tracing block, so that a tracer
		// configured on the proxy applies.
		Tracing:        &hcmv3.HttpConnectionManager_Tracing{},
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: "rds_" + prefix}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}})
	l := &listenerv3.Listener{Name: "lds_" + prefix, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
	rc := &routev3.RouteConfiguration{Name: "rds_" + prefix, VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
					Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: clusterName, Weight: wrapperspb.UInt32(100)}}, TotalWeight: wrapperspb.UInt32(100)}},
				Timeout: durationpb.New(15 * time.Second),
				RetryPolicy: &routev3.RetryPolicy{RetryOn: "gateway-error,reset,refused-stream,connect-failure", NumRetries: wrapperspb.UInt32(2),
					HostSelectionRetryMaxAttempts: 5}}}}}}}}
	host, p, _ := net.SplitHostPort(upstream)
	pn, _ := strconv.Atoi(p)
	la := &endpointv3.ClusterLoadAssignment{ClusterName: clusterName, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)}}}}}}}}}}}
	max := wrapperspb.UInt32(2147483647)
	c := &clusterv3.Cluster{Name: clusterName, ConnectTimeout: durationpb.New(time.Second),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: max, MaxPendingRequests: max, MaxRequests: max, MaxRetries: max}}}}
	if static {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		c.LoadAssignment = la
		return []types.Resource{l, rc, c}
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}
	return []types.Resource{l, rc, c, la}
}
