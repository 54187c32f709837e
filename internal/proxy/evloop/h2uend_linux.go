package evloop

// How an upstream stream ends other than with its response: taken off
// its connection (h2uDone), cancelled for the client, reset by the
// upstream, its connection failed, a timeout (h2uDeadline, h2uExpire);
// before the response head the client gets a local reply, after it its
// stream is reset. Retries are h2uretry_linux.go's.

import (
	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2uDone takes the upstream stream off its connection and the client's
// stream.
func (l *loop) h2uDone(s *h2ustream) {
	if s.done {
		return
	}
	s.done = true
	l.ustreams.ended(s) // recycled at the iteration's end (h2pool_linux.go)
	c := s.c
	delete(c.streams, s.id)
	if len(c.streams) == 0 {
		c.idleSince = l.now
	}
	s.st.us = nil
	if s.pending != nil {
		l.putBuf(s.pending) // whole: its capacity kept (pendOff)
		s.pending, s.pendOff = nil, 0
	}
	if s.st.replayCut {
		s.st.replay.Release(l.chunks()) // what it did not send of the chain: no attempt follows (h2stream.kept)
	}
	l.h2UpMaybeClose(c)
}

// h2uCancel: the client's stream ended before the upstream's (a reset,
// the client gone, a timeout): RST_STREAM CANCEL upstream (h2Done's
// hook).
func (l *loop) h2uCancel(s *h2ustream) {
	l.observeDone(&s.x, -1, false)
	if !s.c.u.closed {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
	}
	l.h2uDone(s)
}

// h2uPeerReset: the upstream reset the stream (or refused it by GOAWAY).
// Before the response head the client gets 503, as the goroutine path
// answers; after it, its stream is reset with the upstream's code.
func (l *loop) h2uPeerReset(s *h2ustream, code http2.ErrCode) {
	if code != http2.ErrCodeRefusedStream {
		// Envoy's reset reason remote reset (its codec's own resets
		// included: ConnectionImpl::onStreamClose), which its HTTP/2 pool
		// counts; a refused stream it does not
		// (MultiplexedActiveClientBase::onStreamReset).
		s.x.pool.st.rqRxReset.Inc()
	}
	if s.gotHead {
		st := s.st
		d := st.sd
		cut := proxyroute.DetailsCutRemoteReset
		if code == http2.ErrCodeRefusedStream {
			cut = proxyroute.DetailsCutRemoteRefused
		}
		d.logFlags(accesslog.UpstreamRemoteReset, cut)
		l.logDone(d, s.x.status) // with the status its head went down with (logEnded knows no upstream stream's)
		l.observeDone(&s.x, 0, false)
		l.observeCut(&s.x, false)
		l.observeGRPCDone(&s.x, proxyroute.NoGRPCStatus) // the upstream broke the response (Envoy's chargeUpstreamAbort)
		l.h2uDone(s)
		if st.c == nil {
			l.closeDown(d) // the response cannot be completed
		} else if !st.gone {
			_ = st.c.fr.WriteRSTStream(st.id, code)
			st.reset = true
			l.h2EndStream(st)
		}
		return
	}
	if p := s.st.sd.rs.policy; p != nil && p.RetriableReset(false, code == http2.ErrCodeRefusedStream) && l.h2uRetry(s, 0, false, false) {
		return
	}
	why, reason := "remote reset", proxyroute.ResetRemoteReset
	if code == http2.ErrCodeRefusedStream {
		why, reason = "remote refused stream reset", proxyroute.ResetRemoteRefused
	}
	// Logged with Envoy's reset reason (Filter::onUpstreamReset), also
	// when the client's stream is refused rather than answered.
	s.st.sd.logFlags(accesslog.UpstreamRemoteReset, proxyroute.ResetDetails(reason, s.st.sd.rs.started))
	if code == http2.ErrCodeRefusedStream && s.st.c != nil {
		// Not processed upstream: the client may send it again (RFC 9113
		// 8.7), as a gRPC client does at once. Counted as the 503 Envoy
		// and the goroutine path answer it with (abortReply).
		st, pool := s.st, s.x.pool
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		if !st.gone {
			l.chargeAbort(st.sd, pool, 503)
			_ = st.c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
			st.reset = true
			l.h2EndStream(st)
		}
		return
	}
	l.h2uFail(s, 503, "upstream connect error or disconnect/reset before headers. reset reason: "+why)
}

// h2uConnFailed: the stream's connection closed or failed; connecting:
// before it was up, for f.
func (l *loop) h2uConnFailed(s *h2ustream, connecting bool, f proxyroute.ConnectFailure) {
	if s.gotHead {
		l.h2uResetBegun(s, accesslog.UpstreamConnectionTermination, proxyroute.DetailsCutConnectionTermination)
		return
	}
	if p := s.st.sd.rs.policy; p != nil && p.RetriableReset(connecting, false) && l.h2uRetry(s, 0, false, false) {
		return
	}
	if connecting {
		s.st.sd.logConnectFailure(f, s.st.sd.rs.started)
		l.h2uFail(s, 503, f.Body())
		return
	}
	s.st.sd.logFlags(accesslog.UpstreamConnectionTermination, proxyroute.ResetDetails(proxyroute.ResetConnectionTermination, s.st.sd.rs.started))
	l.h2uFail(s, 503, proxyroute.ResetBody("connection termination"))
}

// h2uConnProtocolError ends a stream of a connection failed for the
// upstream's protocol error (h2UpProtocolError): counted as a reset the
// proxy sent (upstream_rq_tx_reset), it is answered or retried as
// h2uProtocolError, or, its response begun, reset as h2uConnFailed
// resets one, flagged UPE.
func (l *loop) h2uConnProtocolError(s *h2ustream) {
	s.x.pool.st.rqTxReset.Inc()
	if s.gotHead {
		l.h2uResetBegun(s, accesslog.UpstreamProtocolError, proxyroute.DetailsCutProtocolError)
		return
	}
	l.h2uProtocolError(s)
}

// h2uResetBegun ends a stream whose response began when its connection
// closed or failed: flagged, logged with the status its head went down
// with and the reset's details (as h2uPeerReset), and the client's
// stream reset.
func (l *loop) h2uResetBegun(s *h2ustream, flag accesslog.Flags, details string) {
	st := s.st
	st.sd.logFlags(flag, details)
	l.logDone(st.sd, s.x.status)
	l.observeDone(&s.x, 0, false)
	l.observeCut(&s.x, false)
	l.observeGRPCDone(&s.x, proxyroute.NoGRPCStatus) // as in h2uPeerReset
	l.h2uDone(s)
	if !st.gone {
		l.h2uResetDown(st.sd)
	}
}

// h2uProtocolError ends an upstream stream whose response head is
// malformed, answered as Envoy answers its codec's protocol error
// (route.UpstreamProtocolError*), as the goroutine path does.
func (l *loop) h2uProtocolError(s *h2ustream) {
	// A reset (protocol error), retried as Envoy's router retries one.
	if p := s.st.sd.rs.policy; p != nil && p.RetriableReset(false, false) && l.h2uRetry(s, 0, true, false) {
		return
	}
	s.st.sd.logFlags(accesslog.UpstreamProtocolError, proxyroute.ResetDetails(proxyroute.UpstreamProtocolErrorReason, s.st.sd.rs.started))
	l.h2uFail(s, proxyroute.UpstreamProtocolErrorStatus, proxyroute.UpstreamProtocolErrorBody)
}

// h2uFail ends an upstream stream that has no response head with a local
// reply to the client.
func (l *loop) h2uFail(s *h2ustream, status int, body string) {
	st, pool := s.st, s.x.pool
	l.observeDone(&s.x, 0, false)
	l.h2uDone(s)
	if st.gone || st.sd.closed {
		return
	}
	l.abortReply(st.sd, pool, status, body, false)
}

// h2uDeadline is the next timeout of a client stream served by an
// upstream stream: the connect timeout, the route timeout, the idle
// timeout of a request body the upstream's window holds back, and the
// retry policy's per-try timeout.
func (l *loop) h2uDeadline(d *down) int64 {
	s := d.ustream().us
	at := d.routeDeadline()
	if u := s.c.u; u.connecting {
		at = min(at, l.connectBy(u))
	}
	if s.blocked && d.idle > 0 {
		at = min(at, s.last+d.idle)
	}
	if d.rs.perTry() {
		at = min(at, d.tryDeadline())
	}
	return min(at, d.h1StallDeadline())
}

// h2uExpire enforces them.
func (l *loop) h2uExpire(d *down) {
	s := d.ustream().us
	c := s.c
	switch {
	case c.u.connecting && l.now >= l.connectBy(c.u):
		l.connectTimedOut(c.u)
		l.h2UpFailed(c)
	case d.idleFirst(l.now):
		// The stream made no progress (streamIdle's, for an upstream
		// stream).
		d.gen.st.rqIdleTimeout.Inc()
		d.logFlags(accesslog.StreamIdleTimeout, proxyroute.DetailsStreamIdleTimeout)
		status, _ := proxyroute.StreamTimeoutReply(!d.bodyIn, false)
		d.bodyIn = false
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		l.observeDone(&s.x, 0, false)
		if s.gotHead {
			l.logDone(d, s.x.status)
			l.h2uDone(s)
			l.h2uResetDown(d)
			return
		}
		l.h2uDone(s)
		l.localReply(d, status, "stream timeout", false)
	case l.now >= d.h1StallDeadline():
		// An HTTP/1.1 client that stopped reading the response (h1Stall's,
		// for an upstream stream).
		d.gen.st.rqIdleTimeout.Inc()
		d.logFlags(accesslog.StreamIdleTimeout, proxyroute.DetailsStreamIdleTimeout)
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		l.observeDone(&s.x, 0, false)
		l.logDone(d, s.x.status)
		l.h2uDone(s)
		l.h2uResetDown(d)
	case l.now >= d.rtAt():
		d.logFlags(accesslog.UpstreamRequestTimeout, proxyroute.DetailsRouteTimeout)
		s.x.pool.st.rqTimeout.Inc()
		l.observeDone(&s.x, 0, true)
		l.observeCut(&s.x, true) // one whose head went on (Observer.Cut)
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		if s.gotHead {
			// Logged with the status its head went down with, as Envoy
			// logs the response code it encoded (logEnded knows no
			// upstream stream's: an HTTP/2 client's would say 0).
			l.logDone(d, s.x.status)
			l.h2uDone(s)
			l.h2uResetDown(d)
			return
		}
		pool := s.x.pool
		l.h2uDone(s)
		l.abortReply(d, pool, 504, "upstream request timeout", false)
	case d.rs.perTry() && l.now >= d.tryDeadline():
		l.h2uPerTryTimeout(s)
	case s.blocked && d.idle > 0 && l.now-s.last >= d.idle:
		// The upstream keeps its window closed on the request body: the
		// stream idle timeout, as Envoy counts it.
		d.gen.st.rqIdleTimeout.Inc()
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		l.h2uResetDown(d)
	}
}
