package evloop

import (
	"net/netip"
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// A listener with several filter chains (App Mesh's egress listener: one
// per backend port) is served by one Server: Config.Classify chooses each
// new connection's chain, and the loops serve it with that chain's Router,
// stats, timeouts and TLS, made once per listener update (NewChain). A
// connection keeps the chain it was accepted with; Retire drains the
// connections of chains an update changed or removed.

// ChainConfig is what the loops serve a filter chain's connections with.
type ChainConfig struct {
	// Router chooses each request's upstream, or hands it off.
	Router Router
	// StatPrefix names the chain's connection manager's stats
	// (http.<prefix>.*).
	StatPrefix string
	// TLS, when set, terminates TLS on the chain's connections.
	TLS *TLS
	// HeadersTimeout and IdleTimeout are the chain's connection
	// manager's; 0 means the Server's (Config.HeadersTimeout,
	// Config.IdleTimeout).
	HeadersTimeout, IdleTimeout time.Duration
	// StreamIdleTimeout and StreamFlushTimeout are its stream_idle_timeout
	// and stream_flush_timeout; 0 means the Server's (for the flush
	// timeout, the chain's StreamIdleTimeout when that is set).
	StreamIdleTimeout, StreamFlushTimeout time.Duration
	// AcceptHTTP10 is the connection manager's accept_http_10 (see
	// Config.AcceptHTTP10).
	AcceptHTTP10 bool
	// Limits are the connection manager's limits of a request head
	// (max_request_headers_kb, max_headers_count); zero: Envoy's
	// defaults.
	Limits proxyroute.Limits
	// Continues, when set, is the chain of the previous configuration
	// this one carries on (the same filter chain, an update later): the
	// connections of both are retired together.
	Continues *Chain
}

// Chain is a filter chain the loops serve, made by NewChain.
type Chain struct{ g *generation }

// Accept is Config.Classify's answer for a new connection.
type Accept struct {
	// HandOff gives the connection to Config.HandOff at once.
	HandOff bool
	// Chain serves the connection; nil: what Update last set (or
	// Config's).
	Chain *Chain
	// Local and Remote, when valid, are the connection's addresses as
	// its access log reports them: Local is the destination before NAT
	// under the original_dst listener filter. When not valid, the loops
	// read the socket's own (getsockname, getpeername) if they log.
	Local, Remote netip.AddrPort
}
