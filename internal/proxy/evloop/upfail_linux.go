package evloop

import (
	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/bodychain"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// An HTTP/1.1 upstream's failures: a connection that failed or closed
// (retried, redialled or answered 503), a response the codec cannot take
// (retried or answered as Envoy's protocol error); and the count of a
// request given up on, HTTP/2 upstreams' too (abortReply).

// upFailed handles an upstream that failed before or during its
// response: the request is retried on a new connection if its final
// response head did not come and the whole request is at hand, answered
// 503 if nothing went to the client yet, and cut otherwise.
func (l *loop) upFailed(u *up) {
	if u.h2 != nil {
		l.h2UpFailed(u.h2)
		return
	}
	d := u.d
	if d == nil {
		l.removeIdle(u)
		l.closeUp(u)
		return
	}
	if u.status == 0 && u.off < len(u.in) {
		// Part of a head came: Envoy's codec client hands the parser
		// the end of input (CodecClient::onEvent), which fails it
		// (HPE_INVALID_EOF_STATE), the upstream's protocol error.
		// Before a head's first byte the end is a termination.
		l.badGateway(u)
		return
	}
	l.observeDone(u, 0, false)
	switch {
	case !u.gotResp && u.reused && !d.staleRetry && u.replayable && !u.streamed:
		// A pooled connection found closed: replaced at once, as Go's
		// HTTP client does, not counted as a retry (a request whose body
		// came on after its head went out is retried by its policy).
		d.staleRetry = true
		if l.redial(u) {
			return
		}
	case u.status == 0:
		// No final head yet (a 1xx the router drops, or part of a head,
		// may have come): a reset before the response started, which
		// Envoy's router retries (maybeRetryReset), as the goroutine
		// path does.
		if p := d.rs.policy; p != nil && l.retry(d, u, p.RetriableReset(u.connecting, false), 0, false) {
			return
		}
	}
	if u.status == 0 {
		body := proxyroute.ResetBody("connection termination")
		if u.connecting {
			// The connect or its TLS handshake, as the goroutine path's
			// ConnectError.
			f := proxyroute.ConnectFailed(u.connErr, u.timedOut)
			d.logConnectFailure(f, d.rs.started)
			body = f.Body()
		} else {
			d.logFlags(accesslog.UpstreamConnectionTermination, proxyroute.ResetDetails(proxyroute.ResetConnectionTermination, d.rs.started))
		}
		u.d, d.u = nil, nil
		l.closeUp(u)
		// A body not all read closes the connection after the reply
		// unless it has arrived (localReply); one that has is skipped
		// (replyDone), as the goroutine path drains what the upstream
		// did not take.
		l.abortReply(d, u.pool, 503, body, false)
		return
	}
	// After the head: the codec's end of input in a body of known
	// length or chunked is its protocol error (route.DetailsCut*).
	l.h1ProtocolError(u)
}

// h1ProtocolError cuts a response whose head went on for the codec's
// protocol error after it (the connection's end in a body of known
// length or chunked, a malformed chunk, badGateway's), counting the
// connection in upstream_cx_protocol_error as badGateway does.
func (l *loop) h1ProtocolError(u *up) {
	u.pool.st.cxProtocolError.Inc()
	l.cutResponse(u, accesslog.UpstreamProtocolError, proxyroute.DetailsCutProtocolError)
}

// redial sends u's request again on a new connection of its pool, and
// closes u; false when no connection could be made.
func (l *loop) redial(u *up) bool {
	d := u.d
	nu, err := l.dial(u.pool)
	if err != nil {
		return false
	}
	nu.out = append(nu.out, u.out...)
	l.putBuf(u.out)
	u.out = nil
	nu.kept, u.kept, u.keptOff = u.kept, bodychain.Chain{}, 0
	nu.replayable, nu.d, d.u = true, d, nu
	l.observeStart(nu, u.cluster, u.tag)
	nu.started = l.now
	u.d = nil
	l.closeUp(u)
	if !nu.connecting {
		l.flushUp(nu)
	}
	return true
}

// badGateway answers an upstream that sent a malformed response head (or
// one over the limit, or cut by its connection's end) as Envoy answers
// its codec's protocol error (route.UpstreamProtocolError*), as the
// goroutine path does, or cuts the client's connection if a response
// already started. Either way the connection counts in
// upstream_cx_protocol_error, as Envoy's codec client counts a dispatch
// that fails (CodecClient::onData); it is closed, so it counts once.
func (l *loop) badGateway(u *up) {
	d := u.d
	if d == nil || u.status != 0 {
		l.h1ProtocolError(u)
		return
	}
	u.pool.st.cxProtocolError.Inc()
	// A reset (protocol error), retried as Envoy's router retries one.
	if p := d.rs.policy; p != nil && l.retry(d, u, p.RetriableReset(false, false), 0, false) {
		return
	}
	l.observeDone(u, 0, false)
	u.d, d.u = nil, nil
	l.closeUp(u)
	d.logFlags(accesslog.UpstreamProtocolError, proxyroute.ResetDetails(proxyroute.UpstreamProtocolErrorReason, d.rs.started))
	l.abortReply(d, u.pool, proxyroute.UpstreamProtocolErrorStatus, proxyroute.UpstreamProtocolErrorBody, false) // a body not all read: as in upFailed
}

// abortReply answers d's request with the local reply status and body
// when the router gives up on its attempt on pool, not retried: a
// connection failure or termination, a reset, a protocol error, an
// overflow, the route or per-try timeout. Before the response started
// (retryState.started: a 1xx went on) status is counted as the cluster's
// response, as Envoy's router charges it (Filter::chargeUpstreamAbort,
// chargeUpstreamCode: upstream_rq_<status>, its class,
// upstream_rq_completed), as the goroutine path does (roundTrip); after,
// nothing is. A timeout in a retry's back-off, with no attempt in
// flight, is a plain localReply, as Envoy's onResponseTimeout charges
// only the attempts it resets. The body of a reset says whether the
// request was retried (proxyroute.RetriedBody), as dropReply's does.
func (l *loop) abortReply(d *down, pool *clusterPool, status int, body string, closeAfter bool) {
	l.chargeAbort(d, pool, status)
	l.localReply(d, status, proxyroute.RetriedBody(body, d.retries+1), closeAfter)
}

// dropReply is abortReply for an attempt that overflowed the cluster's
// circuit breakers, never retried: its 503 counts as dropped too, as
// Envoy's router charges it (Filter::onUpstreamReset: chargeUpstreamAbort
// with dropped; the load report's total_dropped_requests).
func (l *loop) dropReply(d *down, pool *clusterPool, body string, closeAfter bool) {
	if !d.rs.started {
		l.charge(pool.def.name, pool.st, 503, true)
	}
	l.localReply(d, 503, proxyroute.RetriedBody(body, d.retries+1), closeAfter)
}

// chargeAbort is abortReply's count.
func (l *loop) chargeAbort(d *down, pool *clusterPool, status int) {
	if d.rs.started {
		return
	}
	l.charge(pool.def.name, pool.st, status, false)
}

// charge counts status as the cluster's response to a request the proxy
// answered itself, and dropped as Observer.Aborted says: through the
// Observer, else the status in the loops' own stats (Envoy shows no
// dropped count in /stats).
func (l *loop) charge(cluster string, st *clusterCounters, status int, dropped bool) {
	if o := l.srv.cfg.Observer; o != nil {
		o.Aborted(cluster, status, dropped)
	} else {
		st.response(status)
	}
}
