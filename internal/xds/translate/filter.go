package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Filter names, with the typed_config type URL Envoy looks them up by.
const (
	hcmFilterName      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilterName = "envoy.filters.network.tcp_proxy"
	routerFilterName   = "envoy.filters.http.router"
)

// hcm is an HTTP connection manager reading its routes over RDS. The Envoy
// flavor carries App Mesh's settings: path normalisation and merged
// slashes (path and prefix matches rely on them), websocket upgrades on
// http, an empty tracing block so that a tracer set in the bootstrap
// applies, and the access log. No http_protocol_options: as App Mesh's,
// the proxy refuses HTTP/1.0 requests (426, accept_http_10 unset).
func (b *build) hcm(statPrefix, rds string, proto appmesh.PortProtocol, logs []*accesslogv3.AccessLog, fl flavor) *hcmv3.HttpConnectionManager {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: rds}},
		// The router must be the last filter; Envoy and gRPC refuse otherwise.
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       routerFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&routerv3.Router{})},
		}},
	}
	if fl == grpcFlavor {
		return m
	}
	m.AccessLog = logs
	m.NormalizePath = wrapperspb.Bool(true)
	m.MergeSlashes = true
	m.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	m.Tracing = &hcmv3.HttpConnectionManager_Tracing{}
	if proto == appmesh.PortProtocolHttp {
		m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	}
	return m
}

// hcmKey names a connection manager filter without access logs: hcm
// reads nothing else.
type hcmKey struct {
	statPrefix, rds string
	proto           appmesh.PortProtocol
}

// envoyHCMFilter is hcmFilter(hcm(...)) for Envoy, the same message for
// every proxy of a batch when there are no access logs (logs are built
// per proxy).
func (b *build) envoyHCMFilter(statPrefix, rds string, proto appmesh.PortProtocol, logs []*accesslogv3.AccessLog) *listenerv3.Filter {
	if len(logs) > 0 {
		return b.hcmFilter(b.hcm(statPrefix, rds, proto, logs, envoyFlavor))
	}
	return memoized(b, hcmKey{statPrefix, rds, proto}, func() *listenerv3.Filter {
		return b.hcmFilter(b.hcm(statPrefix, rds, proto, nil, envoyFlavor))
	})
}

func (b *build) hcmFilter(m *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{Name: hcmFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(m)}}
}

// tcpProxyFilter forwards connections to one cluster, or splits them by
// weight; tcp_proxy refuses zero weights, so those targets are left out.
// idle is in milliseconds (0 disables it, as in App Mesh), -1 for Envoy's
// default (1 h).
func (b *build) tcpProxyFilter(statPrefix string, clusters []string, weights []uint32, idle int64, logs []*accesslogv3.AccessLog) *listenerv3.Filter {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix, AccessLog: logs}
	var wc []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	for i, c := range clusters {
		if weights == nil || weights[i] > 0 {
			w := uint32(1)
			if weights != nil {
				w = weights[i]
			}
			wc = append(wc, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c, Weight: w})
		}
	}
	switch len(wc) {
	case 0:
		return nil
	case 1:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: wc[0].Name}
	default:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: wc}}
	}
	if idle >= 0 {
		tp.IdleTimeout = ms(idle)
	}
	return &listenerv3.Filter{Name: tcpProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(tp)}}
}
