package httpconn

import (
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// What weft proxy's event loops (internal/proxy/evloop, its default on
// Linux) need to know of a connection manager to serve
// its requests as this package would. Connections the loops hand back
// are served by ServeConn like any other.

// LoopReady returns "" when the loops can serve this connection manager's
// HTTP/1.1 requests exactly as ServeConn would, given a route that needs
// nothing more (the caller checks the route per request); else what
// keeps it on the goroutine path. Any stream_idle_timeout: the loops keep
// it on every stream as streamtimeouts.go does.
func (m *HCM) LoopReady() string {
	switch {
	case len(m.filters) > 0:
		return "HTTP filters besides the router (or tracing)"
	case m.requestTimeout != 0:
		return "request_timeout"
	case m.maxStreamDuration != 0:
		return "max_stream_duration"
	case m.serverName != "envoy" || m.serverHeader != 0:
		return "server_name or server_header_transformation"
	case !m.generateRequestID:
		return "generate_request_id false"
	case m.useRemoteAddress:
		return "use_remote_address"
	case m.forwardWith != nil:
		return "a test's forwarder"
	}
	return ""
}

// H2Limits are the HTTP/2 limits ServeConn applies:
// SETTINGS_MAX_CONCURRENT_STREAMS (http2_protocol_options'
// max_concurrent_streams, 100 by default) and the
// SETTINGS_MAX_HEADER_LIST_SIZE (route.Limits.H2ListSize), as serveH2
// has x/net's server advertise it.
func (m *HCM) H2Limits() (maxStreams, maxHeaderList uint32) {
	return m.h2MaxStreams, m.limits.H2ListSize()
}

// H2Windows are the flow-control windows an HTTP/2 client gets on
// either path: http2_protocol_options' initial_stream_window_size and
// initial_connection_window_size, route.DefaultH2Windows unset.
func (m *HCM) H2Windows() route.H2Windows { return m.h2Win.OrDefault() }

// Limits are the limits of a request head (max_request_headers_kb,
// max_headers_count), for the loops to apply as this path does.
func (m *HCM) Limits() route.Limits { return m.limits }

// Logged reports whether the connection manager writes access logs.
func (m *HCM) Logged() bool { return len(m.logs) > 0 }

// Log writes e to the connection manager's access logs: the entry of a
// request the loops served, built as finish builds its own.
func (m *HCM) Log(e *accesslog.Entry) {
	for _, l := range m.logs {
		l.Log(e)
	}
}

// RouteConfig is the route configuration in force: the inline one, or
// the RDS one of that name (nil until it arrives).
func (m *HCM) RouteConfig() *route.Config { return m.routeConfig() }

// Normalize returns path (a request target's part before '?', as
// received) as the connection manager matches it and sends it upstream:
// normalize_path and merge_slashes applied as Envoy's connection manager
// applies them (route.NormalizePath).
func (m *HCM) Normalize(path string) string {
	return route.NormalizePath(path, m.normalizePath, m.mergeSlashes)
}

// RefusesPath reports whether the connection manager refuses a request
// target 400 before routing it (route.PathRefused).
func (m *HCM) RefusesPath(target []byte) bool { return route.PathRefused(target, m.normalizePath) }

// Normalizes reports whether Normalize changes path, without allocating.
func (m *HCM) Normalizes(path []byte) bool {
	return route.PathChanged(path, m.normalizePath, m.mergeSlashes)
}

// AcceptHTTP10 reports whether HTTP/1.0 requests are served
// (http_protocol_options.accept_http_10); else they are refused with 426
// Upgrade Required, as Envoy refuses them by default. The loops hand
// those they serve to ServeConn, which answers them in kind.
func (m *HCM) AcceptHTTP10() bool { return m.http10 }

// Timeouts are the request head's and the idle connection's; 0 is none.
func (m *HCM) Timeouts() (headers, idle time.Duration) { return m.headersTimeout, m.idleTimeout }

// StreamTimeouts returns stream_idle_timeout and stream_flush_timeout
// (the former unless set); 0 is none.
func (m *HCM) StreamTimeouts() (idle, flush time.Duration) { return m.streamIdle, m.streamFlush }
