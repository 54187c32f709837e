package httpconn

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// Causes of a stream's cancellation, told apart for response flags.
var (
	errRouteTimeout = errors.New("upstream request timeout")
	errIdleTimeout  = errors.New("stream idle timeout")
	errDuration     = errors.New("max stream duration reached")
	errPerTry       = errors.New("per try timeout")
)

// stream is one request's state, owned by the handler goroutine. It
// keeps the stream's context because the upstream response body needs the
// cancellation cause to set the right response flag.
type stream struct {
	// w is the connection's ResponseWriter, for abortWrites; abortMu
	// orders abortWrites, on a timer's goroutine, against the stream's
	// end (done).
	w         http.ResponseWriter
	abortMu   sync.Mutex
	done      bool
	deadline  bool // abortWrites set one
	idleArmed bool // an idle timer runs; set before any body I/O
	headless  bool // the codec reset the stream: logged without its request
	complete  bool // the request has been received whole (requestComplete); under abortMu, as the next two, rtTimer and tryTimer
	rtWait    bool // its route timer (armRoute: the timeout, or the client-gone watch) waits for that
	rtStopped bool // the stream's timers stopped: requestComplete arms none
	watched   bool // routeFired started the watch for a client gone (under abortMu)
	left      bool // clientLeft recorded the client's end
	rxReset   bool // counted in downstream_rq_rx_reset (countRxReset)
	m         *HCM
	conn      *listener.Conn
	in        *http.Request
	start     time.Time
	rc        *route.Config
	vh        *route.VirtualHost
	rt        *route.Route
	cl        *cluster.Cluster
	wops      *route.HeaderOps
	upPath    string // the path sent upstream
	rewrote   bool   // the route rewrites the path (prefix or regex rewrite), changed or not
	changed   bool   // upPath is not the path the routes matched (rewritten)
	queued    bool   // the first attempt waited in the cluster's pending queue, and it ended (in the padding after the bools above, not after upStart: 352 bytes a request, not 384)
	flags     accesslog.Flags
	host      *cluster.Host
	attempts  int
	upStart   time.Time     // first upstream attempt
	rtTimer   *time.Timer   // the route timer requestComplete armed (rtWait), or one routeFired re-arms (armRoute)
	tryTimer  *time.Timer   // the attempt in flight's per-try timer, waiting for the request's end; nil when none waits
	svcTime   time.Duration // upstream time to response headers
	cancel    context.CancelCauseFunc
	ctx       context.Context // the stream's context, cancelled with a cause
	down      context.Context // the downstream's: ends when the client is gone
	activity  atomic.Int64    // unix nanos of the last body read or write, for the idle timeout
	rxBytes   atomic.Int64
	// arrival tells whether the request's body has arrived whole; nil
	// when the body has none to tell (HTTP/2's) or there is no body.
	arrival bodyArrival
	// bodyBroke and bodyFlags record that reading the upstream response
	// body failed (not EOF), and why: atomic, because for an upgraded
	// connection the forwarder reads the body on a goroutine of its own.
	bodyBroke atomic.Bool
	bodyFlags atomic.Uint32          // accesslog.Flags
	bodyCut   atomic.Pointer[string] // the details of the upstream's reset that cut it (upstreamBody.cutBy), or the max stream duration's
	bodyErr   atomic.Pointer[error]  // the first error reading the downstream request body
	details   string
	// upstreamFailure is the last attempt's transport failure reason
	// (localError.upstreamFailure), for %UPSTREAM_TRANSPORT_FAILURE_REASON%.
	upstreamFailure string
	rw              *respWriter
	slots           []any // one per filter; nil without filters
	ran             int   // filters whose DecodeHeaders ran
}

// allFlags are the stream's response flags, with those the upstream body
// recorded.
func (s *stream) allFlags() accesslog.Flags {
	return s.flags | accesslog.Flags(s.bodyFlags.Load())
}

// codeDetails are the stream's response code details: a response cut
// for the client's malformed body (upstreamBody.Read) has the protocol
// error's, one relayed from the upstream (route.DetailsViaUpstream) and
// cut by the route timeout the timeout's, by the upstream's reset the
// reset's (route.DetailsCut*), as Envoy's router replaces via_upstream
// then (Filter::onResponseTimeout, onUpstreamReset, whose local reply
// can only reset the stream but sets its details), and by the stream
// idle timeout or the max stream duration theirs, as Envoy's connection
// manager does. bodyFlags and bodyCut
// are read atomically: an upgraded connection's body is read on a
// goroutine of its own.
func (s *stream) codeDetails() string {
	if s.details != "" && s.details != route.DetailsViaUpstream {
		return s.details
	}
	switch f := accesslog.Flags(s.bodyFlags.Load()); {
	case f&accesslog.DownstreamProtocolError != 0:
		return detailsProtocolError
	case s.details == "":
	case f&accesslog.UpstreamRequestTimeout != 0:
		return route.DetailsRouteTimeout
	case f&accesslog.StreamIdleTimeout != 0:
		return route.DetailsStreamIdleTimeout
	case s.bodyCut.Load() != nil:
		return *s.bodyCut.Load()
	}
	return s.details
}

func (s *stream) touch() {
	if s.idleArmed {
		s.activity.Store(time.Now().UnixNano())
	}
}

// serve handles one downstream request. ctx ends when the downstream
// connection does (or, on the HTTP/1.1 fast path, at shutdown).
func (m *HCM) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, c *listener.Conn) {
	resets := resetTrackerFrom(ctx) // HTTP/2 only
	if resets != nil && resets.tripped.Load() {
		// The connection is closing for premature resets: no new stream
		// reaches an upstream.
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	s := &stream{m: m, conn: c, in: r, start: time.Now(), down: ctx, w: w}
	// The request's :scheme, written in its URL (net/http's holds an
	// absolute-form target's scheme, else none) as Envoy's connection
	// manager writes it in the request's headers before it routes
	// (mutateRequestHeaders): the routes' :scheme matchers, the upstream
	// (rewrite) and the access log read it there. TLS is set only to
	// carry an HTTP/2 request's (h2SchemeConn); nothing else reads it.
	r.URL.Scheme = m.requestScheme(r, c)
	r.TLS = nil
	defer s.ended()
	m.stats.rqTotal.Inc()
	m.stats.rqActive.Inc()
	if r.ProtoMajor == 2 {
		m.stats.rqHTTP2.Inc()
	} else {
		m.stats.rqHTTP1.Inc()
	}
	rw := &respWriter{ResponseWriter: w, s: s}
	s.rw = rw
	if r.Body != nil && r.Body != http.NoBody {
		s.arrival, _ = r.Body.(bodyArrival)
		r.Body = &countingBody{ReadCloser: r.Body, s: s}
	}
	defer func() {
		p := recover()
		var cause error
		if p != nil && s.ctx != nil {
			cause = context.Cause(s.ctx)
		}
		switch {
		case p == nil:
		case errors.Is(cause, errDuration):
			// The max stream duration reset it (abortWrites: a client
			// holding the response back; over HTTP/1.1 the failed
			// write leaves ctx on): logged with its details and no
			// flag as the upstream body's cut by it is (upstreamBody.Read),
			// as Envoy's onStreamMaxDurationReached logs it after the
			// head too.
			s.bodyCut.CompareAndSwap(nil, &cutMaxDuration)
		case errors.Is(cause, errIdleTimeout):
			// The stream idle timeout reset it (abortWrites: a
			// client holding the response back, over HTTP/1.1 too,
			// where the failed write leaves ctx on): logged as the
			// upstream body's cut by it is (codeDetails), as
			// Envoy's onIdleTimeout logs it after the head too.
			s.bodyFlags.Or(uint32(accesslog.StreamIdleTimeout))
		case ctx.Err() == nil:
		default:
			// The client left after the head went down, or reset the
			// stream: logged and counted as before it (clientLeft), as
			// Envoy's completeRequest and onResetStream log and count
			// it whether or not the response began, and the loops
			// (evloop's streamGone). Not a stream a timeout ended
			// first (abortWrites: x/net resets it, which ends ctx too).
			s.flags |= accesslog.DownstreamConnectionTermination
			if s.ctx == nil || context.Cause(s.ctx) == context.Cause(ctx) {
				s.clientLeft()
			}
		}
		var flushTimedOut bool
		var flushErr error
		if p == nil && r.ProtoMajor == 2 {
			flushTimedOut, flushErr = s.flushH2(rw)
		}
		m.finish(s, rw, p == nil && flushErr == nil)
		if resets != nil {
			// A stream the proxy reset itself (its flush timed out) is
			// not a client's premature reset.
			premature := ctx.Err() != nil && !flushTimedOut && time.Since(s.start) < prematureResetLifetime
			if resets.streamEnded(premature) {
				m.stats.prematureResets.Inc()
				closeForResets(rw, c)
				if p == http.ErrAbortHandler {
					p = nil // an abort would skip the response that starts the GOAWAY
				}
			}
		}
		if p != nil {
			panic(p) // http.ErrAbortHandler: net/http resets the stream
		}
	}()
	if r.ProtoMajor == 2 && m.limits.H2Overflow(h2HeadSize(r, c)) {
		// Envoy's HTTP/2 codec resets the stream before its connection
		// manager sees the request; the abort resets it (INTERNAL_ERROR).
		m.stats.rqRxReset.Inc()
		m.stats.h2HeaderOverflow.Inc()
		s.flags |= accesslog.DownstreamProtocolError
		s.details, s.headless = route.H2TooManyHeaders, true
		panic(http.ErrAbortHandler)
	}
	if r.Host == "" {
		// Envoy's connection manager requires a Host (:authority) before
		// anything else (decodeHeaders): 400 without a body, and an
		// HTTP/1 connection closes after it, as after any 400 it answers.
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		m.localReply(rw, s, http.StatusBadRequest, 0, "", route.DetailsMissingHost)
		return
	}
	if ids := r.Header["X-Request-Id"]; m.generateRequestID && !slices.ContainsFunc(ids, route.KeepsRequestID[string]) {
		// As Envoy: the downstream request gets the ID, so the access log's
		// %REQ(X-REQUEST-ID)% and the upstream see the same one.
		r.Header.Set("X-Request-Id", newRequestID())
	} else if m.generateRequestID && slices.Contains(ids, "") {
		// Empty lines beside a kept one are not forwarded (route.KeepsRequestID).
		r.Header["X-Request-Id"] = slices.DeleteFunc(slices.Clone(ids), func(v string) bool { return !route.KeepsRequestID(v) })
	}
	if route.PathRefused(r.RequestURI, m.normalizePath) {
		// Refused by the connection manager, after it added the
		// request's ID and before its filters and routes; logged as
		// received.
		setPath(r.URL, requestPath(r))
		m.localReply(rw, s, http.StatusBadRequest, 0, "", route.DetailsPathNormalizationFailed)
		return
	}
	if len(m.filters) > 0 {
		s.slots = make([]any, len(m.filters))
		for i, f := range m.filters {
			s.ran = i + 1
			if lr := f.DecodeHeaders(Exchange{s}, &s.slots[i]); lr != nil {
				m.localReply(rw, s, lr.Status, 0, lr.Body, lr.Details)
				return
			}
		}
	}
	path := requestPath(r)
	if r.Method == http.MethodConnect || path == "" || path[0] != '/' {
		m.localReply(rw, s, http.StatusNotFound, accesslog.NoRouteFound, "", "route_not_found")
		return
	}
	// As Envoy's connection manager rewrites :path in place: the routes,
	// the access log and the upstream see the normalised path.
	path = m.Normalize(path)
	setPath(r.URL, path)
	s.rc = m.routeConfig()
	if s.rc != nil {
		s.vh, s.rt = s.rc.Match(r, path)
	}
	if s.rt == nil {
		m.stats.noRoute.Inc()
		m.localReply(rw, s, http.StatusNotFound, accesslog.NoRouteFound, "", "route_not_found")
		return
	}
	if r.ProtoMajor == 1 && route.IsUpgrade(r.Header["Connection"], r.Header["Upgrade"]) {
		// An empty Upgrade is an upgrade too, to "", which nothing
		// enables (route.UpgradeType).
		typ := strings.ToLower(route.UpgradeType(r.Header["Upgrade"]))
		ok := typ == "websocket" && m.websocket
		if v, set := s.rt.Upgrades[typ]; set {
			ok = v
		}
		if !ok {
			// Envoy refuses upgrades its configuration does not enable,
			// and closes the connection after (decodeHeaders sets
			// saw_connection_close_: what follows might be the upgrade's
			// bytes).
			w.Header().Set("Connection", "close")
			m.localReply(rw, s, http.StatusForbidden, 0, "", "upgrade_failed")
			return
		}
	}
	if s.rt.Kind == route.Direct {
		m.stats.directResponse.Inc()
		s.details = "direct_response"
		m.applyResponseHeaders(s, rw.Header())
		if s.replyCloses() {
			rw.Header().Set("Connection", "close")
		}
		if s.rt.DirectBody == "" {
			// Framed as a local reply without a body (localReply).
			emptyReply(s, rw.Header())
			rw.WriteHeader(s.rt.DirectStatus)
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		rw.Header().Set("Content-Length", strconv.Itoa(len(s.rt.DirectBody)))
		rw.WriteHeader(s.rt.DirectStatus)
		_, _ = io.WriteString(rw, s.rt.DirectBody)
		return
	}
	var name string
	name, s.wops, _ = s.rt.Pick()
	s.cl = m.deps.Clusters.Get(name)
	if s.cl == nil {
		m.stats.noCluster.Inc()
		s.details = "cluster_not_found"
		m.localReply(rw, s, http.StatusServiceUnavailable, accesslog.NoClusterFound, "", "cluster_not_found")
		return
	}
	s.upPath = s.rt.RewritePath(path)
	s.rewrote = s.rt.RewritesPath()
	s.changed = s.upPath != path

	sctx, cancel := context.WithCancelCause(ctx)
	s.cancel, s.ctx = cancel, sctx
	defer cancel(nil)
	for _, t := range m.timers(s) {
		defer t.Stop()
	}
	defer s.stopLateTimers()
	if ctx.Err() != nil {
		// Reset (HTTP/2) or shut down before dispatch: nothing goes
		// upstream.
		s.countRxReset()
		s.flags |= accesslog.DownstreamConnectionTermination
		if r.ProtoMajor == 1 {
			panic(http.ErrAbortHandler)
		}
		return
	}
	if m.forwardWith != nil {
		m.forwardWith(rw, s)
		return
	}
	m.forward(rw, s)
}

var bufPool = &bytePool{p: sync.Pool{New: func() any { return new([copyBuf]byte) }}}

// copyBuf is the size of the buffers response bodies are copied through.
const copyBuf = 32 << 10

// bytePool pools copy buffers as array pointers, so that neither Get nor
// Put allocates (a []byte stored in a sync.Pool would).
type bytePool struct{ p sync.Pool }

func (b *bytePool) Get() []byte { return b.p.Get().(*[copyBuf]byte)[:] }

func (b *bytePool) Put(x []byte) {
	if cap(x) == copyBuf {
		b.p.Put((*[copyBuf]byte)(x[:copyBuf]))
	}
}

// h2HeadSize is an HTTP/2 request's header list as route.H2List counts
// it (and the loops): from the request net/http's HTTP/2 server made of
// it, what the goroutine path sees, and its connection c (:scheme's, as
// r.TLS is nil on c); H2List says how that differs from the fields
// received, which Envoy's codec counts.
func h2HeadSize(r *http.Request, c *listener.Conn) (fields, bytes int) {
	l := route.NewH2List()
	l.Pseudo(":method", r.Method, false)
	if r.Method != http.MethodConnect {
		l.Pseudo(":scheme", "", c.Scheme() == "https")
		l.Pseudo(":path", r.RequestURI, false)
	}
	l.Pseudo(":authority", r.Host, false)
	for k, vv := range r.Header {
		for _, v := range vv {
			l.Field(k, v)
		}
	}
	return l.Count()
}

// finish records stats and writes access logs once the request is done;
// ended says the handler ended the response and, over HTTP/2, its last
// flush went out (it was not cut: an abort, a stream reset by the client
// or the flush timeout while its end waited for the window).
func (m *HCM) finish(s *stream, rw *respWriter, ended bool) {
	m.stats.rqActive.Dec()
	code := rw.code
	if code != 0 {
		// As Envoy counts it when it encodes a response head
		// (ActiveStream::chargeStats), and the loops: not for a stream
		// reset or a client gone before any answer.
		m.stats.rqCompleted.Inc()
	}
	if code >= 100 && code < 600 {
		m.stats.classes[code/100].Inc()
	}
	now := time.Now()
	if ended && code != 0 {
		// As Envoy's connection manager completes the request's
		// timespan once the codec has sent the response's end: a stream
		// reset or cut, or a client gone before any answer, records
		// none (as the loops).
		m.stats.rqTime.Record(uint64(now.Sub(s.start).Milliseconds()))
	}
	if s.cl != nil && s.host != nil && !s.upStart.IsZero() {
		s.cl.Stats.RqTime.Record(uint64(now.Sub(s.upStart).Milliseconds()))
	}
	for i := s.ran - 1; i >= 0; i-- {
		m.filters[i].Done(Exchange{s}, s.slots[i])
	}
	if len(m.logs) == 0 {
		return
	}
	e := accesslog.Entry{
		Start: s.start, Duration: time.Since(s.start), RequestDuration: -1, ResponseDuration: -1,
		Request: s.in, Protocol: s.in.Proto, ResponseCode: code, ResponseHeader: rw.Header(),
		ResponseTrailer: rw.Header(), CodeDetails: s.codeDetails(), Flags: s.allFlags(),
		BytesReceived: s.rxBytes.Load(), BytesSent: rw.bytes, Attempts: s.attempts,
		DownstreamRemote: s.conn.Src.String(), DownstreamLocal: s.conn.Dst.String(),
		DownstreamDirectPeer: s.conn.Src.String(), ServerName: s.conn.ServerName, ConnectionID: s.conn.ID,
		UpstreamFailure: s.upstreamFailure, Scheme: s.in.URL.Scheme,
	}
	if s.in.ProtoMajor == 2 {
		e.Protocol = "HTTP/2"
	}
	if s.headless {
		e.Request, e.Head, e.Scheme = nil, noHead{}, ""
	} else if s.in.ProtoMajor == 1 {
		// Logged as Envoy has the request by then (route.SeenIn): the
		// handler is done with it (the upstream got a copy).
		h := s.in.Header
		conn, upgrade, te, missingHost := h["Connection"], h["Upgrade"], h["Te"], s.details == route.DetailsMissingHost
		for k := range h {
			switch route.SeenIn(k, conn, upgrade, te, missingHost) {
			case route.Gone:
				delete(h, k)
			case route.Trailers:
				h[k] = []string{"trailers"}
			}
		}
	}
	if !s.headless {
		m.logRewrites(s)
	}
	if !rw.first.IsZero() {
		e.ResponseDuration = rw.first.Sub(s.start)
	}
	if s.rt != nil {
		e.RouteName = s.rt.Name
	}
	if s.cl != nil {
		e.UpstreamCluster = s.cl.Name
	}
	if s.host != nil {
		e.UpstreamHost = s.host.Addr
	}
	for _, l := range m.logs {
		l.Log(&e)
	}
}

// respWriter records the status, the bytes sent and activity.
type respWriter struct {
	http.ResponseWriter
	s         *stream
	code      int
	bytes     int64
	first     time.Time
	unflushed bool // body bytes were written since the last flush
}

func (w *respWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // 1xx informational: not final
		return
	}
	if w.code == 0 {
		w.code = code
		w.first = time.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	w.unflushed = w.unflushed || n > 0
	w.s.touch()
	return n, err
}

// FlushError is http.ResponseController's Flush.
func (w *respWriter) FlushError() error {
	w.unflushed = false
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts downstream request bytes and activity.
type countingBody struct {
	io.ReadCloser
	s *stream
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.s.rxBytes.Add(int64(n))
		b.s.touch()
	}
	if err == io.EOF {
		b.s.requestComplete()
	}
	if err != nil && err != io.EOF && err != http.ErrBodyReadAfterClose && !b.s.timedOut() {
		// Not the read a timeout cut (abortBody): the client's failure.
		b.s.bodyErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

// requestReceived reports whether the request has been received whole,
// as Envoy's connection manager tells it for the status of a timeout's
// local reply (route.StreamTimeoutReply; its remoteDecodeComplete): it
// has no body (over HTTP/2 none declared or sent: the upstream request
// is sent without one), a read of its body reached the end (complete), or, over
// HTTP/1.1, the rest of it has arrived (bodyArrival.Arrived, as Envoy's
// codec would have parsed it by then).
func (s *stream) requestReceived() bool {
	s.abortMu.Lock()
	complete := s.complete // requestComplete's, or timers' for a body already in
	s.abortMu.Unlock()
	switch {
	case s.in.ContentLength == 0 || complete:
		return true
	case s.arrival != nil:
		return s.arrival.Arrived()
	}
	return false
}

// receivedWhole reports whether the request has been received whole
// (complete: it has no body, its body had all arrived when its timers
// were armed, or a read reached its end).
func (s *stream) receivedWhole() bool {
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	return s.complete
}

// bodyArrival is an HTTP/1.1 request body that can tell whether all of
// it has arrived from the client (h1Body): Received as the upstream's
// writer found it, Arrived looking further (and reading what is there).
type bodyArrival interface {
	Received() bool
	Arrived() bool
}

// bodyComing reports whether the request's body is still arriving: an
// HTTP/1.1 response head written now comes before the request's end.
func (s *stream) bodyComing() bool { return s.arrival != nil && !s.arrival.Received() }

// replyCloses reports whether the HTTP/1.1 connection closes after a
// local reply made now (route.LocalReplyCloses): one made before the
// first upstream attempt (no route, a direct response, no healthy host,
// an overflow) is made at the head, before the body is read, but for a
// timeout that ended the first attempt's wait for a connection (queued):
// Envoy's pool queues the request, and its codec reads the body
// meanwhile.
func (s *stream) replyCloses() bool {
	return s.arrival != nil && route.LocalReplyCloses(s.upStart.IsZero() && !s.queued, s.arrival.Arrived)
}
