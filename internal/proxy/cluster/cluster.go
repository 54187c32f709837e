// Package cluster implements weft proxy's upstream clusters: endpoints from
// EDS, DNS or static config, load balancing, circuit breakers, active health
// checks, outlier detection and pooled HTTP/1.1 and h2c connections.
//
// A Manager owns every cluster. Apply (CDS) and SetEndpoints (EDS) build
// the new state completely, then swap it in and stop what it replaced; on
// any error nothing changes and the caller NACKs.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// Errors Pick and Acquire return; the HTTP and TCP handlers map them to
// response flags (UH, UO) and local replies.
var (
	ErrNoHealthyUpstream = errors.New("no healthy upstream")
	ErrOverflow          = errors.New("overflow")
)

// Type is the cluster discovery type.
type Type uint8

// Cluster discovery types weft proxy implements.
const (
	Static Type = iota
	StrictDNS
	LogicalDNS
	EDS
	OriginalDst
)

type lbPolicy uint8

const (
	roundRobin lbPolicy = iota
	leastRequest
	random
	clusterProvided
)

// unlimited is the circuit-breaker value App Mesh uses to mean "off".
const unlimited = math.MaxUint32

// Cluster is one upstream cluster. Its configuration is immutable; its host
// set changes with EDS and DNS.
type Cluster struct {
	Name string
	PB   *clusterv3.Cluster // as accepted, for config_dump
	Type Type

	log            *slog.Logger
	connectTimeout time.Duration
	lb             lbPolicy
	choiceCount    int
	panicThreshold float64 // percent

	hosts   atomic.Pointer[hostSet]
	rr      atomic.Uint64
	origDst sync.Map // ORIGINAL_DST hosts by address

	// HTTP2 is set when upstream requests use h2c; UseDownstream when the
	// downstream protocol decides per request.
	HTTP2, UseDownstream bool
	h1                   *h1Client
	h2                   *http.Transport
	// TLS, when set, wraps every upstream connection (transport_socket).
	TLS *tlsctx.Client

	cb        thresholds
	rqActive  atomic.Int64
	retries   atomic.Int64
	gate      *gate // HTTP/1 connection limit with a pending queue; nil when unlimited
	cxActive  atomic.Int64
	dnsFamily string // "ip", "ip4" or "ip6"
	dnsPrefer string // "ip4"/"ip6" preferred family, "" none
	dnsRate   time.Duration
	dnsTarget []dnsTarget

	hc       *healthCheck
	outlier  *outlierConfig
	cleanup  time.Duration
	hostWake chan struct{} // signalled when the host set changes; buffered 1

	Stats Stats

	stop context.CancelFunc
	wg   sync.WaitGroup
}

type thresholds struct {
	maxConnections, maxPending, maxRequests, maxRetries uint32
}

type dnsTarget struct {
	host   string
	port   uint32
	weight uint32
}

// Stats are a cluster's Envoy stats (cluster.<name>.*).
type Stats struct {
	scope                          stats.Scope
	RqTotal, RqCompleted           *stats.Counter
	RqActive                       *stats.Gauge
	RqTimeout, RqPerTryTimeout     *stats.Counter
	RqRetry, RqRetrySuccess        *stats.Counter
	RqRetryOverflow, RqRetryLimit  *stats.Counter
	RqPendingOverflow, RqPendingTo *stats.Counter
	RqPendingActive                *stats.Gauge
	CxTotal, CxConnectFail         *stats.Counter
	CxConnectTimeout, CxOverflow   *stats.Counter
	CxActive                       *stats.Gauge
	CxNoneHealthy, LbHealthyPanic  *stats.Counter
	RqRxReset, RqTxReset           *stats.Counter
	// RqTime is upstream_rq_time (ms from the first attempt to the end
	// of the response), recorded by the HTTP connection manager.
	RqTime                        *stats.Histogram
	CxConnectMs, CxLengthMs       *stats.Histogram
	codes                         *[600]atomic.Pointer[stats.Counter]
	classes                       [6]*stats.Counter
	hcAttempt, hcSuccess, hcFail  *stats.Counter
	hcNetFail                     *stats.Counter
	odEjectTotal, odEjectEnforced *stats.Counter
	odEject5xx, odEjectGateway    *stats.Counter
	odDetected5xx, odDetectedGw   *stats.Counter
	odOverflow                    *stats.Counter
	membershipChange              *stats.Counter
	updateSuccess, updateEmpty    *stats.Counter
}

func newStats(st *stats.Store, name string) Stats {
	sc := st.Scope("cluster."+name+".", "envoy_cluster_", stats.Label{Name: "envoy_cluster_name", Value: name})
	s := Stats{scope: sc, codes: new([600]atomic.Pointer[stats.Counter]),
		RqTotal: sc.Counter("upstream_rq_total"), RqCompleted: sc.Counter("upstream_rq_completed"),
		RqActive: sc.Gauge("upstream_rq_active"), RqTimeout: sc.Counter("upstream_rq_timeout"),
		RqPerTryTimeout: sc.Counter("upstream_rq_per_try_timeout"), RqRetry: sc.Counter("upstream_rq_retry"),
		RqRetrySuccess: sc.Counter("upstream_rq_retry_success"), RqRetryOverflow: sc.Counter("upstream_rq_retry_overflow"),
		RqRetryLimit:      sc.Counter("upstream_rq_retry_limit_exceeded"),
		RqPendingOverflow: sc.Counter("upstream_rq_pending_overflow"), RqPendingTo: sc.Counter("upstream_rq_pending_total"),
		RqPendingActive: sc.Gauge("upstream_rq_pending_active"), CxTotal: sc.Counter("upstream_cx_total"),
		CxConnectFail: sc.Counter("upstream_cx_connect_fail"), CxConnectTimeout: sc.Counter("upstream_cx_connect_timeout"),
		CxOverflow: sc.Counter("upstream_cx_overflow"), CxActive: sc.Gauge("upstream_cx_active"),
		CxNoneHealthy: sc.Counter("upstream_cx_none_healthy"), LbHealthyPanic: sc.Counter("lb_healthy_panic"),
		RqRxReset: sc.Counter("upstream_rq_rx_reset"), RqTxReset: sc.Counter("upstream_rq_tx_reset"),
		hcAttempt: sc.Counter("health_check.attempt"), hcSuccess: sc.Counter("health_check.success"),
		hcFail: sc.Counter("health_check.failure"), hcNetFail: sc.Counter("health_check.network_failure"),
		odEjectTotal: sc.Counter("outlier_detection.ejections_total"), odEjectEnforced: sc.Counter("outlier_detection.ejections_enforced_total"),
		odEject5xx: sc.Counter("outlier_detection.ejections_enforced_consecutive_5xx"), odEjectGateway: sc.Counter("outlier_detection.ejections_enforced_consecutive_gateway_failure"),
		odDetected5xx: sc.Counter("outlier_detection.ejections_detected_consecutive_5xx"), odDetectedGw: sc.Counter("outlier_detection.ejections_detected_consecutive_gateway_failure"),
		odOverflow:       sc.Counter("outlier_detection.ejections_overflow"),
		membershipChange: sc.Counter("membership_change"), updateSuccess: sc.Counter("update_success"),
		updateEmpty: sc.Counter("update_empty"),
		RqTime:      sc.Histogram("upstream_rq_time"), CxConnectMs: sc.Histogram("upstream_cx_connect_ms"),
		CxLengthMs: sc.Histogram("upstream_cx_length_ms"),
	}
	for i := 1; i <= 5; i++ {
		s.classes[i] = sc.TaggedCounter(fmt.Sprintf("upstream_rq_%dxx", i), "upstream_rq_xx",
			stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	return s
}

// Response counts one upstream response status.
func (s *Stats) Response(code int) {
	if code < 100 || code >= 600 {
		return
	}
	c := s.codes[code].Load()
	if c == nil {
		c = s.scope.TaggedCounter("upstream_rq_"+strconv.Itoa(code), "upstream_rq",
			stats.Label{Name: "envoy_response_code", Value: strconv.Itoa(code)})
		s.codes[code].Store(c)
	}
	c.Inc()
	s.classes[code/100].Inc()
	s.RqCompleted.Inc()
}

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
		connectTimeout: 5 * time.Second, panicThreshold: 50, choiceCount: 2,
		dnsFamily: "ip", dnsRate: 5 * time.Second, cleanup: 5 * time.Second,
		hostWake: make(chan struct{}, 1), Stats: newStats(st, pb.GetName())}
	if t := pb.GetConnectTimeout(); t != nil {
		c.connectTimeout = t.AsDuration()
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
		c.dnsRate = t.AsDuration()
	}
	switch pb.GetDnsLookupFamily() {
	case clusterv3.Cluster_AUTO:
		c.dnsPrefer = "ip6"
	case clusterv3.Cluster_V4_ONLY:
		c.dnsFamily = "ip4"
	case clusterv3.Cluster_V6_ONLY:
		c.dnsFamily = "ip6"
	case clusterv3.Cluster_V4_PREFERRED:
		c.dnsPrefer = "ip4"
	case clusterv3.Cluster_ALL:
	}
	if err := c.buildCircuitBreakers(pb, path); err != nil {
		return nil, err
	}
	if err := c.buildProtocol(pb, path); err != nil {
		return nil, err
	}
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
		if err := checkH2(pb.GetHttp2ProtocolOptions(), path+".http2_protocol_options"); err != nil {
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
				if err := checkH2(e.GetHttp2ProtocolOptions(), kp+".explicit_http_config.http2_protocol_options"); err != nil {
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
// itself (window sizes, stream limits).
func checkH2(o *corev3.Http2ProtocolOptions, path string) error {
	return strict.Fields(o, path, "max_concurrent_streams", "initial_stream_window_size",
		"initial_connection_window_size", "hpack_table_size", "connection_keepalive")
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

func (c *Cluster) buildLoadAssignment(la *endpointv3.ClusterLoadAssignment, path string) error {
	switch c.Type {
	case EDS, OriginalDst:
		if la != nil && len(la.GetEndpoints()) > 0 {
			return fmt.Errorf("%s: not allowed for EDS and ORIGINAL_DST clusters", path)
		}
		return nil
	}
	if la == nil {
		return fmt.Errorf("%s: required for STATIC and DNS clusters", path)
	}
	if c.Type == Static {
		hosts, err := hostsFromCLA(la, path, nil)
		if err != nil {
			return err
		}
		c.hosts.Store(newHostSet(hosts))
		return nil
	}
	err := walkCLA(la, path, func(ep *endpointv3.LbEndpoint, sa *corev3.SocketAddress, w uint32) error {
		c.dnsTarget = append(c.dnsTarget, dnsTarget{host: sa.GetAddress(), port: sa.GetPortValue(), weight: w})
		return nil
	})
	if err != nil {
		return err
	}
	if c.Type == LogicalDNS && len(c.dnsTarget) != 1 {
		return fmt.Errorf("%s: LOGICAL_DNS clusters take exactly one endpoint, got %d", path, len(c.dnsTarget))
	}
	c.hosts.Store(newHostSet(nil))
	return nil
}

// walkCLA checks a ClusterLoadAssignment and calls fn for every endpoint.
func walkCLA(la *endpointv3.ClusterLoadAssignment, path string, fn func(*endpointv3.LbEndpoint, *corev3.SocketAddress, uint32) error) error {
	// policy.overprovisioning_factor only matters with several priorities
	// or locality weighting, which weft does not do.
	if err := strict.Fields(la, path, "cluster_name", "endpoints", "policy"); err != nil {
		return err
	}
	if p := la.GetPolicy(); p != nil {
		if err := strict.Fields(p, path+".policy", "overprovisioning_factor", "weighted_priority_health"); err != nil {
			return err
		}
	}
	for i, loc := range la.GetEndpoints() {
		lp := strict.Join(path, "endpoints", i)
		if err := strict.Fields(loc, lp, "locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"); err != nil {
			return err
		}
		if loc.GetPriority() != 0 {
			return strict.Value(lp, "priority", loc.GetPriority(), "weft proxy balances over priority 0 only")
		}
		for j, ep := range loc.GetLbEndpoints() {
			ep2 := strict.Join(lp, "lb_endpoints", j)
			if err := strict.Fields(ep, ep2, "endpoint", "health_status", "metadata", "load_balancing_weight"); err != nil {
				return err
			}
			e := ep.GetEndpoint()
			if err := strict.Fields(e, ep2+".endpoint", "address", "hostname", "health_check_config"); err != nil {
				return err
			}
			if hc := e.GetHealthCheckConfig(); hc != nil {
				if err := strict.Fields(hc, ep2+".endpoint.health_check_config", "port_value"); err != nil {
					return err
				}
			}
			a := e.GetAddress()
			if err := strict.Fields(a, ep2+".endpoint.address", "socket_address"); err != nil {
				return err
			}
			sa := a.GetSocketAddress()
			if sa == nil {
				return fmt.Errorf("%s.endpoint.address: socket_address is required", ep2)
			}
			if err := strict.Fields(sa, ep2+".endpoint.address.socket_address", "protocol", "address", "port_value", "ipv4_compat"); err != nil {
				return err
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return strict.Value(ep2, "socket_address.protocol", sa.GetProtocol(), "TCP only")
			}
			w := uint32(1)
			if ep.GetLoadBalancingWeight() != nil {
				w = ep.GetLoadBalancingWeight().GetValue()
			}
			if err := fn(ep, sa, w); err != nil {
				return fmt.Errorf("%s: %w", ep2, err)
			}
		}
	}
	return nil
}

// hostsFromCLA returns hosts for an assignment, reusing hosts of old that
// keep their address so health and outlier state survive the update.
func hostsFromCLA(la *endpointv3.ClusterLoadAssignment, path string, old *hostSet) ([]*Host, error) {
	prev := map[string]*Host{}
	if old != nil {
		for _, h := range old.hosts {
			prev[h.Addr] = h
		}
	}
	var hosts []*Host
	seen := map[string]bool{}
	err := walkCLA(la, path, func(ep *endpointv3.LbEndpoint, sa *corev3.SocketAddress, w uint32) error {
		ip := net.ParseIP(sa.GetAddress())
		if ip == nil {
			return fmt.Errorf("address %q is not an IP address", sa.GetAddress())
		}
		addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		if seen[addr] {
			return nil // Envoy dedups identical endpoints too
		}
		seen[addr] = true
		h := prev[addr]
		if h == nil || h.Weight != w {
			nh := &Host{Addr: addr, Weight: w}
			if h != nil {
				nh.flags.Store(h.flags.Load())
			}
			h = nh
		}
		switch ep.GetHealthStatus() {
		case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
			h.setFlag(edsUnhealthy, true)
		default:
			h.setFlag(edsUnhealthy, false)
		}
		hosts = append(hosts, h)
		return nil
	})
	return hosts, err
}

// CheckEndpoints validates an assignment without applying it.
func CheckEndpoints(la *endpointv3.ClusterLoadAssignment) error {
	_, err := hostsFromCLA(la, "cluster_load_assignment "+la.GetClusterName(), nil)
	return err
}

func (c *Cluster) setHosts(hosts []*Host) {
	if c.hc != nil {
		for _, h := range hosts {
			if !h.checked.Load() && h.flags.Load()&failedActiveHC == 0 {
				// New hosts are unhealthy until their first check passes, as in Envoy.
				h.setFlag(failedActiveHC|pendingActiveHC, true)
			}
		}
	}
	c.hosts.Store(newHostSet(hosts))
	c.Stats.membershipChange.Inc()
	select {
	case c.hostWake <- struct{}{}:
	default:
	}
}

// setEndpoints applies an EDS assignment.
func (c *Cluster) setEndpoints(la *endpointv3.ClusterLoadAssignment) error {
	hosts, err := hostsFromCLA(la, "cluster_load_assignment "+la.GetClusterName(), c.hosts.Load())
	if err != nil {
		return err
	}
	c.setHosts(hosts)
	c.Stats.updateSuccess.Inc()
	if len(hosts) == 0 {
		c.Stats.updateEmpty.Inc()
	}
	return nil
}

// Hosts returns the current hosts (shared; do not modify).
func (c *Cluster) Hosts() []*Host {
	if hs := c.hosts.Load(); hs != nil {
		return hs.hosts
	}
	return nil
}

// start launches the cluster's background work: DNS resolution, health
// checks, outlier un-ejection and ORIGINAL_DST cleanup. stop ends it.
func (c *Cluster) start(ctx context.Context, st *stats.Store) {
	ctx, c.stop = context.WithCancel(ctx)
	if c.hosts.Load() == nil {
		c.hosts.Store(newHostSet(nil))
	}
	sc := c.Stats.scope
	sc.GaugeFunc("membership_total", func() int64 { return int64(len(c.Hosts())) })
	sc.GaugeFunc("membership_healthy", func() int64 {
		n := 0
		for _, h := range c.Hosts() {
			if h.Healthy() {
				n++
			}
		}
		return int64(n)
	})
	sc.GaugeFunc("outlier_detection.ejections_active", func() int64 {
		n := 0
		for _, h := range c.Hosts() {
			if h.flags.Load()&outlierEjected != 0 {
				n++
			}
		}
		return int64(n)
	})
	open := func(cur func() int64, max uint32) func() int64 {
		return func() int64 {
			if cur() >= int64(max) {
				return 1
			}
			return 0
		}
	}
	sc.GaugeFunc("circuit_breakers.default.cx_open", open(c.cxActive.Load, c.cb.maxConnections))
	sc.GaugeFunc("circuit_breakers.default.rq_open", open(c.rqActive.Load, c.cb.maxRequests))
	sc.GaugeFunc("circuit_breakers.default.rq_retry_open", open(c.retries.Load, c.cb.maxRetries))
	sc.GaugeFunc("circuit_breakers.default.rq_pending_open", func() int64 {
		if c.gate != nil && c.gate.pendingFull() {
			return 1
		}
		return 0
	})
	if len(c.dnsTarget) > 0 {
		c.wg.Add(1)
		go c.resolveLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.hc != nil {
		c.wg.Add(1)
		go c.healthLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.outlier != nil {
		c.wg.Add(1)
		go c.outlierLoop(ctx) // ends with ctx; waited for by stop
	}
	if c.Type == OriginalDst {
		c.wg.Add(1)
		go c.cleanupLoop(ctx) // ends with ctx; waited for by stop
	}
}

// halt stops background work and closes idle upstream connections.
// In-flight requests finish on their connections.
func (c *Cluster) halt() {
	if c.stop != nil {
		c.stop()
	}
	c.wg.Wait()
	if c.h1 != nil {
		c.h1.closeIdle()
	}
	if c.h2 != nil {
		c.h2.CloseIdleConnections()
	}
}

// Pick chooses a host for a request. avoid, when non-nil, rejects hosts
// (the previous_hosts retry predicate), tried up to attempts times.
func (c *Cluster) Pick(avoid func(*Host) bool, attempts int) (*Host, error) {
	hs := c.hosts.Load()
	n := len(hs.hosts)
	if n == 0 {
		c.Stats.CxNoneHealthy.Inc()
		return nil, ErrNoHealthyUpstream
	}
	healthy := 0
	for _, h := range hs.hosts {
		if h.Healthy() {
			healthy++
		}
	}
	all := false
	if float64(healthy)*100 < c.panicThreshold*float64(n) {
		// Panic: too few healthy hosts, balance over all of them.
		c.Stats.LbHealthyPanic.Inc()
		all = true
	} else if healthy == 0 {
		c.Stats.CxNoneHealthy.Inc()
		return nil, ErrNoHealthyUpstream
	}
	if attempts < 1 {
		attempts = 1
	}
	var h *Host
	for i := 0; i < attempts; i++ {
		h = c.pickOnce(hs, all)
		if avoid == nil || !avoid(h) {
			break
		}
	}
	return h, nil
}

func (c *Cluster) pickOnce(hs *hostSet, all bool) *Host {
	ok := func(h *Host) bool { return all || h.Healthy() }
	n := len(hs.hosts)
	switch {
	case c.lb == random || c.lb == leastRequest:
		var best *Host
		choices := 1
		if c.lb == leastRequest {
			choices = c.choiceCount
		}
		for k := 0; k < choices; k++ {
			start := rand.IntN(n)
			for i := 0; i < n; i++ {
				h := hs.hosts[(start+i)%n]
				if ok(h) {
					if best == nil || h.rqActive.Load() < best.rqActive.Load() {
						best = h
					}
					break
				}
			}
		}
		return best
	case hs.weighted:
		hs.mu.Lock()
		defer hs.mu.Unlock()
		var total int64
		best := -1
		for i, h := range hs.hosts {
			if !ok(h) || h.Weight == 0 {
				continue
			}
			hs.cur[i] += int64(h.Weight)
			total += int64(h.Weight)
			if best < 0 || hs.cur[i] > hs.cur[best] {
				best = i
			}
		}
		if best < 0 {
			return hs.hosts[0]
		}
		hs.cur[best] -= total
		return hs.hosts[best]
	default:
		start := int(c.rr.Add(1) % uint64(n))
		for i := 0; i < n; i++ {
			if h := hs.hosts[(start+i)%n]; ok(h) {
				return h
			}
		}
		return hs.hosts[start]
	}
}

// OriginalDstHost returns the host for an ORIGINAL_DST connection to addr.
func (c *Cluster) OriginalDstHost(addr string) *Host {
	if v, ok := c.origDst.Load(addr); ok {
		h := v.(*Host)
		h.lastUsed.Store(time.Now().UnixNano())
		return h
	}
	h := &Host{Addr: addr, Weight: 1}
	h.lastUsed.Store(time.Now().UnixNano())
	v, _ := c.origDst.LoadOrStore(addr, h)
	return v.(*Host)
}

func (c *Cluster) cleanupLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.cleanup)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.origDst.Range(func(k, v any) bool {
				h := v.(*Host)
				if h.rqActive.Load() == 0 && h.cxActive.Load() == 0 && now.UnixNano()-h.lastUsed.Load() > int64(c.cleanup) {
					c.origDst.Delete(k)
				}
				return true
			})
		}
	}
}

// Acquire reserves a request slot under the circuit breakers; release
// returns it. HTTP/1.1 requests also need a connection slot and may wait
// in the pending queue until ctx ends.
func (c *Cluster) Acquire(ctx context.Context, http1 bool) (release func(), err error) {
	if n := c.rqActive.Add(1); n > int64(c.cb.maxRequests) {
		c.rqActive.Add(-1)
		c.Stats.RqPendingOverflow.Inc()
		return nil, ErrOverflow
	}
	c.Stats.RqActive.Inc()
	done := func() {
		c.rqActive.Add(-1)
		c.Stats.RqActive.Dec()
	}
	if !http1 || c.gate == nil {
		return done, nil
	}
	if err := c.gate.acquire(ctx, c); err != nil {
		done()
		return nil, err
	}
	return func() { c.gate.release(); done() }, nil
}

// AcquireRetry reserves a retry under max_retries.
func (c *Cluster) AcquireRetry() (release func(), ok bool) {
	if n := c.retries.Add(1); n > int64(c.cb.maxRetries) {
		c.retries.Add(-1)
		c.Stats.RqRetryOverflow.Inc()
		return nil, false
	}
	return func() { c.retries.Add(-1) }, true
}

// gate limits concurrent HTTP/1.1 exchanges to max_connections, queueing
// up to max_pending_requests more, as Envoy's HTTP/1 pool does.
type gate struct {
	mu         sync.Mutex
	active     int             // protected by mu
	waiters    []chan struct{} // FIFO; protected by mu
	maxActive  int
	maxPending int
}

func (g *gate) pendingFull() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiters) >= g.maxPending
}

func (g *gate) acquire(ctx context.Context, c *Cluster) error {
	g.mu.Lock()
	if g.active < g.maxActive {
		g.active++
		g.mu.Unlock()
		return nil
	}
	c.Stats.CxOverflow.Inc()
	if len(g.waiters) >= g.maxPending {
		g.mu.Unlock()
		c.Stats.RqPendingOverflow.Inc()
		return ErrOverflow
	}
	ch := make(chan struct{})
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
	c.Stats.RqPendingTo.Inc()
	c.Stats.RqPendingActive.Inc()
	defer c.Stats.RqPendingActive.Dec()
	select {
	case <-ch: // release handed its slot over
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		for i, w := range g.waiters {
			if w == ch {
				g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
				g.mu.Unlock()
				return ctx.Err()
			}
		}
		g.mu.Unlock()
		// The slot was handed over just as ctx ended: give it back.
		g.release()
		return ctx.Err()
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiters) > 0 {
		ch := g.waiters[0]
		g.waiters = g.waiters[1:]
		close(ch) // the slot passes to the waiter; active is unchanged
		return
	}
	g.active--
}

// Thresholds returns the default-priority circuit breaker limits.
func (c *Cluster) Thresholds() (maxConnections, maxPending, maxRequests, maxRetries uint32) {
	return c.cb.maxConnections, c.cb.maxPending, c.cb.maxRequests, c.cb.maxRetries
}
