package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// egressCluster builds, once, the cluster of a target node's listener as a
// caller sees it, and returns its name. The target's listener brings its
// health check and outlier detection (reference §2.3).
func (b *build) egressCluster(service string, t target, fl flavor) string {
	name := egressClusterName(b.id.Mesh, t.node, t.proto, t.port)
	if b.hostOnly || b.hasCluster(name) {
		return name
	}
	if b.memo != nil && b.memo.cluster(b, name, service, t, fl) {
		return name
	}
	b.newEgressCluster(name, service, t, fl)
	return name
}

// newEgressCluster builds and adds the cluster egressCluster names.
func (b *build) newEgressCluster(name, service string, t target, fl flavor) {
	vn := b.v.VirtualNodes[t.node]
	l := nodeListener(vn, t.port)
	c := &clusterv3.Cluster{Name: name}
	b.discovery(c, vn, t, l, fl)
	if fl == grpcFlavor {
		// gRPC reads only max_requests; its default (1024) would close a
		// circuit App Mesh leaves open.
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: u32(wideOpen)}}}
	} else {
		c.ConnectTimeout = ms(egressConnectTimeoutMs)
		c.CircuitBreakers = breakers(nil, nil, nil, nil)
		c.HealthChecks = healthChecks(l, discoveryName(vn, t.port))
		c.OutlierDetection = outlierDetection(l)
		b.upstreamProtocol(c, t.proto)
	}
	b.clientTLS(c, service, t, fl)
	b.addCluster(c)
}

// nodeListener returns the App Mesh listener of a node on a port.
func nodeListener(vn *appmesh.VirtualNodeData, p uint32) *appmesh.Listener {
	if vn == nil || vn.Spec == nil {
		return nil
	}
	for i := range vn.Spec.Listeners {
		if pp, ok := listenerPortProto(vn.Spec.Listeners[i].PortMapping); ok && pp.port == p {
			return &vn.Spec.Listeners[i]
		}
	}
	return nil
}

// discovery sets how the cluster finds its endpoints; a health check on
// another port than the listener's is set on each endpoint.
//   - awsCloudMap: EDS over ADS, endpoints from View.Endpoints;
//   - dns: LOGICAL_DNS (responseType LOADBALANCER, the default) or
//     STRICT_DNS (ENDPOINTS); gRPC clients only take LOGICAL_DNS;
//   - none: EDS with no endpoints, so calls fail as they did in App Mesh.
func (b *build) discovery(c *clusterv3.Cluster, vn *appmesh.VirtualNodeData, t target, l *appmesh.Listener, fl flavor) {
	hcPort := uint32(0)
	if l != nil && l.HealthCheck != nil && fl == envoyFlavor {
		if p, ok := i64(l.HealthCheck.Port); ok && p > 0 && p <= 65535 && uint32(p) != t.port {
			hcPort = uint32(p)
		}
	}
	var sd *appmesh.ServiceDiscovery
	if vn.Spec != nil {
		sd = vn.Spec.ServiceDiscovery
	}
	if sd != nil && sd.Dns != nil {
		b.dnsDiscovery(c, sd.Dns, t.port, hcPort, fl)
		return
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
	var cm *appmesh.AwsCloudMapServiceDiscovery
	if sd != nil {
		cm = sd.AwsCloudMap
	}
	b.addEndpoints(b.cloudMapEndpoints(c.Name, t, cm, hcPort))
}

func (b *build) dnsDiscovery(c *clusterv3.Cluster, d *appmesh.DnsServiceDiscovery, p, hcPort uint32, fl flavor) {
	typ := clusterv3.Cluster_LOGICAL_DNS
	if d.ResponseType == appmesh.DnsResponseTypeEndpoints && fl == envoyFlavor {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
	c.DnsLookupFamily = dnsFamily(b.ipPreference(d.IpPreference))
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: c.Name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{},
			LoadBalancingWeight: u32(1),
			LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(str(d.Hostname), p, hcPort)},
		}},
	}
}

// dnsFamily maps App Mesh's IP preference as App Mesh did (reference §2.3).
func dnsFamily(p appmesh.IpPreference) clusterv3.Cluster_DnsLookupFamily {
	switch p {
	case appmesh.IpPreferenceIpv4Preferred:
		return clusterv3.Cluster_V4_PREFERRED
	case appmesh.IpPreferenceIpv4Only:
		return clusterv3.Cluster_V4_ONLY
	case appmesh.IpPreferenceIpv6Only:
		return clusterv3.Cluster_V6_ONLY
	}
	return clusterv3.Cluster_AUTO
}

// ipPreference is the node's preference, else the mesh's ("" when neither
// sets one).
func (b *build) ipPreference(node appmesh.IpPreference) appmesh.IpPreference {
	if node != "" {
		return node
	}
	if m := b.v.Mesh; m != nil && m.Spec != nil && m.Spec.ServiceDiscovery != nil {
		return m.Spec.ServiceDiscovery.IpPreference
	}
	return ""
}

// discoveryName is the name a node is discovered by: its DNS hostname or
// its Cloud Map service.namespace, with the port; App Mesh sent it as the
// Host of HTTP health checks.
func discoveryName(vn *appmesh.VirtualNodeData, p uint32) string {
	if vn == nil || vn.Spec == nil || vn.Spec.ServiceDiscovery == nil {
		return ""
	}
	sd := vn.Spec.ServiceDiscovery
	if sd.Dns == nil && sd.AwsCloudMap == nil {
		return ""
	}
	return discoveryHost(vn) + ":" + port(p)
}

// upstreamProtocol makes Envoy speak HTTP/2 to http2 and grpc listeners.
func (b *build) upstreamProtocol(c *clusterv3.Cluster, proto appmesh.PortProtocol) {
	if proto != appmesh.PortProtocolHttp2 && proto != appmesh.PortProtocolGrpc {
		return
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": b.any(opts)}
}

// breakers are circuit breakers with App Mesh's wide-open default for every
// threshold the connection pool leaves unset.
func breakers(maxConns, maxPending, maxRequests, maxRetries *int64) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     u32of(maxConns, wideOpen),
		MaxPendingRequests: u32of(maxPending, wideOpen),
		MaxRequests:        u32of(maxRequests, wideOpen),
		MaxRetries:         u32of(maxRetries, wideOpen),
	}}}
}

// nodePoolBreakers maps a node listener's connection pool: http limits
// connections and pending requests, http2 and grpc limit requests, tcp
// limits connections.
func nodePoolBreakers(p *appmesh.VirtualNodeConnectionPool) *clusterv3.CircuitBreakers {
	switch {
	case p == nil:
	case p.Http != nil:
		return breakers(p.Http.MaxConnections, p.Http.MaxPendingRequests, nil, nil)
	case p.Http2 != nil:
		return breakers(nil, nil, p.Http2.MaxRequests, nil)
	case p.Grpc != nil:
		return breakers(nil, nil, p.Grpc.MaxRequests, nil)
	case p.Tcp != nil:
		return breakers(p.Tcp.MaxConnections, nil, nil, nil)
	}
	return breakers(nil, nil, nil, nil)
}

func gatewayPoolBreakers(p *appmesh.VirtualGatewayConnectionPool) *clusterv3.CircuitBreakers {
	switch {
	case p == nil:
	case p.Http != nil:
		return breakers(p.Http.MaxConnections, p.Http.MaxPendingRequests, nil, nil)
	case p.Http2 != nil:
		return breakers(nil, nil, p.Http2.MaxRequests, nil)
	case p.Grpc != nil:
		return breakers(nil, nil, p.Grpc.MaxRequests, nil)
	}
	return breakers(nil, nil, nil, nil)
}

// staticCluster is a cluster of one local address: a node's own app or a
// gateway's self-redirect hop.
func (b *build) staticCluster(name, addr string, p uint32, proto appmesh.PortProtocol, cb *clusterv3.CircuitBreakers) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       ms(localConnectTimeoutMs),
		CircuitBreakers:      cb,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(addr, p, 0)}}},
		},
	}
	b.upstreamProtocol(c, proto)
	return c
}

// passthroughCluster forwards to the address the application dialled.
func passthroughCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       ms(egressConnectTimeoutMs),
		CircuitBreakers:      breakers(nil, nil, nil, nil),
	}
}
