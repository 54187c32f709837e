package cluster

import (
	"fmt"
	"log/slog"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// Build validates a Cluster and returns it unstarted. ts resolves the
// certificates of its transport socket; nil refuses TLS.
func Build(pb *clusterv3.Cluster, st *stats.Store, log *slog.Logger, ts *tlsctx.Store) (*Cluster, error) {
	path := "cluster " + pb.GetName()
	// alt_stat_name, metadata, track_cluster_stats, dns_jitter and
	// respect_dns_ttl change no behaviour weft proxy has; drain on host
	// removal is what weft does anyway.
	if err := strict.Fields(pb, path, "name", "alt_stat_name", "type", "eds_cluster_config",
		"connect_timeout", "per_connection_buffer_limit_bytes", "lb_policy", "load_assignment",
		"health_checks", "circuit_breakers", "common_http_protocol_options",
		"http_protocol_options", "http2_protocol_options", "typed_extension_protocol_options",
		"dns_refresh_rate", "dns_lookup_family", "outlier_detection", "cleanup_interval",
		"common_lb_config", "metadata", "ignore_health_on_host_removal",
		"least_request_lb_config", "respect_dns_ttl", "dns_jitter", "original_dst_lb_config",
		"track_cluster_stats", "wait_for_warm_on_init", "close_connections_on_host_health_failure",
		"transport_socket"); err != nil {
		return nil, err
	}
	if pb.GetName() == "" {
		return nil, fmt.Errorf("cluster: name is required")
	}
	c := &Cluster{Name: pb.GetName(), PB: pb, log: log.With("cluster", pb.GetName()),
		ConnectTimeout: 5 * time.Second, panicThreshold: 50, choiceCount: 2,
		dnsRate: 5 * time.Second, cleanup: 5 * time.Second,
		hostWake: make(chan struct{}, 1), Stats: newStats(st, pb.GetName())}
	if t := pb.GetConnectTimeout(); t != nil {
		// Envoy's proto validation refuses 0 and less (gt 0): on the
		// goroutine path every connect failed at once, and the loops took
		// it for unset.
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("%s: connect_timeout: value is not a valid duration", path)
		}
		if d := t.AsDuration(); d <= 0 {
			return nil, fmt.Errorf("%s: connect_timeout %v: value must be greater than 0s", path, d)
		}
		c.ConnectTimeout = t.AsDuration()
	}
	switch pb.GetType() {
	case clusterv3.Cluster_STATIC:
		c.Type = Static
	case clusterv3.Cluster_STRICT_DNS:
		c.Type = StrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		c.Type = LogicalDNS
	case clusterv3.Cluster_EDS:
		c.Type = EDS
		ec := pb.GetEdsClusterConfig()
		if err := strict.Fields(ec, path+".eds_cluster_config", "eds_config", "service_name"); err != nil {
			return nil, err
		}
		if ec.GetServiceName() != "" && ec.GetServiceName() != pb.GetName() {
			return nil, strict.Value(path, "eds_cluster_config.service_name", ec.GetServiceName(), "EDS resources are looked up by cluster name")
		}
		cs := ec.GetEdsConfig()
		if cs == nil || (cs.GetAds() == nil && cs.GetSelf() == nil) {
			return nil, strict.Value(path, "eds_cluster_config.eds_config", cs, "weft proxy fetches EDS over ADS only")
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		c.Type = OriginalDst
		if o := pb.GetOriginalDstLbConfig(); o != nil {
			if err := strict.Fields(o, path+".original_dst_lb_config"); err != nil {
				return nil, err
			}
		}
	default:
		if pb.GetClusterType() != nil {
			return nil, &strict.UnsupportedError{Path: path, Field: "cluster_type"}
		}
		return nil, strict.Value(path, "type", pb.GetType(), "not implemented")
	}
	switch pb.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		c.lb = roundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		c.lb = leastRequest
		if lr := pb.GetLeastRequestLbConfig(); lr != nil {
			if err := strict.Fields(lr, path+".least_request_lb_config", "choice_count"); err != nil {
				return nil, err
			}
			if n := lr.GetChoiceCount(); n != nil {
				c.choiceCount = int(n.GetValue())
			}
		}
	case clusterv3.Cluster_RANDOM:
		c.lb = random
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		c.lb = clusterProvided
	default:
		return nil, strict.Value(path, "lb_policy", pb.GetLbPolicy(), "weft proxy implements ROUND_ROBIN, LEAST_REQUEST and RANDOM")
	}
	if (c.Type == OriginalDst) != (c.lb == clusterProvided) {
		return nil, fmt.Errorf("%s: ORIGINAL_DST clusters need lb_policy CLUSTER_PROVIDED and only they may use it", path)
	}
	if lc := pb.GetCommonLbConfig(); lc != nil {
		if err := strict.Fields(lc, path+".common_lb_config", "healthy_panic_threshold"); err != nil {
			return nil, err
		}
		if p := lc.GetHealthyPanicThreshold(); p != nil {
			c.panicThreshold = p.GetValue()
		}
	}
	if t := pb.GetCleanupInterval(); t != nil {
		c.cleanup = t.AsDuration()
	}
	if t := pb.GetDnsRefreshRate(); t != nil {
		// Envoy's proto validation refuses 1 ms and less; 0 made the
		// resolve loop ask without pause.
		if d := t.AsDuration(); d <= time.Millisecond {
			return nil, fmt.Errorf("%s: dns_refresh_rate %v: value must be greater than 1ms", path, d)
		}
		c.dnsRate = t.AsDuration()
	}
	switch f := pb.GetDnsLookupFamily(); f {
	case clusterv3.Cluster_AUTO, clusterv3.Cluster_V4_ONLY, clusterv3.Cluster_V6_ONLY,
		clusterv3.Cluster_V4_PREFERRED, clusterv3.Cluster_ALL:
		c.dnsLookup = f
	default:
		// As Envoy's proto validation words it.
		return nil, fmt.Errorf("%s: dns_lookup_family %d: value must be one of the defined enum values", path, f)
	}
	if err := c.buildCircuitBreakers(pb, path); err != nil {
		return nil, err
	}
	if err := c.buildProtocol(pb, path); err != nil {
		return nil, err
	}
	c.IdleTimeout = c.idleTimeout()
	if err := c.buildTLS(pb, path, st, ts); err != nil {
		return nil, err
	}
	if err := c.buildLoadAssignment(pb.GetLoadAssignment(), path+".load_assignment"); err != nil {
		return nil, err
	}
	for i, hc := range pb.GetHealthChecks() {
		if i > 0 {
			return nil, fmt.Errorf("%s.health_checks: weft proxy runs one health checker per cluster", path)
		}
		h, err := buildHealthCheck(hc, strict.Join(path, "health_checks", i), c.Name)
		if err != nil {
			return nil, err
		}
		c.hc = h
	}
	if od := pb.GetOutlierDetection(); od != nil {
		o, err := buildOutlier(od, path+".outlier_detection")
		if err != nil {
			return nil, err
		}
		c.outlier = o
	}
	c.transports()
	// Made once: Acquire returns them without a closure per request.
	c.releaseRq, c.releaseRqCx = c.releaseRequest, c.releaseRequestConnection
	return c, nil
}

func (c *Cluster) buildCircuitBreakers(pb *clusterv3.Cluster, path string) error {
	// Envoy's defaults when no thresholds are given.
	c.cb = thresholds{maxConnections: 1024, maxPending: 1024, maxRequests: 1024, maxRetries: 3}
	cb := pb.GetCircuitBreakers()
	if cb == nil {
		return nil
	}
	if err := strict.Fields(cb, path+".circuit_breakers", "thresholds"); err != nil {
		return err
	}
	for i, t := range cb.GetThresholds() {
		tp := strict.Join(path+".circuit_breakers", "thresholds", i)
		if err := strict.Fields(t, tp, "priority", "max_connections", "max_pending_requests",
			"max_requests", "max_retries", "track_remaining"); err != nil {
			return err
		}
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue // weft routes everything at default priority
		}
		if v := t.GetMaxConnections(); v != nil {
			c.cb.maxConnections = v.GetValue()
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			c.cb.maxPending = v.GetValue()
		}
		if v := t.GetMaxRequests(); v != nil {
			c.cb.maxRequests = v.GetValue()
		}
		if v := t.GetMaxRetries(); v != nil {
			c.cb.maxRetries = v.GetValue()
		}
	}
	return nil
}

func (c *Cluster) buildProtocol(pb *clusterv3.Cluster, path string) error {
	if pb.GetHttp2ProtocolOptions() != nil {
		if err := c.checkH2(pb.GetHttp2ProtocolOptions(), path+".http2_protocol_options"); err != nil {
			return err
		}
		c.HTTP2 = true
	}
	if o := pb.GetHttpProtocolOptions(); o != nil {
		if err := strict.Fields(o, path+".http_protocol_options"); err != nil {
			return err
		}
	}
	if o := pb.GetCommonHttpProtocolOptions(); o != nil {
		if err := strict.Fields(o, path+".common_http_protocol_options", "idle_timeout"); err != nil {
			return err
		}
	}
	for k, v := range pb.GetTypedExtensionProtocolOptions() {
		kp := path + ".typed_extension_protocol_options[" + k + "]"
		m, err := v.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w", kp, err)
		}
		hpo, ok := m.(*httpv3.HttpProtocolOptions)
		if !ok {
			return fmt.Errorf("%s: %s is not supported by weft proxy", kp, proto.MessageName(m))
		}
		if err := strict.Fields(hpo, kp, "common_http_protocol_options", "explicit_http_config",
			"use_downstream_protocol_config"); err != nil {
			return err
		}
		if o := hpo.GetCommonHttpProtocolOptions(); o != nil {
			if err := strict.Fields(o, kp+".common_http_protocol_options", "idle_timeout"); err != nil {
				return err
			}
		}
		if e := hpo.GetExplicitHttpConfig(); e != nil {
			switch {
			case e.GetHttp2ProtocolOptions() != nil:
				if err := c.checkH2(e.GetHttp2ProtocolOptions(), kp+".explicit_http_config.http2_protocol_options"); err != nil {
					return err
				}
				c.HTTP2 = true
			case e.GetHttpProtocolOptions() != nil:
				if err := strict.Fields(e.GetHttpProtocolOptions(), kp+".explicit_http_config.http_protocol_options"); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%s.explicit_http_config: weft proxy speaks HTTP/1.1 or HTTP/2 upstream", kp)
			}
		}
		if hpo.GetUseDownstreamProtocolConfig() != nil {
			c.UseDownstream = true
		}
	}
	return nil
}

// checkH2 accepts HTTP/2 options whose values Go's HTTP/2 client manages
// itself (stream limits, HPACK, keepalive), and takes the windows, which
// both paths give the upstream (H2Windows), refusing one outside Envoy's
// range.
func (c *Cluster) checkH2(o *corev3.Http2ProtocolOptions, path string) error {
	if err := strict.Fields(o, path, "max_concurrent_streams", "initial_stream_window_size",
		"initial_connection_window_size", "hpack_table_size", "connection_keepalive"); err != nil {
		return err
	}
	w, err := route.H2WindowsOf(o, path)
	if err != nil {
		return err
	}
	c.H2Windows = w
	return nil
}

func (c *Cluster) idleTimeout() time.Duration {
	d := time.Hour // Envoy's default upstream idle timeout
	if o := c.PB.GetCommonHttpProtocolOptions(); o != nil && o.GetIdleTimeout() != nil {
		d = o.GetIdleTimeout().AsDuration()
	}
	for _, v := range c.PB.GetTypedExtensionProtocolOptions() {
		m, err := v.UnmarshalNew()
		if err != nil {
			continue // checked in Build
		}
		if hpo, ok := m.(*httpv3.HttpProtocolOptions); ok && hpo.GetCommonHttpProtocolOptions().GetIdleTimeout() != nil {
			d = hpo.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration()
		}
	}
	return d
}
