// Package bootstrap writes the bootstrap of an upstream Envoy that takes its
// configuration from weft, as App Mesh's agent wrote one for its image:
// node id and cluster from the resource ARN, ADS over gRPC for listeners
// and clusters (routes and endpoints follow over the same stream), the
// admin interface on 9901, and App Mesh's static runtime layer.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Config says what the bootstrap is for.
type Config struct {
	// ResourceARN names the virtual node or gateway: a full ARN or
	// mesh/<mesh>/virtualNode/<name> (APPMESH_RESOURCE_ARN). It becomes
	// node.id and node.cluster, as App Mesh's agent set them.
	ResourceARN string
	// XDS is the host:port of weft's xDS listener, or several
	// (host:port,host:port,...) of weft replicas: Envoy's xDS cluster then
	// has one host per address (per A record of a name) and a broken
	// stream reconnects to another.
	XDS string
	// AdminPort is the admin interface's port on 0.0.0.0 (App Mesh: 9901).
	AdminPort uint32
	// CAFile, when set, makes Envoy reach the xDS server over TLS and
	// trust the certificates this PEM file holds.
	CAFile string
	// SDSSocket, when set, is the Unix socket of a local SDS agent
	// (SPIRE's, APPMESH_SDS_SOCKET_PATH): App Mesh's sds.secretName
	// secrets are asked of it on the static cluster
	// static_cluster_sds_unix_socket, and the node says so in its
	// metadata. Without it, weft serves them over ADS.
	SDSSocket string
	// IngressPort and EgressPort, when not 0, are the ports the traffic
	// interception sends traffic to, told to weft server in the node
	// metadata (translate.IngressPortMetadataKey, EgressPortMetadataKey);
	// 0 leaves App Mesh's 15000 and 15001.
	IngressPort, EgressPort uint32
	// LoadReports makes Envoy report its load (LRS) to weft on the xDS
	// cluster, for GET /v1/traffic. App Mesh's bootstrap had no
	// load_stats_config, so the default leaves it out: the bootstrap
	// stays App Mesh's.
	LoadReports bool
	// StatsTags adds App Mesh's fixed stats tags appmesh.mesh and
	// appmesh.virtual_node / appmesh.virtual_gateway
	// (ENABLE_ENVOY_STATS_TAGS).
	StatsTags bool
	// DogStatsD, when set, adds the envoy.stat_sinks.dog_statsd sink
	// (ENABLE_ENVOY_DOG_STATSD).
	DogStatsD *DogStatsD
}

// DogStatsD is where the DogStatsD sink sends: a UDP address (IP and
// port, STATSD_ADDRESS and STATSD_PORT) or a Unix socket
// (STATSD_SOCKET_PATH), every FlushInterval (Envoy's 5 s when 0).
type DogStatsD struct {
	Address       string
	Port          uint32
	SocketPath    string
	FlushInterval time.Duration
}

// xdsCluster is the static cluster of the xDS server; sdsCluster that of
// the local SDS agent, named as App Mesh's bootstrap named it (the
// translator's secrets name it).
const (
	xdsCluster = "weft_xds"
	sdsCluster = "static_cluster_sds_unix_socket"
	// sdsSocketKey is the node metadata the xDS server reads
	// (server.SDSSocketMetadataKey).
	sdsSocketKey = "weft.sds_socket"
)

// Build returns the bootstrap.
func Build(c Config) (*bootstrapv3.Bootstrap, error) {
	if c.ResourceARN == "" {
		return nil, errors.New("no resource ARN")
	}
	addrs, err := parseXDS(c.XDS)
	if err != nil {
		return nil, err
	}
	if c.AdminPort == 0 || c.AdminPort > 65535 {
		return nil, fmt.Errorf("admin port %d out of range", c.AdminPort)
	}
	ads := &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
		ResourceApiVersion:    core.ApiVersion_V3,
	}
	xds, err := xdsClusterOf(addrs, c.CAFile)
	if err != nil {
		return nil, err
	}
	adminLog, err := anypb.New(&fileaccesslogv3.FileAccessLog{Path: "/tmp/envoy_admin_access.log"})
	if err != nil {
		return nil, err
	}
	runtime, err := structpb.NewStruct(map[string]any{
		// App Mesh's static layer (its agent's getRuntimeConfigLayer0).
		"envoy.features.enable_all_deprecated_features":                      true,
		"re2.max_program_size.error_level":                                   1000,
		"envoy.reloadable_features.http_set_tracing_decision_in_request_id":  true,
		"envoy.reloadable_features.no_extension_lookup_by_name":              true,
		"envoy.reloadable_features.use_http_client_to_fetch_aws_credentials": false,
	})
	if err != nil {
		return nil, err
	}
	node := &core.Node{Id: c.ResourceARN, Cluster: c.ResourceARN}
	clusters := []*clusterv3.Cluster{xds}
	md := map[string]any{}
	if c.IngressPort != 0 {
		md[translate.IngressPortMetadataKey] = c.IngressPort
	}
	if c.EgressPort != 0 {
		md[translate.EgressPortMetadataKey] = c.EgressPort
	}
	if c.SDSSocket != "" {
		md[sdsSocketKey] = true
	}
	if len(md) > 0 {
		if node.Metadata, err = structpb.NewStruct(md); err != nil {
			return nil, err
		}
		if _, _, err := translate.ListenerPorts(node.Metadata); err != nil {
			return nil, err
		}
	}
	if c.SDSSocket != "" {
		sds, err := sdsClusterOf(c.SDSSocket)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, sds)
	}
	cm := &bootstrapv3.ClusterManager{
		OutlierDetection: &bootstrapv3.ClusterManager_OutlierDetection{EventLogPath: "/dev/stdout"},
	}
	if c.LoadReports {
		cm.LoadStatsConfig = &core.ApiConfigSource{
			ApiType:             core.ApiConfigSource_GRPC,
			TransportApiVersion: core.ApiVersion_V3,
			GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: xdsCluster},
			}}},
		}
	}
	b := &bootstrapv3.Bootstrap{
		Node: node,
		Admin: &bootstrapv3.Admin{
			Address:   socket("0.0.0.0", c.AdminPort),
			AccessLog: []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: adminLog}}},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType:             core.ApiConfigSource_GRPC,
				TransportApiVersion: core.ApiVersion_V3,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: xdsCluster},
				}}},
			},
			LdsConfig: ads,
			CdsConfig: proto.Clone(ads).(*core.ConfigSource),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: clusters},
		ClusterManager:  cm,
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
			{Name: "static_layer_0", LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: runtime}},
			{Name: "admin_layer", LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}},
		}},
	}
	if err := addStats(b, c); err != nil {
		return nil, err
	}
	return b, nil
}

// addStats adds App Mesh's stats tags and DogStatsD sink, as its agent
// did from the same variables.
func addStats(b *bootstrapv3.Bootstrap, c Config) error {
	if c.StatsTags {
		mesh, typ, name, ok := stats.ResourceOf(c.ResourceARN)
		if !ok {
			return fmt.Errorf("stats tags: resource %q is not mesh/<mesh>/virtualNode|virtualGateway/<name>", c.ResourceARN)
		}
		b.StatsConfig = &metricsv3.StatsConfig{StatsTags: []*metricsv3.TagSpecifier{
			{TagName: "appmesh.mesh", TagValue: &metricsv3.TagSpecifier_FixedValue{FixedValue: mesh}},
			{TagName: "appmesh." + typ, TagValue: &metricsv3.TagSpecifier_FixedValue{FixedValue: name}},
		}}
	}
	d := c.DogStatsD
	if d == nil {
		return nil
	}
	sink := &metricsv3.DogStatsdSink{}
	if d.SocketPath != "" {
		sink.DogStatsdSpecifier = &metricsv3.DogStatsdSink_Address{Address: &core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: d.SocketPath}}}}
	} else {
		if _, err := netip.ParseAddr(d.Address); err != nil {
			return fmt.Errorf("dogstatsd address %q: want an IP address", d.Address)
		}
		sa := socket(d.Address, d.Port)
		sa.GetSocketAddress().Protocol = core.SocketAddress_UDP
		sink.DogStatsdSpecifier = &metricsv3.DogStatsdSink_Address{Address: sa}
	}
	tc, err := anypb.New(sink)
	if err != nil {
		return err
	}
	b.StatsSinks = []*metricsv3.StatsSink{{Name: "envoy.stat_sinks.dog_statsd", ConfigType: &metricsv3.StatsSink_TypedConfig{TypedConfig: tc}}}
	if d.FlushInterval > 0 {
		b.StatsFlushInterval = durationpb.New(d.FlushInterval)
	}
	return nil
}

// xdsClusterOf is the cluster Envoy reaches weft through: HTTP/2 (gRPC),
// keepalive pings every 10 s as App Mesh's bootstrap had them, TLS when a
// CA is given.
func xdsClusterOf(addrs []hostPort, caFile string) (*clusterv3.Cluster, error) {
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{
				ConnectionKeepalive: &core.KeepaliveSettings{
					Interval: durationpb.New(10 * time.Second),
					Timeout:  durationpb.New(20 * time.Second),
				},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	// IP addresses are used as is; a name is resolved to all its A
	// records (STRICT_DNS, re-resolved periodically), every one a host the
	// ADS stream can fail over to.
	typ := clusterv3.Cluster_STATIC
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		if _, err := netip.ParseAddr(a.host); err != nil {
			typ = clusterv3.Cluster_STRICT_DNS
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket(a.host, a.port)}},
		})
	}
	host := addrs[0].host
	cl := &clusterv3.Cluster{
		Name:                          xdsCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: xdsCluster,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
		},
	}
	if caFile != "" {
		tls, err := anypb.New(&tlsv3.UpstreamTlsContext{
			Sni: host,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols: []string{"h2"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: caFile}},
				}},
			},
		})
		if err != nil {
			return nil, err
		}
		cl.TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: tls}}
	}
	return cl, nil
}

// sdsClusterOf is the cluster of the local SDS agent: gRPC (HTTP/2) on a
// Unix socket.
func sdsClusterOf(path string) (*clusterv3.Cluster, error) {
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                          sdsCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: sdsCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &core.Address{
					Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: path}}}}},
			}}}},
		},
	}, nil
}

func socket(host string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       host,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

// JSON renders a bootstrap as indented JSON with the field names of
// Envoy's documentation (snake_case) and stable spacing: protojson varies
// its whitespace on purpose, so the result is re-indented.
func JSON(b *bootstrapv3.Bootstrap) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// Validate checks a bootstrap as Envoy would before starting: the
// protoc-gen-validate rules of every message, including every message
// packed in an Any.
func Validate(m proto.Message) error { return translate.DeepValidate(m) }

type hostPort struct {
	host string
	port uint32
}

// parseXDS reads host:port[,host:port...].
func parseXDS(s string) ([]hostPort, error) {
	var out []hostPort
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, portStr, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("xds address %q: %w", a, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("xds address %q: bad port", a)
		}
		out = append(out, hostPort{host, uint32(port)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("xds address %q: want host:port[,host:port...]", s)
	}
	return out, nil
}
