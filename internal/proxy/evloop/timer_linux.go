package evloop

import (
	"math"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// A loop's timeouts: each client connection is in the loop's timer heap
// at most once, keyed by the earliest time one of its timeouts may be due
// (deadline). The loop waits in epoll until the heap's first deadline,
// then expires what is due. A deadline that moves earlier (a request
// starts, a connect, a back-off) re-keys the connection at once (arm,
// after every event); one that moves later (activity pushes the idle
// timeout back) is left: the connection's entry fires early, finds
// nothing due and is re-keyed then. At 1,000 requests/s over 16
// connections that is one early expiry per connection per request
// timeout (15 s), and one heap fix per request (the request timeout
// comes before the idle one): O(log connections), no allocation.
//
// A hashed wheel would make arm O(1), but the heap's log n over a loop's
// connections is a few comparisons at the connection counts a sidecar
// sees, and it fires each timeout at its time rather than at a tick.

// timerSlot is a connection's place in its loop's timer heap.
type timerSlot struct {
	at  int64 // loop time its entry fires; valid while idx > 0
	idx int   // position in the heap + 1; 0 when not in it
}

// timerHeap is a binary min-heap of connections by tm.at.
type timerHeap []*down

func (h timerHeap) less(i, j int) bool { return h[i].tm.at < h[j].tm.at }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].tm.idx, h[j].tm.idx = i+1, j+1
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h.less(c+1, c) {
			c++
		}
		if !h.less(c, i) {
			return
		}
		h.swap(i, c)
		i = c
	}
}

// set puts d in the heap at at, or moves it there.
func (l *loop) setTimer(d *down, at int64) {
	h := l.timers
	if d.tm.idx == 0 {
		d.tm.at = at
		h = append(h, d)
		d.tm.idx = len(h)
		h.up(len(h) - 1)
		l.timers = h
		return
	}
	old := d.tm.at
	d.tm.at = at
	if at < old {
		h.up(d.tm.idx - 1)
	} else {
		h.down(d.tm.idx - 1)
	}
}

// stopTimer takes d out of the heap.
func (l *loop) stopTimer(d *down) {
	i := d.tm.idx - 1
	if i < 0 {
		return
	}
	h := l.timers
	last := len(h) - 1
	if i != last {
		h.swap(i, last)
	}
	h[last] = nil
	h = h[:last]
	l.timers = h
	d.tm.idx = 0
	if i < last {
		h.down(i)
		h.up(i)
	}
}

// never is a deadline that does not come.
const never = math.MaxInt64

// farTimeout is the longest timeout a request's deadlines take: its route
// timeout and stream idle timeout (dispatch), its per-try timeout
// (tryDeadline) and a retry's back-off (backoffAt): a century, as none,
// so that a loop time plus it does not wrap (a Duration of 10,000 years
// is MaxInt64 nanoseconds).
const farTimeout = int64(100 * 365 * 24 * time.Hour)

// deadline returns the earliest loop time one of d's timeouts may be due,
// from its state: what expire checks, under the same conditions (a
// deadline past that expire does not act on would spin the loop).
func (l *loop) deadline(d *down) int64 {
	if d.h2c != nil && !d.draining {
		return l.h2Deadline(d)
	}
	if st := d.ustream(); st != nil && st.us != nil {
		return l.h2uDeadline(d)
	}
	u := d.u
	at := int64(never)
	if d.drainNext && d.requests == 0 && (d.in == nil || d.off == len(d.in)) {
		at = min(at, d.drainBy)
	}
	if d.draining {
		return d.last + int64(drainFor) // its only timeout left
	}
	if d.state == dsSkip {
		return d.skipBy // likewise
	}
	if u == nil && d.state == dsHead && !d.rs.waiting {
		if d.headStart != 0 {
			at = min(at, d.headStart+int64(d.gen.headers))
		}
		at = min(at, d.last+int64(d.gen.idle))
	}
	if u != nil && u.connecting {
		at = min(at, l.connectBy(u))
	}
	if u != nil || d.rs.waiting {
		at = min(at, d.routeDeadline())
	}
	if u != nil && d.rs.perTry() {
		at = min(at, d.tryDeadline())
	}
	at = min(at, d.h1StallDeadline())
	if d.rs.waiting {
		at = min(at, d.rs.at)
	}
	return at
}

// arm makes d's entry fire no later than its deadline; called after
// anything that may have moved the deadline earlier.
func (l *loop) arm(d *down) {
	if d.closed {
		return
	}
	at := l.deadline(d)
	if at == never {
		return // an entry still there fires early and is dropped then
	}
	if d.tm.idx == 0 || at < d.tm.at {
		l.setTimer(d, at)
	}
}

// expireTimers expires the connections whose entries are due, and re-keys
// those that stay open.
func (l *loop) expireTimers() {
	for len(l.timers) > 0 && l.timers[0].tm.at <= l.now {
		d := l.timers[0]
		l.stopTimer(d)
		l.expire(d)
		if d.closed {
			continue
		}
		if at := l.deadline(d); at != never {
			// Not before the next millisecond: a deadline expire did not
			// act on (none should be) is looked at again, not spun on.
			l.setTimer(d, max(at, l.now+int64(time.Millisecond)))
		}
	}
}

// waitFor is how long the loop may wait for events: until the first
// deadline, and at most poolSweepEvery (the host pools' sweep).
func (l *loop) waitFor() time.Duration {
	w := time.Duration(l.sweptAt + int64(poolSweepEvery) - l.now)
	if len(l.timers) > 0 {
		w = min(w, time.Duration(l.timers[0].tm.at-l.now))
	}
	return max(w, 0)
}

// poolSweepEvery is how often a loop drops the host pools unused for
// hostPoolIdle, frees the buffers it did not need (trimBufs) and renews
// what its idle HTTP/2 connections keep (lightenH2). A variable for the
// tests, set before a loop starts.
var poolSweepEvery = hostPoolIdle / 4

// expire enforces d's timeouts that are due: the fresh drain's grace,
// the drain's end, a skipped body's, the head and idle timeouts, the
// upstream connect, the request timeout, the per-try timeout and the end
// of a retry's back-off.
func (l *loop) expire(d *down) {
	if d.h2c != nil && !d.draining {
		l.h2Expire(d)
		return
	}
	if st := d.ustream(); st != nil && st.us != nil {
		l.h2uExpire(d)
		return
	}
	u := d.u
	if d.draining {
		if l.now-d.last >= int64(drainFor) {
			l.closeDown(d)
		}
		return
	}
	switch {
	case d.state == dsSkip:
		if l.now >= d.skipBy {
			l.closeDown(d) // the body did not end in time: the goroutine path's drain gives up likewise
		}
	case d.drainNext && d.requests == 0 && l.now >= d.drainBy && (d.in == nil || d.off == len(d.in)):
		l.closeDown(d)
	case u == nil && d.state == dsHead && !d.rs.waiting && d.headStart != 0 && l.now-d.headStart >= int64(d.gen.headers):
		if d.in == nil || d.off == len(d.in) {
			d.gen.st.rqHeaderTimeout.Inc()
			l.closeDown(d) // not a byte since it was accepted: nothing to answer
			return
		}
		l.refuse(d, proxyroute.RefuseHeaderTimeout)
	case u == nil && d.state == dsHead && !d.rs.waiting && l.now-d.last >= int64(d.gen.idle):
		d.gen.st.cxIdleTimeout.Inc()
		l.closeDown(d)
	case u != nil && u.connecting && l.now >= l.connectBy(u):
		l.connectTimedOut(u)
		l.upFailed(u)
	case (u != nil || d.rs.waiting) && d.idleFirst(l.now):
		l.streamIdle(d)
	case l.now >= d.h1StallDeadline():
		l.h1Stall(d)
	case (u != nil || d.rs.waiting) && l.now >= d.rtAt():
		d.logFlags(accesslog.UpstreamRequestTimeout, proxyroute.DetailsRouteTimeout)
		// The connection carries on unless the body is still coming
		// (localReply), as on the goroutine path (and the per-try
		// timeout's).
		if u == nil {
			// In a retry's back-off: no attempt to reset, so nothing is
			// counted, as Envoy's Filter::onResponseTimeout counts and
			// charges only the upstream requests it resets (as the
			// goroutine path: ctxError).
			l.localReply(d, 504, "upstream request timeout", false)
			return
		}
		u.pool.st.rqTimeout.Inc()
		l.observeDone(u, 0, true)
		l.observeCut(u, true) // one whose head went on (Observer.Cut)
		if u.status != 0 {
			l.cutResponse(u, accesslog.UpstreamRequestTimeout, "") // its details logged above
			return
		}
		u.d, d.u = nil, nil
		l.closeUp(u)
		l.abortReply(d, u.pool, 504, "upstream request timeout", false)
	case u != nil && d.rs.perTry() && l.now >= d.tryDeadline():
		l.perTryTimeout(u)
	case d.rs.waiting && l.now >= d.rs.at:
		l.retryNow(d)
	}
}

// connectBy is when u's connect times out: its connectFor from the
// connect's start. It covers the TLS handshake: u stays connecting until
// the handshake is done.
func (l *loop) connectBy(u *up) int64 {
	return u.started + u.connectFor
}

// connectFor is the timeout of a connect p starts now: its connect
// timeout (the cluster's connect_timeout, else Config.ConnectTimeout),
// capped at farTimeout. A connect keeps it: a later request with another
// (a CDS update) does not move it, as Envoy arms its connect timer once,
// with the connection (ActiveClient).
func (l *loop) connectFor(p *clusterPool) int64 {
	t := p.connect
	if t <= 0 {
		t = l.srv.cfg.ConnectTimeout
	}
	return min(int64(t), farTimeout)
}

// connectTimedOut counts a connect its timeout ended, as Envoy's pool
// counts it (ActiveClient::onConnectTimeout, then the close of a
// connection still connecting): upstream_cx_connect_timeout and
// upstream_cx_connect_fail.
func (l *loop) connectTimedOut(u *up) {
	u.timedOut = true
	u.pool.st.cxConnectTimeout.Inc()
	l.connectFailed(u.pool)
}

// routeDeadline is when the request in flight on d times out: the
// first of its route timeout (rtAt) and its stream idle timeout
// (idleAt).
func (d *down) routeDeadline() int64 { return min(d.rtAt(), d.idleAt()) }

// rtAt is when the route timeout ends the request in flight on d: from
// the request's end (rtFrom), as Envoy's router arms its response
// timeout in Router::Filter::onRequestComplete
// (source/common/router/router.cc), once the downstream request is
// whole; never while its body is still coming, nor for a route without
// a timeout.
func (d *down) rtAt() int64 {
	if d.bodyIn || d.timeout <= 0 {
		return never
	}
	return d.rtFrom + d.timeout
}

// idleAt is when the stream idle timeout ends the request in flight on
// d: the route's idle_timeout, else the connection manager's
// stream_idle_timeout (d.idle), from the stream's last activity (d.last,
// the loop's time of a read from the client or the upstream: no clock
// read of its own) or the response's last write to the client (outAt,
// an h2 stream's last), as Envoy's ActiveStream idle timer
// (source/common/http/conn_manager_impl.cc, onIdleTimeout; the router's
// per-route override) restarts on every frame decoded or encoded. While
// the body comes it alone bounds the request; after, only when the
// route timeout would not end the stream first (idleOn, as the goroutine
// path's timers skip it): the common route (15 s, 5 min idle) keeps no
// idle timeout after the request and notes no activity. Never when off.
func (d *down) idleAt() int64 {
	if d.idle <= 0 || !d.bodyIn && !d.idleOn {
		return never
	}
	at := max(d.last, d.outAt) // an outAt of an earlier request is before last (dispatch)
	if d.h2 != nil {
		at = max(at, d.h2.last)
	}
	return at + d.idle
}

// idleFirst reports whether the stream idle timeout is due at now and
// comes no later than the route timeout (which then ends the stream).
func (d *down) idleFirst(now int64) bool {
	at := d.idleAt()
	return now >= at && at <= d.rtAt()
}

// responseActive notes the response's progress on d (bytes of it from
// the upstream) while the stream idle timeout bounds the request
// (idleAt): it runs from the last progress either way, as Envoy's stream
// idle timer restarts on each frame encoded as on each decoded
// (FilterManager::encodeData, decodeData), and the goroutine path's on
// each body read and write. A bidirectional stream whose client sends
// nothing while the response streams is not cut, nor a response that
// streams more often than the idle timeout. The entry in the timer heap
// is left: it fires early and is re-keyed then (arm).
func (l *loop) responseActive(d *down) {
	if d.bodyIn || d.idleOn {
		d.last = l.now
	}
}

// tryDeadline is when the attempt in flight passes its per-try timeout:
// that long after its start, or after the request's end when that came
// later, as Envoy's UpstreamRequest::setupPerTryTimeout runs from
// onPoolReady when the downstream request is complete, else from
// Filter::onRequestComplete (source/common/router/upstream_request.cc,
// router.cc); never while the body is coming.
func (d *down) tryDeadline() int64 {
	if d.bodyIn {
		return never
	}
	return max(d.rs.tryStart, d.rtFrom) + min(int64(d.rs.policy.PerTryTimeout), farTimeout)
}

// reqComplete: the request in flight on d has been received whole (its
// body's end, or an HTTP/2 stream's END_STREAM or trailers): its route
// timeout, and the per-try timeout of an attempt already sent, run from
// now (routeDeadline, tryDeadline).
func (l *loop) reqComplete(d *down) {
	if !d.bodyIn {
		return
	}
	d.bodyIn, d.rtFrom = false, l.now
	l.arm(d)
}

// streamIdle ends a request whose stream made no progress for the
// stream idle timeout (idleAt): before a response, stream timeout
// (SI, stream_idle_timeout) with route.StreamTimeoutReply's status (408
// while the body is still coming, else 504), as Envoy's
// ActiveStream::onIdleTimeout answers, counted in
// downstream_rq_idle_timeout; nothing is charged to the cluster, as the
// goroutine path charges no stream end that is not the router's giving
// up (roundTrip). A response under way is cut, as Envoy resets a stream
// whose response began.
func (l *loop) streamIdle(d *down) {
	d.gen.st.rqIdleTimeout.Inc()
	d.logFlags(accesslog.StreamIdleTimeout, proxyroute.DetailsStreamIdleTimeout)
	status, _ := proxyroute.StreamTimeoutReply(!d.bodyIn, false)
	d.bodyIn = false // the stream ends: nothing is waited for any more
	u := d.u
	if u == nil {
		l.localReply(d, status, "stream timeout", false)
		return
	}
	l.observeDone(u, 0, false)
	if u.status != 0 {
		// As cutResponse, without counting the cut as the upstream's.
		l.logEnded(d) // with the status sent
		l.closeUp(u)
		if d.outOff < len(d.out) {
			l.flushDown(d)
		}
		l.closeDown(d)
		return
	}
	u.d, d.u = nil, nil
	l.closeUp(u)
	l.localReply(d, status, "stream timeout", false)
}

// h1StallDeadline is when an HTTP/1.1 response that the client does not
// read (its socket takes none of out) is given up: stream_idle_timeout
// after out's last progress (outAt, the loop's time of the write: no
// clock read of its own), while the upstream's response, its head sent,
// is held on it, from an HTTP/1.1 upstream (h1Stall) or an HTTP/2
// upstream stream (h2uExpire); never otherwise. Envoy's stream idle timer
// runs on: the client's full buffer pauses the upstream's reads (or
// withholds its window), and nothing moves.
func (d *down) h1StallDeadline() int64 {
	if !d.wantOut || d.h2 != nil || d.idle <= 0 {
		return never
	}
	if u := d.u; u != nil && u.status != 0 || d.hb != nil && d.hb.st.us != nil && d.hb.st.us.gotHead {
		return d.outAt + d.idle
	}
	return never
}

// h1Stall ends the response its client stopped reading
// (h1StallDeadline), as Envoy's ActiveStream::onIdleTimeout resets a
// stream whose response began: logged with the status sent, SI and
// stream_idle_timeout, counted in downstream_rq_idle_timeout, the
// connection closed (the HTTP/2 streams' bound is stallDeadline).
func (l *loop) h1Stall(d *down) {
	u := d.u
	d.gen.st.rqIdleTimeout.Inc()
	d.logFlags(accesslog.StreamIdleTimeout, proxyroute.DetailsStreamIdleTimeout)
	d.bodyIn = false // the stream ends: nothing is waited for any more
	l.observeDone(u, 0, false)
	l.logEnded(d) // with the status sent
	l.closeUp(u)
	l.closeDown(d)
}
