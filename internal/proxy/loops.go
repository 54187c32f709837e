package proxy

// weft proxy's event loops (the default on Linux): HTTP/1.1 listeners, plaintext or
// TLS, served by event loops (internal/proxy/evloop). A listener goes to
// the loops when the loops can serve it as the goroutine path would; per
// request, a route that needs more than the loops do hands the
// connection to the goroutine path (httpconn) with the bytes read (and,
// over TLS, the TLS connection carried on in blocking mode).

import (
	"bytes"
	"net/netip"
	"runtime"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// loopsFor returns how the loops serve cfg, or nil and why they cannot.
// They serve each filter chain that is plaintext or TLS and an HTTP
// connection manager with codec AUTO or HTTP1 whose settings they
// implement (httpconn.HCM.LoopReady), and are not logged over TLS; a
// listener with at least one such chain is theirs. Per new connection
// they choose its chain as the goroutine path does (listener.Select, the
// destination before NAT under original_dst) and hand it off at accept
// when the chain is not one of theirs (a TCP proxy, the egress's
// allow-all default chain) or the TLS inspector applies to it (App Mesh's
// egress peeks at port 443 only). A TLS chain's handshake is the
// goroutine path's (tlsctx.Server), run on a goroutine per connection;
// its records are sealed and opened on the loops.
// h2 serves HTTP/2 on the loops (listener.Loops.H2): h2c, and streams to
// HTTP/2 upstreams.
func loopsFor(cfg *listener.Config, clusters *cluster.Manager, h2 bool) (*listener.Loops, string) {
	if runtime.GOOS != "linux" {
		return nil, "event loops need Linux"
	}
	if cfg.InspectTLS && cfg.TLSDisabled == nil {
		return nil, "tls_inspector" // it peeks at every connection
	}
	lo := &listener.Loops{H2: h2, Observer: loopObserver{clusters}, Chains: make([]*listener.LoopChain, len(cfg.Chains))}
	why, served := "no filter chain", false
	for i := range cfg.Chains {
		lc, w := loopChain(&cfg.Chains[i], clusters, h2)
		if lc == nil {
			why = w
		}
		lo.Chains[i], served = lc, served || lc != nil
	}
	if cfg.Default != nil {
		lc, w := loopChain(cfg.Default, clusters, h2)
		if lc == nil {
			why = w
		}
		lo.Default, served = lc, served || lc != nil
	}
	if !served {
		return nil, why
	}
	return lo, ""
}

// loopChain returns how the loops serve one filter chain, or nil and why
// they cannot.
func loopChain(ch *listener.Chain, clusters *cluster.Manager, h2 bool) (*listener.LoopChain, string) {
	if ch.TLS == nil && ch.Source.GetTransportSocket() != nil {
		return nil, "a transport socket other than TLS"
	}
	h, ok := ch.Handler.(*httpconn.HCM)
	if !ok {
		return nil, "not an HTTP connection manager"
	}
	pb := &hcmv3.HttpConnectionManager{}
	if fs := ch.Source.GetFilters(); len(fs) != 1 || fs[0].GetTypedConfig().UnmarshalTo(pb) != nil {
		return nil, "not an HTTP connection manager"
	}
	if c := pb.GetCodecType(); c != hcmv3.HttpConnectionManager_AUTO && c != hcmv3.HttpConnectionManager_HTTP1 {
		return nil, "codec " + c.String()
	}
	if why := h.LoopReady(); why != "" {
		return nil, why
	}
	headers, idle := h.Timeouts()
	streamIdle, flush := h.StreamTimeouts()
	var rtr evloop.Router = &loopRouter{hcm: h, clusters: clusters, h2Upstreams: h2}
	if h.Logged() {
		if ch.TLS != nil {
			// The loops' log records carry no TLS state: no server
			// name for %REQUESTED_SERVER_NAME% (their :scheme is the
			// request's, over TLS too: evloop's requestScheme).
			return nil, "access logs over TLS"
		}
		rtr = loggedRouter{rtr.(*loopRouter)}
	}
	return &listener.LoopChain{Router: rtr, StatPrefix: h.StatPrefix, HeadersTimeout: headers, IdleTimeout: idle,
		StreamIdleTimeout: streamIdle, StreamFlushTimeout: flush, AcceptHTTP10: h.AcceptHTTP10(), Limits: h.Limits(),
		TLS: ch.TLS, Logged: h.Logged()}, ""
}

// loopRouter routes a listener's requests on the loops as its connection
// manager would, and hands off those whose route needs more.
type loopRouter struct {
	hcm      *httpconn.HCM
	clusters *cluster.Manager
	// h2Upstreams: the loops stream to HTTP/2 upstreams (evloop.Config.H2);
	// without, a request to an HTTP/2 cluster is handed off before its
	// host is picked, so that only the goroutine path's pick balances it.
	h2Upstreams bool
}

func (r *loopRouter) Route(h route.Head) evloop.Target { return r.route(h, false) }

// route is Route; for an HTTP/2 stream (h2) it answers a request no
// route matches itself (404, as the goroutine path).
func (r *loopRouter) route(h route.Head, h2 bool) evloop.Target {
	if r.hcm.RefusesPath(h.Target()) {
		return evloop.Target{Status: 400, Details: route.DetailsPathNormalizationFailed}
	}
	// The path as received (evloop's parser took whole percent-escapes
	// only), or as normalize_path and merge_slashes leave it.
	path := h.Target()
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	var normalized string // the path the upstream gets, when not the request's
	if r.hcm.Normalizes(path) {
		// Routed, sent and logged normalised, as on the goroutine path:
		// the upstream writers send Target.Path and the request's query.
		normalized = r.hcm.Normalize(string(path))
		path = []byte(normalized)
		h = normalizedHead{h, append(path[:len(path):len(path)], query(h.Target())...)}
	}
	rc := r.hcm.RouteConfig()
	if rc == nil || rc.MatchesRequestID && !idsKept(h) {
		// The goroutine path generates the request's ID (or drops an
		// empty line) before it matches the routes; the loops after.
		return evloop.Target{HandOff: true}
	}
	vh, rt := rc.MatchHead(h, path)
	if rt == nil && h2 {
		return evloop.Target{Status: 404}
	}
	if rt == nil || !loopRoute(rc, vh, rt) {
		return evloop.Target{HandOff: true} // the goroutine path answers, logs and counts as it does
	}
	name, wops, muts := rt.Pick()
	if wops != nil && !loopOps(wops) {
		return evloop.Target{HandOff: true}
	}
	cl := r.clusters.Get(name)
	if cl == nil && h2 {
		// Removed since H2 said the loops serve the listener: the
		// goroutine path's answer, which an HTTP/2 stream cannot be
		// handed over to get.
		return evloop.Target{Status: 503, Flags: accesslog.NoClusterFound, Details: "cluster_not_found", Route: rt.Name}
	}
	// An HTTP/1.1 request to an HTTP/2 cluster, plaintext or TLS, is the
	// loops' (h1h2_linux.go) unless HTTP/2 upstreams are the goroutine
	// path's.
	if cl == nil || cl.HTTP2 && !h2 && !r.h2Upstreams || cl.UseDownstream || cl.Type == cluster.OriginalDst ||
		h2 && h2Queues(cl) { // an update since the preface (H2): refused, retried on a new connection
		return evloop.Target{HandOff: true}
	}
	var host *cluster.Host
	var err error
	if h2 {
		host, err = cl.Pick(nil, 1)
	} else {
		// Handed off without a healthy host: the goroutine path's pick
		// counts upstream_cx_none_healthy.
		host, err = cl.Peek(nil, 1)
	}
	if err != nil && h2 {
		// As the goroutine path answers (a gRPC client sees UNAVAILABLE,
		// and may retry): an HTTP/2 stream cannot be handed over.
		return evloop.Target{Status: 503, Body: "no healthy upstream", Flags: accesslog.NoHealthyUpstream, Details: "no_healthy_upstream",
			Cluster: name, Route: rt.Name}
	}
	if err != nil {
		return evloop.Target{HandOff: true}
	}
	ap, err := netip.ParseAddrPort(host.Addr)
	if err != nil {
		return evloop.Target{HandOff: true}
	}
	// The circuit breakers, by the goroutine path's rule and counters
	// (cluster.Acquire): the loops give the slots back when the request
	// ends (Target.Held). A request that would wait for one of
	// max_connections is the goroutine path's, which queues it. An
	// HTTP/2 stream cannot be handed over: H2 keeps the listeners whose
	// clusters' max_connections is below h2MinGate off the loops, and
	// past it a stream that would wait goes out without a connection
	// slot (docs/proxy.md, Known differences).
	// An overflow of max_requests names the host picked in the access
	// log, one of max_pending_requests none (cluster.PendingOverflow), as
	// on the goroutine path.
	held := evloop.SlotRequest
	switch cl.TryAcquire(host, !cl.HTTP2) {
	case cluster.Acquired:
		if !cl.HTTP2 && cl.Queues() {
			held |= evloop.SlotConnection
		}
	case cluster.WouldQueue:
		if !h2 {
			return evloop.Target{HandOff: true}
		}
		if !cl.AcquireRequest(host) {
			return loopOverflow(name, rt.Name, ap)
		}
	case cluster.Overflow:
		return loopOverflow(name, rt.Name, ap)
	case cluster.PendingOverflow:
		return loopOverflow(name, rt.Name, netip.AddrPort{})
	}
	t := evloop.Target{Cluster: name, Host: ap, Tag: host, Route: rt.Name, Timeout: rt.Timeout, HTTP2: cl.HTTP2, IdleTimeout: cl.IdleTimeout, H2Windows: cl.H2Windows,
		ConnectTimeout: cl.ConnectTimeout, Path: normalized, Authority: rt.HostRewrite, NoTimeout: rt.Timeout == 0, StreamIdle: rt.IdleTimeout, HasStreamIdle: rt.HasIdleTimeout}
	if rt.RewritesPath() {
		rewritePath(&t, rt, h.Target(), path)
	}
	t.Headers = muts // wops', rt's, vh's and rc's, compiled with the routes
	if cl.TLS != nil {
		t.TLS = cl.TLS // the cluster's handshake, checks and ssl.* counters
	}
	t.Retry, t.Upstream, t.Held = rt.Retry, (*loopCluster)(cl), held
	return t
}

// loopOverflow is the local reply to a request the circuit breakers
// refuse, as the goroutine path's (httpconn's roundTrip): host is the
// upstream host its access log names, none for an overflow of
// max_pending_requests.
func loopOverflow(cluster, route string, host netip.AddrPort) evloop.Target {
	return evloop.Target{Status: 503, Flags: accesslog.UpstreamOverflow, Details: "upstream_reset_before_response_started{overflow}",
		Body: "upstream connect error or disconnect/reset before headers. reset reason: overflow", Cluster: cluster, Route: route, Host: host}
}

// normalizedHead is a head whose target's path the connection manager
// normalised, as the routes (a :path header matcher too) see it.
type normalizedHead struct {
	route.Head
	target []byte
}

func (h normalizedHead) Target() []byte { return h.target }

// query is target's query with its '?', or nothing.
func query(target []byte) []byte {
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		return target[q:]
	}
	return nil
}

// rewritePath sets t's upstream path and x-envoy-original-path as the
// goroutine path's rewrite does for a route with a prefix or regex
// rewrite (the header even when the path is unchanged, as Envoy's
// router): route.Route.RewritePath of the path the routes matched
// (matched: as received, or normalised), its bytes as they are; the
// original is that path (Envoy's connection manager normalises :path in
// place before its router reads it) and the request's query (from
// target).
func rewritePath(t *evloop.Target, rt *route.Route, target, matched []byte) {
	query := target[len(target):]
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		query = target[q:]
	}
	m := string(matched)
	if up := rt.RewritePath(m); up != m {
		t.Path = up
		if t.Path == "" {
			t.Path = "/" // as the goroutine path's setPath
		}
	}
	t.OriginalPath = m + string(query)
}

// loopRetries are the retry conditions the loops implement: all, gRPC's
// on the response head's grpc-status as the goroutine path reads it.
const loopRetries = route.On5xx | route.OnGatewayError | route.OnReset | route.OnConnectFailure | route.OnRefusedStream |
	route.OnRetriableStatusCodes | route.OnRetriable4xx | route.OnGRPCCancelled | route.OnGRPCDeadlineExceeded |
	route.OnGRPCInternal | route.OnGRPCResourceExhausted | route.OnGRPCUnavailable

// loopRetry reports whether the loops implement a route's retry policy.
func loopRetry(rp *route.RetryPolicy) bool {
	return rp == nil || rp.On&^loopRetries == 0
}

// loopCluster is a cluster as the loops' requests use it
// (evloop.Upstream): the same circuit breakers, retry budget, stats and
// load balancer as the goroutine path's roundTrip.
type loopCluster cluster.Cluster

func (c *loopCluster) Acquire(tag any) bool {
	h, _ := tag.(*cluster.Host)
	return (*cluster.Cluster)(c).AcquireRequest(h)
}

func (c *loopCluster) Release(s evloop.Slots) {
	cl := (*cluster.Cluster)(c)
	if s&evloop.SlotRequest != 0 {
		cl.ReleaseRequest()
	}
	if s&evloop.SlotConnection != 0 {
		cl.ReleaseConnection()
	}
}

func (c *loopCluster) Retry() func() {
	cl := (*cluster.Cluster)(c)
	release, ok := cl.AcquireRetry()
	if !ok {
		return nil
	}
	cl.Stats.RqRetry.Inc()
	return release
}

func (c *loopCluster) RetryEnd(exceeded bool) {
	if exceeded {
		c.Stats.RqRetryLimit.Inc()
	} else {
		c.Stats.RqRetrySuccess.Inc()
	}
}

func (c *loopCluster) RetryAbandoned() { c.Stats.RetryAbandoned.Inc() }

func (c *loopCluster) PerTryTimeout() { c.Stats.RqPerTryTimeout.Inc() }

func (c *loopCluster) Pick(avoid func(any) bool, attempts int) (netip.AddrPort, any, bool) {
	var av func(*cluster.Host) bool
	if avoid != nil {
		av = func(h *cluster.Host) bool { return avoid(h) }
	}
	h, err := (*cluster.Cluster)(c).Pick(av, attempts)
	if err != nil {
		return netip.AddrPort{}, nil, false
	}
	ap, err := netip.ParseAddrPort(h.Addr)
	if err != nil {
		return netip.AddrPort{}, nil, false
	}
	return ap, h, true
}

var _ evloop.HostsWatcher = loopObserver{}

// loopObserver records the loops' upstream attempts as the goroutine path
// does: host stats, outlier detection, response codes.
type loopObserver struct{ clusters *cluster.Manager }

func (o loopObserver) Started(name string, tag any) {
	if h, ok := tag.(*cluster.Host); ok {
		h.RequestStarted()
	}
}

func (o loopObserver) Done(name string, tag any, code int, timedOut bool) {
	h, ok := tag.(*cluster.Host)
	c := o.clusters.Get(name)
	if !ok || c == nil {
		return
	}
	if code < 0 {
		c.RequestReset(h, c.HTTP2) // the loops serve no cluster whose protocol follows the client's
		return
	}
	c.RequestDone(h, 0, true, timedOut)
}

func (o loopObserver) Head(name string, tag any, r route.ResponseHead) bool {
	h, ok := tag.(*cluster.Host)
	c := o.clusters.Get(name)
	if !ok || c == nil {
		return false
	}
	if r.Retried {
		c.Stats.RetryResponse(r.Status)
	} else {
		c.Stats.Response(r.Status)
	}
	return c.ResponseHead(h, r)
}

func (o loopObserver) GRPCDone(_ string, tag any, status int) {
	if h, ok := tag.(*cluster.Host); ok {
		h.GRPCDone(status)
	}
}

func (o loopObserver) Cut(name string, tag any, timedOut bool) {
	h, ok := tag.(*cluster.Host)
	if c := o.clusters.Get(name); ok && c != nil {
		c.ResponseCut(h, timedOut)
	}
}

func (o loopObserver) Interim(name string, _ any, code int) {
	if c := o.clusters.Get(name); c != nil {
		c.Stats.Response(code)
	}
}

// Connected counts a loop's upstream connection in its cluster's and
// host's connection statistics as the goroutine path counts its own
// (cluster.Cx), into the same numbers.
func (o loopObserver) Connected(name string, tag any, connect time.Duration) any {
	c := o.clusters.Get(name)
	if c == nil {
		return nil
	}
	h, _ := tag.(*cluster.Host)
	return c.CxOpened(h, time.Now().Add(-connect))
}

func (o loopObserver) Closed(cx any) {
	if x, ok := cx.(*cluster.Cx); ok {
		x.Closed()
	}
}

// ConnectFailed counts a loop's failed connect in its host's
// cx_connect_fail, as the goroutine path's connect does
// (cluster.HostConnectFailed); the loops counted the cluster's.
func (o loopObserver) ConnectFailed(name string, tag any) {
	if c := o.clusters.Get(name); c != nil {
		h, _ := tag.(*cluster.Host)
		c.HostConnectFailed(h)
	}
}

// WatchHosts tells the loops of the hosts that leave a cluster
// (cluster.Manager.OnHostsGone), whose pools they drain as the goroutine
// path's cluster drains its own: once per update, nothing per request.
func (o loopObserver) WatchHosts(gone func(cluster string, hosts []netip.AddrPort)) (stop func()) {
	return o.clusters.OnHostsGone(func(name string, addrs []string) {
		hosts := make([]netip.AddrPort, 0, len(addrs))
		for _, a := range addrs {
			if ap, err := netip.ParseAddrPort(a); err == nil { // as route parses a host's address
				hosts = append(hosts, ap)
			}
		}
		gone(name, hosts)
	})
}

func (o loopObserver) Aborted(name string, code int, dropped bool) {
	if c := o.clusters.Get(name); c != nil {
		c.Stats.Response(code)
		if dropped {
			c.Stats.Dropped()
		}
	}
}

// loopRoute reports whether the loops forward a request on rt exactly as
// the goroutine path would: to a cluster, the path and host as they are
// or rewritten (prefix, regex, host literal: route's rewritePath,
// Target.Authority), request header mutations the loops apply
// (loopOps), no max stream duration nor
// grpc-timeout, and a retry policy the loops implement. Any route timeout
// (none too) and idle timeout: the loops keep the stream idle timeout as
// the goroutine path does (evloop's idleAt).
func loopRoute(rc *route.Config, vh *route.VirtualHost, rt *route.Route) bool {
	return (rt.Kind == route.ToCluster || rt.Kind == route.ToWeighted) &&
		rt.MaxStreamDuration == 0 &&
		!rt.UseGRPCTimeout && loopRetry(rt.Retry) &&
		loopOps(&rt.Headers) && loopOps(&vh.Headers) && loopOps(&rc.Headers)
}

// loopOps reports whether the loops apply o as the goroutine path does:
// request mutations (Target.Headers) naming no header the loops treat
// themselves (evloop.OwnHeader), and no response mutations. A name that
// is not a token or a value with a control character (Envoy's validation
// accepts both: route.Compile refuses only NUL, CR and LF) is the
// goroutine path's too, whose Transport leaves such a field out or
// refuses the request, where the loops would write it as it is.
func loopOps(o *route.HeaderOps) bool {
	if len(o.ResponseAdd) > 0 || len(o.ResponseRemove) > 0 {
		return false
	}
	for _, k := range o.RequestRemove {
		if evloop.OwnHeader(k) || !httpguts.ValidHeaderFieldName(k) {
			return false
		}
	}
	for i := range o.RequestAdd {
		a := &o.RequestAdd[i]
		if evloop.OwnHeader(a.Key) || !httpguts.ValidHeaderFieldName(a.Key) || !httpguts.ValidHeaderFieldValue(a.Value) {
			return false
		}
	}
	return true
}

// idsKept reports whether h has x-request-id lines and weft keeps each
// as it is (route.KeepsRequestID): none is replaced or dropped.
func idsKept(h route.Head) bool {
	n := 0
	for i := range h.NumHeaders() {
		if k, v := h.Header(i); route.EqualFoldASCII(k, "x-request-id") {
			if !route.KeepsRequestID(v) {
				return false
			}
			n++
		}
	}
	return n > 0
}
