package httpconn

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/weftmesh/weft/internal/proxy/cluster"
)

// A stream's timeouts: the route timeout, the max stream duration and the
// stream idle timeout (timers), what a timeout does to the writes it
// cuts short (abortWrites), and the bound on an HTTP/2 response's last
// flush (flushH2).

// writeGrace is how long a write may still take once a timeout ended its
// stream (abortWrites): enough for the local reply (504) that follows a
// timeout before the response began.
const writeGrace = time.Second

// abortWrites bounds the stream's writes to the client at writeGrace from
// now, when a timeout ends it. The cancel stops what waits on the
// upstream, but a write blocks until the client reads: a client that
// never read held the stream, its goroutine and its upstream connection
// for good, and enough of them filled the cluster's max_connections.
// Envoy resets a stream its timeouts end while it waits on the client's
// window. Over HTTP/1.1 a write past the deadline ends the connection
// (h1Writer.SetWriteDeadline); over HTTP/2, x/net resets the stream.
// Nothing is set once the stream ended: the connection may be serving
// the next. It reports whether the stream was still on.
func (s *stream) abortWrites() bool {
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	if s.done || s.w == nil {
		return false
	}
	s.deadline = true
	_ = http.NewResponseController(s.w).SetWriteDeadline(time.Now().Add(writeGrace))
	return true
}

// flushH2 sends, over HTTP/2, what the response left buffered (a body of
// declared length, a local reply), bounded by stream_flush_timeout (the
// stream idle timeout unless set), as Envoy bounds a stream whose end is
// buffered waiting for the client's window. Else the HTTP/2 server sends
// it after the handler returned, when no timeout of the stream runs any
// more: a client that gives no window would hold the stream, its
// handler's goroutine and a slot of the connection's concurrent streams
// for good. The loops reset such a stream likewise (evloop's h2Expire). A
// timeout that already bounded the stream's writes (abortWrites) is left
// to do it. It returns the flush's error (the response's end did not go
// out: the stream was reset, by the client or for a timeout) and whether
// that was the flush timeout. Without a flush timeout (both 0) the flush
// waits for the client's window unbounded, as Envoy's stream does then,
// but for the connection's end or a timeout's abortWrites: finish records
// the request once its end went out, or not at all when it was reset, as
// with a timeout (it recorded it before, while x/net still held the end).
func (s *stream) flushH2(rw *respWriter) (timedOut bool, err error) {
	d := s.m.streamFlush
	if !rw.unflushed {
		return false, nil
	}
	if d <= 0 {
		return false, rw.FlushError()
	}
	rc := http.NewResponseController(rw.ResponseWriter)
	s.abortMu.Lock()
	own := !s.deadline
	deadline := time.Now().Add(d)
	if own {
		_ = rc.SetWriteDeadline(deadline)
	}
	s.abortMu.Unlock()
	err = rw.FlushError()
	if !own {
		return false, err
	}
	// Cleared before the stream can end (the handler has not returned):
	// x/net arms and clears deadlines on its connection's goroutine, in
	// the order they were set.
	s.abortMu.Lock()
	if !s.deadline {
		_ = rc.SetWriteDeadline(time.Time{})
	}
	s.abortMu.Unlock()
	if err != nil && !time.Now().Before(deadline) {
		s.m.stats.txFlushTimeout.Inc()
		return true, err
	}
	return false, err
}

// goneWatcher is the HTTP/1.1 fast path's response writer, which can
// watch its connection for the client's end while the request waits
// (h1gone.go).
type goneWatcher interface{ watchGone() }

// watchClient starts the watch for a client gone, unless the stream
// ended. Called with s.abortMu held.
func (s *stream) watchClient() {
	if !s.done {
		s.w.(goneWatcher).watchGone()
	}
}

// routeFired is the route timer of a stream whose client is watched
// for: due at watchAfter first, to start the watch, then at the route
// timeout. s.watched and s.rtTimer are read under s.abortMu: each fire
// runs on a goroutine of its own (armRoute sets rtTimer under it).
func (s *stream) routeFired() {
	s.abortMu.Lock()
	if !s.watched {
		s.watched = true
		if !s.done {
			s.watchClient()
			s.rtTimer.Reset(s.routeTimeout() - watchAfter)
		}
		s.abortMu.Unlock()
		return
	}
	s.abortMu.Unlock()
	s.routeTimedOut()
}

// armRoute arms the route timer of a request received whole (timers, or
// requestComplete at its body's end): due at the route timeout, or, over
// HTTP/1.1 (goneWatcher), first at watchAfter to start the watch for a
// client gone (h1gone.go), then at the rest of the timeout (routeFired);
// a route without a timeout has one at watchAfter for the watch alone.
// Over HTTP/1.1 a timeout within watchAfter ends the wait first. The
// timer is kept in rtTimer, under abortMu, for routeFired, ended and
// stopLateTimers, before it can fire (time.AfterFunc's return orders
// nothing before a fire); none is armed once the stream ended or its
// timers stopped. It returns the timer, nil when none.
func (s *stream) armRoute(timeout time.Duration) *time.Timer {
	_, watch := s.w.(goneWatcher)
	var t *time.Timer
	due := timeout
	switch {
	case watch && timeout > watchAfter:
		t, due = time.AfterFunc(notYet, s.routeFired), watchAfter
	case timeout > 0:
		t = time.AfterFunc(notYet, s.routeTimedOut)
	case watch:
		t, due = time.AfterFunc(notYet, s.watchStart), watchAfter
	default:
		return nil
	}
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	if s.rtStopped || s.done {
		t.Stop()
		return nil
	}
	s.rtTimer = t
	t.Reset(due)
	return t
}

// watchStart is watchClient for a timer of a route without a timeout.
func (s *stream) watchStart() {
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	s.watchClient()
}

// ended marks the stream's end for abortWrites. Over HTTP/2 it clears a
// deadline abortWrites set: x/net arms one on its connection's goroutine,
// after the stream may have closed, and would then reset the ended stream
// a second later. Over HTTP/1.1 the deadline stays for the response's last
// flush (h1Conn.serveOne's w.finish: a 504's bytes, a chunked body's end),
// which a client that stopped reading would block too; serveOne clears it
// after that flush.
func (s *stream) ended() {
	s.abortMu.Lock()
	s.done = true
	set := s.deadline
	if s.rtTimer != nil {
		// A fire that ran as serve stopped its timers may have re-armed
		// it (routeFired), holding the stream until the route timeout.
		s.rtTimer.Stop()
	}
	s.abortMu.Unlock()
	if set && s.in.ProtoMajor == 2 {
		_ = http.NewResponseController(s.w).SetWriteDeadline(time.Time{})
	}
}

// timers arms the route timeout, the max stream duration and the stream
// idle timeout; each cancels the stream with its cause and bounds its
// writes (abortWrites). The stream idle timeout is counted when it fires
// (downstream_rq_idle_timeout, as Envoy counts it), whether or not the
// response began: a stream blocked writing to a client that gives no
// window (the upstream still sending, so the flush timeout does not
// apply) is reset with nothing else to count it, as the loops reset one
// past its stallDeadline.
//
// The route timeout (a grpc-timeout's too) runs from the request's end,
// as Envoy's router arms its response timeout in
// Router::Filter::onRequestComplete (source/common/router/router.cc),
// called once the downstream request is whole: its headers with
// end_stream, its last DATA or its trailers. A request without a body,
// or whose body has all arrived already (an HTTP/1.1 body in the read
// buffer, h1Body.Received), has it armed here; one whose body is still
// coming has it armed by requestComplete, and the stream idle timeout
// bounds it meanwhile: a stalled upload ends at the idle timeout, 408
// stream timeout (SI), as Envoy's ActiveStream::onIdleTimeout answers
// it before a response. The max stream duration runs from the request's
// start, as Envoy's connection manager arms it on the new stream.
func (m *HCM) timers(s *stream) []*time.Timer {
	var ts []*time.Timer
	rt := s.rt
	timeout := s.routeTimeout()
	in := s.in
	whole := in.Body == nil || in.Body == http.NoBody || in.ContentLength == 0 || s.arrival != nil && s.arrival.Received()
	_, watch := s.w.(goneWatcher)
	s.abortMu.Lock()
	s.complete = s.complete || whole
	whole = s.complete
	s.rtWait = (timeout > 0 || watch) && !whole
	s.abortMu.Unlock()
	if whole {
		if t := s.armRoute(timeout); t != nil {
			ts = append(ts, t)
		}
	}
	msd := rt.MaxStreamDuration
	if msd == 0 {
		msd = m.maxStreamDuration
	}
	if msd > 0 {
		ts = append(ts, time.AfterFunc(msd, func() { s.cancel(errDuration); s.abortBody(); s.abortWrites() }))
	}
	idle := m.streamIdle
	if rt.HasIdleTimeout {
		idle = rt.IdleTimeout
	}
	if idle > 0 && timeout > 0 && idle >= timeout && whole {
		// The route timeout ends the stream first: no idle timer, and no
		// clock reads on every body read and write (the common case:
		// 15 s route timeout, 5 min idle timeout, a request without a
		// body). Not while the body is coming: the route timeout has not
		// started.
		idle = 0
	}
	if idle > 0 {
		s.idleArmed = true
		s.touch()
		var t *time.Timer
		var check func()
		check = func() {
			quiet := time.Duration(time.Now().UnixNano() - s.activity.Load())
			if quiet >= idle {
				// Writes bounded first: once cancelled, its body's read
				// ended (abortBody), the stream may end before
				// abortWrites looks, its idle timeout then uncounted.
				counted := s.abortWrites()
				s.cancel(errIdleTimeout)
				s.abortBody()
				if counted {
					m.stats.rqIdleTimeout.Inc()
				}
				return
			}
			t.Reset(idle - quiet)
		}
		t = time.AfterFunc(idle, check)
		ts = append(ts, t)
	}
	return ts
}

// abortBody ends the wait for the request's body when a timeout ends
// the stream before the body's end (a stalled upload at the stream idle
// timeout, the max stream duration, the route timeout of a request
// queued for a connection: the timers that can fire then call it).
// Else the transport writing the body upstream waits on for the
// client's next bytes (net/http's Transport returns from RoundTrip only
// once its body writer has), and the stream, its 408 unsent, lasted as
// long as the client held it. Over HTTP/1.1 the connection's reads fail
// from now (it closes after the local reply: the body did not arrive);
// over HTTP/2 the stream's body is closed.
func (s *stream) abortBody() {
	s.abortMu.Lock()
	whole := s.complete || s.done
	s.abortMu.Unlock()
	if whole {
		return
	}
	if s.in.ProtoMajor == 1 {
		_ = s.conn.SetReadDeadline(aLongTimeAgo)
		return
	}
	_ = s.in.Body.Close()
}

// timedOut reports whether one of the stream's timeouts ended it.
func (s *stream) timedOut() bool {
	if s.ctx == nil {
		return false
	}
	switch context.Cause(s.ctx) {
	case errIdleTimeout, errRouteTimeout, errDuration:
		return true
	}
	return false
}

// routeTimeout is the stream's route timeout: the route's, or its
// grpc-timeout's; 0 is none.
func (s *stream) routeTimeout() time.Duration {
	rt := s.rt
	if !rt.UseGRPCTimeout {
		return rt.Timeout
	}
	if d, ok := parseGRPCTimeout(s.in.Header.Get("Grpc-Timeout")); ok {
		d -= rt.GRPCTimeoutOffset
		if rt.GRPCTimeoutHeaderMax > 0 && d > rt.GRPCTimeoutHeaderMax {
			d = rt.GRPCTimeoutHeaderMax
		}
		return max(d, time.Millisecond)
	}
	// Without a header (or max_stream_duration.grpc_timeout_header_max
	// set without one): Envoy falls back to the route timeout.
	return rt.Timeout
}

// routeTimedOut ends the stream at its route timeout.
func (s *stream) routeTimedOut() { s.cancel(errRouteTimeout); s.abortWrites() }

// requestComplete notes that the request has been received whole (its
// body read to its end), on whichever goroutine read it: the route
// timeout that waited for it starts, as does the per-try timeout of the
// attempt in flight (perTryTimer), as Envoy's Filter::onRequestComplete
// arms both (UpstreamRequest::setupPerTryTimeout for an upstream
// request whose onPoolReady came before the request's end,
// source/common/router/upstream_request.cc).
func (s *stream) requestComplete() {
	s.abortMu.Lock()
	if s.complete || s.rtStopped {
		s.complete = true
		s.abortMu.Unlock()
		return
	}
	s.complete = true
	wait := s.rtWait
	if s.tryTimer != nil {
		s.tryTimer.Reset(s.rt.Retry.PerTryTimeout)
		s.tryTimer = nil
	}
	s.abortMu.Unlock()
	if wait {
		s.armRoute(s.routeTimeout()) // checks rtStopped again: the stream may end meanwhile
	}
}

// stopLateTimers stops, once the stream is done, the route timer
// requestComplete armed, and keeps it from arming one after.
func (s *stream) stopLateTimers() {
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	s.rtStopped = true
	if s.rtTimer != nil {
		s.rtTimer.Stop()
	}
}

// queuedTimeout bounds an attempt's wait for one of its cluster's
// HTTP/1.1 max_connections while the request's body is still coming with
// the route timeout from the request's start, as before the route
// timeout waited for the body's end: this path reads the body only once
// the attempt has its connection, so the body's end, which would start
// the route timeout, is not seen while the request is queued (Envoy's
// codec reads it into the router's buffer meanwhile: see Known
// differences in docs/proxy.md). It returns what stops that bound once
// the wait is over.
func (s *stream) queuedTimeout(c *cluster.Cluster, http1 bool) (stop func()) {
	if !http1 || !c.Queues() {
		return noStop
	}
	s.abortMu.Lock()
	wait := s.rtWait && !s.complete && s.routeTimeout() > 0 // rtWait also waits a route without a timeout's client-gone watch
	s.abortMu.Unlock()
	if !wait {
		return noStop
	}
	t := time.AfterFunc(s.routeTimeout()-time.Since(s.start), func() { s.routeTimedOut(); s.abortBody() })
	return func() { t.Stop() }
}

// noStop is queuedTimeout's stop when there is nothing to stop.
func noStop() {}

// notYet is a timer's duration until it is reset: it does not fire.
const notYet = time.Duration(1<<63 - 1)

// perTryTimer starts an attempt's per-try timeout of d, calling f when
// it passes: now when the request is complete, as Envoy's
// UpstreamRequest::onPoolReady sets it up when the downstream request
// already ended; else at the request's end (requestComplete).
func (s *stream) perTryTimer(d time.Duration, f func()) *time.Timer {
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	if s.complete {
		return time.AfterFunc(d, f)
	}
	t := time.AfterFunc(notYet, f)
	s.tryTimer = t
	return t
}

// tryEnded stops an attempt's per-try timer t: requestComplete no
// longer arms it.
func (s *stream) tryEnded(t *time.Timer) {
	t.Stop()
	s.abortMu.Lock()
	if s.tryTimer == t {
		s.tryTimer = nil
	}
	s.abortMu.Unlock()
}

// parseGRPCTimeout parses a grpc-timeout header value such as "100m".
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
