package httpconn

import (
	"net/http"
	"strconv"
	"time"

	"github.com/weftmesh/weft/internal/proxy/route"
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
// timeout. s.watched and s.routeTimer are read under s.abortMu: each
// fire runs on a goroutine of its own, and timers sets routeTimer after
// time.AfterFunc returned, which orders nothing before the fire.
func (s *stream) routeFired() {
	s.abortMu.Lock()
	if !s.watched {
		s.watched = true
		if !s.done {
			s.watchClient()
			s.routeTimer.Reset(s.timeout - watchAfter)
		}
		s.abortMu.Unlock()
		return
	}
	s.abortMu.Unlock()
	s.cancel(errRouteTimeout)
	s.abortWrites()
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
	if s.routeTimer != nil {
		// A fire that ran as serve stopped its timers may have re-armed
		// it (routeFired), holding the stream until the route timeout.
		s.routeTimer.Stop()
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
func (m *HCM) timers(s *stream) []*time.Timer {
	var ts []*time.Timer
	rt := s.rt
	timeout := rt.Timeout
	if rt.UseGRPCTimeout {
		if d, ok := parseGRPCTimeout(s.in.Header.Get("Grpc-Timeout")); ok {
			d -= rt.GRPCTimeoutOffset
			if rt.GRPCTimeoutHeaderMax > 0 && d > rt.GRPCTimeoutHeaderMax {
				d = rt.GRPCTimeoutHeaderMax
			}
			timeout = max(d, time.Millisecond)
		} else if rt.GRPCTimeoutHeaderMax > 0 || rt.Timeout == route.DefaultTimeout {
			// max_stream_duration.grpc_timeout_header_max set without a
			// header: Envoy falls back to the route timeout.
			timeout = rt.Timeout
		}
	}
	_, watch := s.w.(goneWatcher)
	switch {
	case watch && timeout > watchAfter:
		// The route timer starts the watch for a client gone first
		// (h1gone.go), then runs on to the timeout (routeFired).
		s.timeout = timeout
		s.abortMu.Lock() // routeFired reads routeTimer under it
		s.routeTimer = time.AfterFunc(watchAfter, s.routeFired)
		s.abortMu.Unlock()
		ts = append(ts, s.routeTimer)
	case timeout > 0:
		// Over HTTP/1.1 a timeout within watchAfter ends the wait first.
		ts = append(ts, time.AfterFunc(timeout, func() { s.cancel(errRouteTimeout); s.abortWrites() }))
	case watch:
		ts = append(ts, time.AfterFunc(watchAfter, s.watchStart))
	}
	msd := rt.MaxStreamDuration
	if msd == 0 {
		msd = m.maxStreamDuration
	}
	if msd > 0 {
		ts = append(ts, time.AfterFunc(msd, func() { s.cancel(errDuration); s.abortWrites() }))
	}
	idle := m.streamIdle
	if rt.HasIdleTimeout {
		idle = rt.IdleTimeout
	}
	if idle > 0 && timeout > 0 && idle >= timeout {
		// The route timeout ends the stream first: no idle timer, and no
		// clock reads on every body read and write (the common case:
		// 15 s route timeout, 5 min idle timeout).
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
				s.cancel(errIdleTimeout)
				if s.abortWrites() {
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
