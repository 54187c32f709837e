// Package httpconn is weft proxy's HTTP connection manager: it serves
// HTTP/1.1 and h2c connections handed over by listeners, routes each
// request with the route configuration (inline or from RDS), and forwards
// it to a cluster with retries, timeouts, header mutations and rewrites,
// keeping Envoy's stats and writing its access logs.
//
// One Server serves the connections of every listener: HTTP/1.1 on the
// goroutine that accepted the connection (h1.go), h2c with a net/http
// server. Each connection carries the compiled HCM of the filter chain it
// matched, so configuration changes apply to new connections while older
// ones keep the HCM they started with.
package httpconn

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Routes looks up RDS route configurations by name; nil when unknown.
type Routes interface {
	Route(name string) *route.Config
}

// Clusters looks up clusters by name; nil when unknown.
type Clusters interface {
	Get(name string) *cluster.Cluster
}

// Deps are what an HCM needs from the rest of the proxy.
type Deps struct {
	Routes   Routes
	Clusters Clusters
	Sinks    *accesslog.Sinks
	Stats    *stats.Store
	Server   *Server
	Log      *slog.Logger
	// RequestHeadersTimeout applies when the HCM sets no
	// request_headers_timeout; 0 means DefaultRequestHeadersTimeout,
	// negative none.
	RequestHeadersTimeout time.Duration
	// Filters builds the HTTP filters weft proxy knows, by typed_config
	// type URL (or name when there is no typed_config); others are
	// NACKed unless optional.
	Filters map[string]FilterFactory
	// Prepend, when set, supplies built-in filters that run before the
	// configured ones (tracing).
	Prepend Prepend
}

// Connection limits that apply unless the HCM sets its own.
const (
	// DefaultRequestHeadersTimeout bounds the time from a request's first
	// byte to the end of its head. Envoy has no default (its
	// request_headers_timeout is off unless set) but its edge guidance
	// recommends 10 s; weft proxy applies that.
	DefaultRequestHeadersTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a downstream connection with no request in
	// flight after this long: Envoy's default
	// common_http_protocol_options.idle_timeout.
	DefaultIdleTimeout = time.Hour
	// DefaultMaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// advertised unless http2_protocol_options.max_concurrent_streams is
	// set (Envoy's edge guidance; Envoy's own default is 2^31-1).
	DefaultMaxConcurrentStreams = 100
)

// HCM is one compiled HttpConnectionManager. Immutable.
type HCM struct {
	StatPrefix string
	RDS        string        // route config name when using RDS
	inline     *route.Config // when route_config is inline
	deps       Deps
	logs       []*accesslog.Logger

	normalizePath, mergeSlashes bool
	streamIdle                  time.Duration // 0: none
	// streamFlush bounds an HTTP/2 response's last flush, all of it
	// buffered, waiting for the client's window (stream_flush_timeout;
	// stream_idle_timeout unless set); 0: none.
	streamFlush       time.Duration
	requestTimeout    time.Duration // 0: none
	maxStreamDuration time.Duration // 0: none
	serverName        string
	serverHeader      hcmv3.HttpConnectionManager_ServerHeaderTransformation
	generateRequestID bool
	useRemoteAddress  bool
	websocket         bool
	http10            bool          // http_protocol_options.accept_http_10: HTTP/1.0 served, else refused 426
	headersTimeout    time.Duration // request head, from its first byte; 0: none
	idleTimeout       time.Duration // connection without a request; 0: none
	h2MaxStreams      uint32
	h2Win             route.H2Windows // the windows clients get (http2_protocol_options'), zero: unset
	// limits bound a request head: max_request_headers_kb and
	// common_http_protocol_options.max_headers_count, on every path
	// (the loops' through Limits).
	limits route.Limits

	filters []Filter // before the router, in order; nil for the router alone

	stats hcmStats
	// forwardWith replaces the forwarder in tests that compare it with
	// another path; nil: m.forward.
	forwardWith func(http.ResponseWriter, *stream)
}

type hcmStats struct {
	rqTotal, rqCompleted, rqHTTP1, rqHTTP2 *stats.Counter
	rqActive                               *stats.Gauge
	cxTotal, cxHTTP1, cxHTTP2, cxDestroy   *stats.Counter
	cxActive                               *stats.Gauge
	noRoute, noCluster, directResponse     *stats.Counter
	rqTimeout, rqIdleTimeout, rqRxReset    *stats.Counter
	rqHeaderTimeout, cxIdleTimeout         *stats.Counter
	cxProtocolError, prematureResets       *stats.Counter
	cxDrainClose                           *stats.Counter
	txFlushTimeout                         *stats.Counter // http2.tx_flush_timeout, shared by every HCM as Envoy's codec stats
	h2HeaderOverflow                       *stats.Counter // http2.header_overflow, likewise
	rqTime                                 *stats.Histogram
	classes                                [6]*stats.Counter
}

func newHCMStats(st *stats.Store, prefix string) hcmStats {
	sc := st.Scope("http."+prefix+".", "envoy_http_", stats.Label{Name: "envoy_http_conn_manager_prefix", Value: prefix})
	s := hcmStats{
		rqTotal: sc.Counter("downstream_rq_total"), rqCompleted: sc.Counter("downstream_rq_completed"),
		rqHTTP1: sc.Counter("downstream_rq_http1_total"), rqHTTP2: sc.Counter("downstream_rq_http2_total"),
		rqActive: sc.Gauge("downstream_rq_active"), cxTotal: sc.Counter("downstream_cx_total"),
		cxHTTP1: sc.Counter("downstream_cx_http1_total"), cxHTTP2: sc.Counter("downstream_cx_http2_total"),
		cxDestroy: sc.Counter("downstream_cx_destroy"), cxActive: sc.Gauge("downstream_cx_active"),
		noRoute: sc.Counter("no_route"), noCluster: sc.Counter("no_cluster"),
		directResponse: sc.Counter("rq_direct_response"), rqTimeout: sc.Counter("downstream_rq_timeout"),
		rqIdleTimeout: sc.Counter("downstream_rq_idle_timeout"), rqRxReset: sc.Counter("downstream_rq_rx_reset"),
		rqHeaderTimeout: sc.Counter("downstream_rq_header_timeout"), cxIdleTimeout: sc.Counter("downstream_cx_idle_timeout"),
		cxProtocolError:  sc.Counter("downstream_cx_protocol_error"),
		prematureResets:  sc.Counter("downstream_rq_too_many_premature_resets"),
		cxDrainClose:     sc.Counter("downstream_cx_drain_close"),
		txFlushTimeout:   st.Scope("http2.", "envoy_http2_").Counter("tx_flush_timeout"),
		h2HeaderOverflow: st.Scope("http2.", "envoy_http2_").Counter("header_overflow"),
		rqTime:           sc.Histogram("downstream_rq_time"),
	}
	for i := 1; i <= 5; i++ {
		s.classes[i] = sc.TaggedCounter(fmt.Sprintf("downstream_rq_%dxx", i), "downstream_rq_xx",
			stats.Label{Name: "envoy_response_code_class", Value: strconv.Itoa(i)})
	}
	return s
}

const routerFilter = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// Build compiles an HttpConnectionManager. path names it in errors.
func Build(h *hcmv3.HttpConnectionManager, path string, deps Deps) (*HCM, error) {
	// tracing, add_user_agent, internal_address_config, the drain and
	// delayed-close timeouts and request-ID extension details do not
	// change how weft proxy forwards a request; they are tolerated.
	if err := strict.Fields(h, path, "codec_type", "stat_prefix", "rds", "route_config",
		"http_filters", "add_user_agent", "tracing", "common_http_protocol_options",
		"http_protocol_options", "http2_protocol_options", "server_name",
		"server_header_transformation", "stream_idle_timeout", "request_timeout",
		"drain_timeout", "delayed_close_timeout", "access_log", "use_remote_address",
		"xff_num_trusted_hops", "generate_request_id", "preserve_external_request_id",
		"upgrade_configs", "normalize_path", "merge_slashes", "path_with_escaped_slashes_action",
		"internal_address_config", "max_request_headers_kb", "request_headers_timeout",
		"always_set_request_id_in_response", "strip_matching_host_port", "stream_flush_timeout"); err != nil {
		return nil, err
	}
	if h.GetStatPrefix() == "" {
		return nil, fmt.Errorf("%s: stat_prefix is required", path)
	}
	if h.GetCodecType() == hcmv3.HttpConnectionManager_HTTP3 {
		return nil, strict.Value(path, "codec_type", "HTTP3", "HTTP/1.1 and HTTP/2 (h2c) only")
	}
	m := &HCM{StatPrefix: h.GetStatPrefix(), deps: deps, streamIdle: 5 * time.Minute,
		serverName: "envoy", serverHeader: h.GetServerHeaderTransformation(),
		generateRequestID: h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue(),
		useRemoteAddress:  h.GetUseRemoteAddress().GetValue(),
		normalizePath:     h.GetNormalizePath().GetValue(), mergeSlashes: h.GetMergeSlashes()}
	if h.GetServerName() != "" {
		m.serverName = h.GetServerName()
	}
	if t := h.GetStreamIdleTimeout(); t != nil {
		m.streamIdle = t.AsDuration()
	}
	m.streamFlush = m.streamIdle
	if t := h.GetStreamFlushTimeout(); t != nil {
		m.streamFlush = t.AsDuration() // 0 turns it off, as in Envoy
	}
	if t := h.GetRequestTimeout(); t != nil {
		m.requestTimeout = t.AsDuration()
	}
	m.headersTimeout = deps.RequestHeadersTimeout
	if m.headersTimeout == 0 {
		m.headersTimeout = DefaultRequestHeadersTimeout
	} else if m.headersTimeout < 0 {
		m.headersTimeout = 0
	}
	if t := h.GetRequestHeadersTimeout(); t != nil {
		m.headersTimeout = t.AsDuration() // 0 turns it off, as in Envoy
	}
	if v := h.GetMaxRequestHeadersKb(); v != nil {
		// Envoy's range (the field's validation rule): (0, 8192].
		if v.GetValue() < 1 || v.GetValue() > 8192 {
			return nil, fmt.Errorf("%s.max_request_headers_kb: %d is outside [1, 8192]", path, v.GetValue())
		}
		m.limits.HeadBytes = int(v.GetValue()) << 10
	}
	m.idleTimeout = DefaultIdleTimeout
	m.h2MaxStreams = DefaultMaxConcurrentStreams
	if o := h.GetCommonHttpProtocolOptions(); o != nil {
		if t := o.GetIdleTimeout(); t != nil {
			m.idleTimeout = t.AsDuration() // 0 turns it off, as in Envoy
		}
		if err := strict.Fields(o, path+".common_http_protocol_options", "idle_timeout",
			"max_stream_duration", "headers_with_underscores_action", "max_headers_count"); err != nil {
			return nil, err
		}
		if t := o.GetMaxStreamDuration(); t != nil {
			m.maxStreamDuration = t.AsDuration()
		}
		if v := o.GetMaxHeadersCount(); v != nil {
			if v.GetValue() < 1 {
				return nil, fmt.Errorf("%s.common_http_protocol_options.max_headers_count: 0 is below 1", path)
			}
			// Past what a head can hold it changes nothing; capped so it
			// fits an int anywhere.
			m.limits.Headers = int(min(v.GetValue(), math.MaxInt32))
		}
	}
	if o := h.GetHttpProtocolOptions(); o != nil {
		if err := strict.Fields(o, path+".http_protocol_options", "accept_http_10"); err != nil {
			return nil, err
		}
		m.http10 = o.GetAcceptHttp_10()
	}
	if o := h.GetHttp2ProtocolOptions(); o != nil {
		if err := strict.Fields(o, path+".http2_protocol_options", "max_concurrent_streams",
			"initial_stream_window_size", "initial_connection_window_size", "hpack_table_size"); err != nil {
			return nil, err
		}
		if v := o.GetMaxConcurrentStreams(); v != nil {
			if v.GetValue() < 1 || v.GetValue() > math.MaxInt32 {
				return nil, fmt.Errorf("%s.http2_protocol_options.max_concurrent_streams: %d is outside [1, 2147483647]", path, v.GetValue())
			}
			m.h2MaxStreams = v.GetValue()
		}
		w, err := route.H2WindowsOf(o, path+".http2_protocol_options")
		if err != nil {
			return nil, err
		}
		m.h2Win = w
	}
	if a := h.GetPathWithEscapedSlashesAction(); a != hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT && a != hcmv3.HttpConnectionManager_KEEP_UNCHANGED {
		return nil, strict.Value(path, "path_with_escaped_slashes_action", a, "escaped slashes are kept unchanged")
	}
	for i, u := range h.GetUpgradeConfigs() {
		up := strict.Join(path, "upgrade_configs", i)
		if err := strict.Fields(u, up, "upgrade_type", "enabled"); err != nil {
			return nil, err
		}
		if !strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return nil, strict.Value(up, "upgrade_type", u.GetUpgradeType(), "only websocket upgrades are proxied")
		}
		m.websocket = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	switch {
	case h.GetRds() != nil:
		rds := h.GetRds()
		if err := strict.Fields(rds, path+".rds", "config_source", "route_config_name"); err != nil {
			return nil, err
		}
		cs := rds.GetConfigSource()
		if cs.GetAds() == nil && cs.GetSelf() == nil {
			return nil, strict.Value(path, "rds.config_source", cs, "weft proxy fetches RDS over ADS only")
		}
		if rds.GetRouteConfigName() == "" {
			return nil, fmt.Errorf("%s.rds: route_config_name is required", path)
		}
		m.RDS = rds.GetRouteConfigName()
	case h.GetRouteConfig() != nil:
		rc, err := route.Compile(h.GetRouteConfig())
		if err != nil {
			return nil, fmt.Errorf("%s.route_config: %w", path, err)
		}
		m.inline = rc
	default:
		return nil, fmt.Errorf("%s: rds or route_config is required (scoped routes are not supported)", path)
	}
	info := HCMInfo{StatPrefix: m.StatPrefix, Egress: strings.HasPrefix(m.StatPrefix, "egress"), Tracing: h.GetTracing()}
	filters, err := buildFilters(h, path, deps, info)
	if err != nil {
		return nil, err
	}
	m.filters = filters
	for i, al := range h.GetAccessLog() {
		l, err := deps.Sinks.Build(al, strict.Join(path, "access_log", i))
		if err != nil {
			return nil, err
		}
		m.logs = append(m.logs, l)
	}
	m.stats = newHCMStats(deps.Stats, m.StatPrefix)
	return m, nil
}

func isRouter(f *hcmv3.HttpFilter) bool {
	return f.GetTypedConfig().GetTypeUrl() == routerFilter ||
		f.GetTypedConfig() == nil && (f.GetName() == "envoy.filters.http.router" || f.GetName() == "envoy.router")
}

// checkRouter checks the router's own configuration.
func checkRouter(f *hcmv3.HttpFilter, fp string) error {
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil
	}
	var r routerv3.Router
	if err := tc.UnmarshalTo(&r); err != nil {
		return fmt.Errorf("%s: %w", fp, err)
	}
	// dynamic_stats and suppress_envoy_headers change stats and
	// x-envoy-* headers only; start_child_span is how spans nest, which
	// weft proxy does as Envoy does without it (one span per stream).
	return strict.Fields(&r, fp+".typed_config", "dynamic_stats", "suppress_envoy_headers", "start_child_span")
}

// routeConfig returns the route table for a request: inline, or the
// current RDS version.
func (m *HCM) routeConfig() *route.Config {
	if m.inline != nil {
		return m.inline
	}
	return m.deps.Routes.Route(m.RDS)
}

// BuildAccessLogs is shared with tcp_proxy.
func BuildAccessLogs(sinks *accesslog.Sinks, als []*accesslogv3.AccessLog, path string) ([]*accesslog.Logger, error) {
	var out []*accesslog.Logger
	for i, al := range als {
		l, err := sinks.Build(al, strict.Join(path, "access_log", i))
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}
