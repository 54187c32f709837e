// Package evloop is weft proxy's HTTP/1.1 path on event loops, plaintext
// or TLS: one per core, each with its own epoll and SO_REUSEPORT listener,
// parsing requests in place in reused buffers and forwarding them over
// upstream keep-alive connections the same loop owns (docs/bench/proxy.md,
// "Speed work", steps 5 to 8). TLS handshakes run on a goroutine per new
// connection, the records after them on the loop (tls_linux.go). With a
// static configuration (Routes, Clusters) it is the prototype
// bench/evloopproxy runs; with a Router it serves weft proxy's listeners
// by default on Linux, handing what it does not implement (h2c,
// upgrades, routes that need more, accepted HTTP/1.0) to the goroutine
// path through HandOff. Without HandOff those are refused (501) or, for
// HTTP/1.0, served. Timeouts are kept in a
// heap per loop (timer_linux.go), retries follow the route's policy
// (retry_linux.go), and a Router that is an AccessLogger gets a record of
// every request (accesslog_linux.go).
package evloop

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Config is a static listener -> routes -> clusters configuration.
type Config struct {
	// Listen is the listener's address, host:port (port 0 picks one).
	Listen string
	// Loops is the number of event loops, each on its own OS thread and
	// with its own listening socket; 0 means GOMAXPROCS.
	Loops int
	// LockThreads blocks each loop's locked OS thread in epoll_wait
	// between events. By default a loop's goroutine parks in Go's
	// netpoller until its epoll descriptor is readable, which costs the
	// scheduler far less per wake-up (docs/bench/proxy.md, step 5).
	LockThreads bool
	// RawWait blocks each loop in epoll_wait without telling the Go
	// scheduler (a raw system call): the loop keeps its thread and P
	// while it waits, as a C event loop keeps its thread. The process
	// needs a P more than it has loops, for everything else (the garbage
	// collector stops a waiting loop with its preemption signal, which
	// interrupts the wait); Listen refuses it otherwise. An experiment:
	// the cheapest wake-up Go allows.
	RawWait bool
	// H2 serves HTTP/2 connections on the loops (h2c with prior
	// knowledge, and over TLS those that open with the preface:
	// h2tls_linux.go) when the Router is an H2Router that accepts them
	// (h2conn_linux.go); else they go to HandOff as before. With it, an
	// HTTP/1.1 request whose Target is HTTP2 goes out as a stream of the
	// loop's HTTP/2 connections (h1h2_linux.go); without it, to HandOff.
	H2 bool
	// Routes are matched in order: the first whose domain matches the
	// Host header and whose prefix starts the path.
	Routes []Route
	// Router, when set, chooses every request's upstream instead of
	// Routes and Clusters: weft proxy's route configuration and its
	// clusters' load balancers. It runs on a loop and must not block.
	Router Router
	// HandOff, when set, takes the connections the loops do not serve
	// themselves: an h2c preface, an Upgrade request, and requests whose
	// Target says HandOff. It gets the descriptor (its owner from then
	// on: the loop forgets it) and the bytes read from it that no answer
	// consumed, the current request's head first, and which of the
	// connection manager's per-connection counters the loops counted for
	// it. It is called on a loop and must not block. Without it those
	// requests are refused (501).
	HandOff func(fd int, buffered []byte, counted Counted)
	// TLS, when set, terminates TLS on every connection (see TLS); Update
	// replaces it for the connections accepted afterwards.
	TLS *TLS
	// HandOffTLS takes what HandOff takes from a connection served over
	// TLS: its descriptor, the TLS connection (tlsrec.Conn.Resume carries
	// it on in blocking mode) and the plaintext read that no answer
	// consumed. Without it such connections are refused as without
	// HandOff. It is called on a loop and must not block.
	HandOffTLS func(fd int, c *tlsrec.Conn, buffered []byte, counted Counted)
	// Observer, when set, hears of every upstream attempt a Router's
	// Target started, and counts its response codes in place of the
	// loops (cluster.<name>.upstream_rq_<code> and classes, completed).
	Observer Observer
	// Classify, when set, is asked about every new connection as soon as
	// it is accepted, with its descriptor: it hands it to HandOff at once
	// (a listener whose configuration the loops no longer serve, or a
	// connection whose filter chain is not one they serve), or names the
	// Chain that serves it (chain.go). It is called on a loop and must
	// not block.
	Classify func(fd int) Accept
	// Clusters by name: their endpoints, ip:port.
	Clusters map[string][]string
	// MaxConns bounds the downstream connections of the whole listener
	// (every loop's); 0 means DefaultMaxConns.
	MaxConns int
	// MaxIdleUpstream bounds the idle upstream connections each loop
	// keeps per cluster; 0 means DefaultMaxIdleUpstream.
	MaxIdleUpstream int
	// IdleTimeout closes a downstream connection without a request in
	// flight after this long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// StreamIdleTimeout resets an HTTP/2 stream whose writes, or whose
	// request body's, made no progress for this long; StreamFlushTimeout
	// one whose response's end is buffered waiting for the client's
	// window (Envoy's stream_idle_timeout and stream_flush_timeout). 0
	// means DefaultStreamIdleTimeout for the first, the first for the
	// second.
	StreamIdleTimeout, StreamFlushTimeout time.Duration
	// HeadersTimeout bounds the wait for a request head once its first
	// byte came (408 after it); 0 means DefaultHeadersTimeout.
	HeadersTimeout time.Duration
	// AcceptHTTP10 serves HTTP/1.0 requests (a connection manager's
	// accept_http_10): HandOff takes them, to answer them in kind; the
	// loops serve them without one (answering HTTP/1.1). Without it they
	// are refused with 426 Upgrade Required, as Envoy refuses them by
	// default; so is any other version but HTTP/1.1 either way.
	AcceptHTTP10 bool
	// Limits bound a request head (ChainConfig.Limits); zero: Envoy's
	// defaults.
	Limits proxyroute.Limits
	// RequestTimeout bounds the wait for an upstream's complete response
	// (the route timeout App Mesh sets: 15 s); 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ConnectTimeout bounds an upstream connect, its TLS handshake
	// included, to Clusters' hosts and for Targets without one of their
	// own; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// StatPrefix names the connection manager's stats (http.<prefix>.*).
	StatPrefix string
	// Stats receives the counters; nil makes a private store.
	Stats *stats.Store
	// Listener, when set, are the listener's own stats
	// (listener.<address>.*), counted besides the connection manager's.
	Listener *ListenerStats
	// Log gets connection errors at debug level and loop failures at
	// error level; nil discards.
	Log *slog.Logger
	// ConnIDs, when set, numbers the downstream connections whose
	// requests are logged (LogRecord.ConnectionID), from the counter the
	// goroutine path numbers its connections with, so that an id is
	// unique across both; nil numbers them from a counter of the Server.
	ConnIDs *atomic.Uint64
}

// Counted says which of a connection manager's per-connection counters
// (http.<prefix>.*) the loops counted for a connection they hand off, so
// that the goroutine path counts the others: each connection once, as
// Envoy counts it. The loops give back downstream_cx_active themselves,
// and never count a handed-off connection's downstream_cx_destroy, nor
// downstream_cx_http2_total (they hand HTTP/2 off at its preface).
type Counted uint8

const (
	// CountedCx: downstream_cx_total (the loops served the connection
	// on a chain of theirs).
	CountedCx Counted = 1 << iota
	// CountedHTTP1: downstream_cx_http1_total (they served an HTTP/1.1
	// request of it).
	CountedHTTP1
)

// ListenerStats are a listener's connection stats.
type ListenerStats struct {
	CxTotal, CxDestroy, CxOverflow *stats.Counter
	CxActive                       *stats.Gauge
}

// Defaults of the limits.
const (
	DefaultMaxConns        = 16384
	DefaultMaxIdleUpstream = 256
	DefaultIdleTimeout     = 5 * time.Minute
	// DefaultStreamIdleTimeout is Envoy's stream_idle_timeout default,
	// and so stream_flush_timeout's.
	DefaultStreamIdleTimeout = 5 * time.Minute
	DefaultHeadersTimeout    = 10 * time.Second // weft proxy's default
	DefaultRequestTimeout    = 15 * time.Second
	DefaultConnectTimeout    = time.Second
)

// Router chooses where a request goes, from its head.
type Router interface {
	Route(h proxyroute.Head) Target
}

// Observer hears how the upstream attempts of a Router's targets went.
// Its methods run on a loop and must not block.
type Observer interface {
	// Started: an attempt to the target's host begins.
	Started(cluster string, tag any)
	// Done: the attempt failed without a response head, retried or not
	// (code 0; timedOut for the request timeout), or the client side
	// ended it (code -1).
	Done(cluster string, tag any, code int, timedOut bool)
	// Head: the attempt got its final response head r, sent on or
	// retried (r.Retried: its status counts in the cluster's
	// retry.upstream_rq_* instead of its upstream_rq_*, as Envoy's router
	// charges a retried response, Filter::onUpstreamHeaders:
	// chargeBasicResponseStat with the prefix retry). For a gRPC request
	// r holds the head's grpc-status. True when the outcome of a gRPC
	// response waits for its end: GRPCDone follows once it ends, with
	// trailers or without, or the upstream breaks it.
	Head(cluster string, tag any, r proxyroute.ResponseHead) (wait bool)
	// GRPCDone: a gRPC response whose Head waited ended: status is its
	// trailers' grpc-status (proxyroute.GRPCStatus), or
	// proxyroute.NoGRPCStatus when it ended without trailers (an HTTP/1.1
	// upstream's are dropped) or the upstream broke it.
	GRPCDone(cluster string, tag any, status int)
	// Cut: the response whose head Head heard of (not retried) was cut
	// before its end, by the upstream (its stream's reset, its
	// connection's end, its protocol error) or, timedOut, by the request
	// timeout. Not when the client ends it.
	Cut(cluster string, tag any, timedOut bool)
	// Interim: the attempt got a 1xx response head of code (100, 102,
	// 103 or 104), dropped, which Envoy's router counts as a response
	// (Filter::onUpstream1xxHeaders, chargeUpstreamCode); Done follows.
	Interim(cluster string, tag any, code int)
	// Aborted: the proxy answers code (503, 502, 504) to a request whose
	// attempt on the cluster failed, not retried, before the response
	// started, or 503 to one for which the cluster has no healthy host
	// (at its first attempt or a retry), which Envoy's router counts as
	// the cluster's response of that code (Filter::chargeUpstreamAbort,
	// sendNoHealthyUpstreamResponse, chargeUpstreamCode). dropped: the
	// attempt overflowed the cluster's circuit breakers, which Envoy's
	// router also charges as dropped (Filter::onUpstreamReset, the
	// cluster's upstream_rq_dropped in its load report).
	Aborted(cluster string, code int, dropped bool)
	// Connected: a loop's upstream connection to the cluster's host
	// (tag: the Target's of the request that opened it; nil without a
	// Router) finished its TCP connect, which took connect; over TLS
	// before its handshake, as the goroutine path counts it. Closed is
	// called with cx once the connection closes, however it ends
	// (handshake failure, idle timeout, upstream close, error, GOAWAY,
	// host pool dropped, loop shutdown).
	Connected(cluster string, tag any, connect time.Duration) (cx any)
	Closed(cx any)
	// ConnectFailed: a loop's connect to the cluster's host (tag as for
	// Connected) failed, its TCP connect or its TLS handshake, timed out
	// or not; the loops counted it in the cluster's
	// upstream_cx_connect_fail.
	ConnectFailed(cluster string, tag any)
}

// HostsWatcher is an Observer that tells the loops of the hosts that
// leave their cluster (an endpoints update removed them, or the cluster
// went), whose pools each loop then drains (gone_linux.go). Serve
// watches while the loops run.
type HostsWatcher interface {
	// WatchHosts makes gone hear of the hosts (their addresses) that
	// leave a cluster, once its picks no longer return them, until stop.
	// gone is safe from any goroutine and does not block.
	WatchHosts(gone func(cluster string, hosts []netip.AddrPort)) (stop func())
}

// Target is a Router's answer: a cluster's host, or a local reply.
type Target struct {
	// Status, when not 0, is answered by the proxy with Body (404 when
	// no route matches, 503 for an unknown cluster or no healthy host),
	// and logged with Flags and Details (404's are the loops' own). A
	// reply flagged NoClusterFound counts in no_cluster.
	Status  int
	Body    string
	Flags   accesslog.Flags
	Details string
	// Cluster names the cluster (its stats, cluster.<name>.*; with
	// Status, the access log's, and the one a 503 flagged
	// NoHealthyUpstream is charged to, as Envoy's router charges it) and
	// Host the address the request goes to. Each loop keeps a pool of idle
	// connections per cluster and host.
	Cluster string
	Host    netip.AddrPort
	// Tag is given back to Config.Observer with the exchange's outcome
	// (a pointer: the host, say).
	Tag any
	// Route is the route's name, for access logs.
	Route string
	// Timeout is the route timeout, from the request's start to its
	// response's end (504 after it); 0 means Config.RequestTimeout, unless
	// NoTimeout.
	Timeout time.Duration
	// NoTimeout: the route has no timeout (its timeout is 0): the stream
	// idle timeout alone bounds the request, as on the goroutine path.
	NoTimeout bool
	// StreamIdle, with HasStreamIdle, is the route's idle_timeout: it
	// replaces the chain's stream idle timeout for the request (0 turns
	// it off), as Envoy's router overrides the connection manager's.
	StreamIdle    time.Duration
	HasStreamIdle bool
	// Retry is the route's retry policy (nil: none), applied as weft's
	// goroutine path applies it: its conditions, retries, back-off and
	// per-try timeout. The loops implement every condition (gRPC's on
	// the response head's grpc-status header). A pooled connection found
	// closed is replaced once besides, as Go's HTTP client does.
	Retry *proxyroute.RetryPolicy
	// Upstream, when set, is the cluster's side of the retries: budget,
	// stats and the next attempt's host. Without it a retry goes to the
	// same host, unbudgeted.
	Upstream Upstream
	// Held are the slots the Router took for the request under the
	// cluster's circuit breakers on Upstream: the loops give them back
	// through Upstream.Release when the request ends, however it ends,
	// and a retry's attempt takes its own request slot
	// (Upstream.Acquire).
	Held Slots
	// HandOff, with Config.HandOff set, gives the connection to it with
	// this request: for what the loops do not implement.
	HandOff bool
	// TLS, when set, is the cluster's: the connections to Host originate
	// TLS with it (handshake on a goroutine, records on the loop).
	TLS ClientTLS
	// HTTP2: the cluster speaks HTTP/2 (h2c, or with TLS h2): a stream
	// of a loop's HTTP/2 connection goes out as a stream of the loop's
	// HTTP/2 connections to Host (h2up_linux.go; retries:
	// h2uretry_linux.go). Only for RouteH2's targets.
	HTTP2 bool
	// H2Windows are the flow-control windows the loops' HTTP/2
	// connections to the cluster give it (its http2_protocol_options');
	// zero: route.DefaultH2Windows.
	H2Windows proxyroute.H2Windows
	// Path is the path (without the query) the upstream gets
	// instead of the request's: the route's prefix or regex rewrite of
	// it, or the path the connection manager normalised
	// (merge_slashes, normalize_path), which routes matched, as on the
	// goroutine path. Empty: the request's. The request's query follows
	// it.
	Path string
	// OriginalPath, when set, is sent as x-envoy-original-path (the
	// request's path and query, as the goroutine path reads them),
	// replacing any the client sent: the route rewrites the path (prefix
	// or regex, whether that changed it or not), as Envoy's router
	// records it.
	OriginalPath string
	// Authority, when set, is the Host (an HTTP/2 upstream's :authority)
	// the upstream gets instead of the request's: the route's
	// host_rewrite_literal.
	Authority string
	// Headers, when set, are the request header mutations of the route
	// (its weighted cluster's, virtual host's and route configuration's
	// too; Route.Pick's): the request's fields they name go upstream as
	// the goroutine path's rule (route.Levels.Request) leaves them, after
	// the others.
	// They name no header the loops treat themselves (OwnHeader).
	Headers *proxyroute.RequestMutations
	// ConnectTimeout is the cluster's connect_timeout: it bounds a new
	// connection to Host, from its connect's start to the end of its TLS
	// handshake, as Envoy's connect timer does (capped at about a century,
	// as the loops' other deadlines); 0 means Config.ConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout is the cluster's idle_timeout for those HTTP/2
	// connections: one without a stream that long is closed, as the
	// goroutine path's Transport closes it; 0 keeps it while the host's
	// pool lives.
	IdleTimeout time.Duration
}

// Upstream is the cluster side of a Target's retries, as weft's
// goroutine path does them: the cluster's retry budget (the max_retries
// circuit breaker), its retry stats, and its load balancer for the next
// attempt's host. Its methods run on a loop and must not block.
type Upstream interface {
	// Retry reserves a retry under the cluster's budget and counts it
	// (upstream_rq_retry); nil, counted as an overflow, when the budget
	// is spent. The loop calls release when the retry's attempt ends.
	Retry() (release func())
	// RetryEnd counts how a request's retries ended: exceeded when the
	// policy would retry its last outcome but no retry is left
	// (upstream_rq_retry_limit_exceeded), else a success after retries
	// (upstream_rq_retry_success).
	RetryEnd(exceeded bool)
	// RetryAbandoned counts a request whose body outgrew what is kept for
	// a retry while one could come (retry_or_shadow_abandoned).
	RetryAbandoned()
	// PerTryTimeout counts an attempt the per-try timeout ended
	// (upstream_rq_per_try_timeout).
	PerTryTimeout()
	// Acquire takes a retry's attempt's request slot under the
	// cluster's max_requests, for the host of tag; false, counted as the
	// cluster's overflow, when none is left. The request keeps the
	// connection slot its first attempt took (Target.Held).
	Acquire(tag any) bool
	// Release gives back slots of a Target's request (Target.Held,
	// Acquire's).
	Release(Slots)
	// Pick chooses the next attempt's host and its tag (Target.Tag);
	// avoid, when not nil, rejects the hosts tried (previous_hosts),
	// drawn up to attempts times. False when no host is healthy.
	Pick(avoid func(tag any) bool, attempts int) (host netip.AddrPort, tag any, ok bool)
}

// Slots are circuit breaker slots a request holds (Target.Held).
type Slots uint8

const (
	// SlotRequest is one of the cluster's max_requests.
	SlotRequest Slots = 1 << iota
	// SlotConnection is one of an HTTP/1.1 cluster's max_connections.
	SlotConnection
)

// Route sends requests whose Host matches Domain and whose path starts
// with Prefix to Cluster. Domain is "*", an exact host (without port), or
// "*.suffix".
type Route struct {
	Domain, Prefix, Cluster string
}

// routeTable is the compiled, read-only configuration the loops share.
type routeTable struct {
	routes   []route
	clusters []clusterDef
}

type clusterDef struct {
	name      string
	endpoints []netip.AddrPort
}

type route struct {
	domain  string // lower case; "*" any; leading "*." a suffix
	prefix  string
	cluster int // index into the loop's clusters
	anyHost bool
	suffix  bool
}

func compile(c *Config) (*routeTable, error) {
	index := map[string]int{}
	t := &routeTable{}
	for _, r := range c.Routes {
		eps, ok := c.Clusters[r.Cluster]
		if !ok || len(eps) == 0 {
			return nil, fmt.Errorf("route %s%s: cluster %q has no endpoints", r.Domain, r.Prefix, r.Cluster)
		}
		if !strings.HasPrefix(r.Prefix, "/") {
			return nil, fmt.Errorf("route %s%s: prefix must start with /", r.Domain, r.Prefix)
		}
		i, seen := index[r.Cluster]
		if !seen {
			cd := clusterDef{name: r.Cluster}
			for _, e := range eps {
				ap, err := netip.ParseAddrPort(e)
				if err != nil {
					return nil, fmt.Errorf("cluster %q: endpoint %q: %w", r.Cluster, e, err)
				}
				cd.endpoints = append(cd.endpoints, ap)
			}
			i = len(t.clusters)
			index[r.Cluster] = i
			t.clusters = append(t.clusters, cd)
		}
		rt := route{domain: strings.ToLower(r.Domain), prefix: r.Prefix, cluster: i}
		rt.anyHost = rt.domain == "*" || rt.domain == ""
		rt.suffix = strings.HasPrefix(rt.domain, "*.")
		if rt.suffix {
			rt.domain = rt.domain[1:] // ".suffix"
		}
		t.routes = append(t.routes, rt)
	}
	return t, nil
}

// match returns the route for host (the Host header's value, port
// included) and path, or nil.
func (t *routeTable) match(host, path []byte) *route {
	if i := lastColon(host); i >= 0 {
		host = host[:i]
	}
	for i := range t.routes {
		r := &t.routes[i]
		if !r.anyHost {
			if r.suffix {
				if len(host) <= len(r.domain) || !equalFold(host[len(host)-len(r.domain):], r.domain) {
					continue
				}
			} else if !equalFold(host, r.domain) {
				continue
			}
		}
		if len(path) >= len(r.prefix) && string(path[:len(r.prefix)]) == r.prefix {
			return r
		}
	}
	return nil
}

// lastColon finds a port separator (not inside an IPv6 literal).
func lastColon(h []byte) int {
	for i := len(h) - 1; i >= 0; i-- {
		switch h[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}
