package evloop

import (
	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/bodychain"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// Retries on the loops, by the route's policy as weft's goroutine path
// applies it (internal/proxy/httpconn, roundTrip): the same conditions
// (proxyroute.RetryPolicy's), the cluster's retry budget and stats and
// another host through Target.Upstream, Envoy's jittered back-off waited
// on the loop's timers (the connection waits in its heap entry; the loop
// serves the others meanwhile), and the per-try timeout.

// staticRetry is the prototype's policy (static Routes, no Router): a
// failure before any response byte is retried at once, twice.
var staticRetry = &proxyroute.RetryPolicy{On: proxyroute.OnReset | proxyroute.OnConnectFailure, NumRetries: maxRetries}

// statusRetries are the conditions retried on a response's status (or
// its grpc-status header).
const statusRetries = proxyroute.On5xx | proxyroute.OnGatewayError | proxyroute.OnRetriable4xx | proxyroute.OnRetriableStatusCodes |
	grpcRetries

// grpcRetries are the conditions retried on a response's grpc-status
// header (App Mesh's default HTTP retry policy has "unavailable").
const grpcRetries = proxyroute.OnGRPCCancelled | proxyroute.OnGRPCDeadlineExceeded | proxyroute.OnGRPCInternal |
	proxyroute.OnGRPCResourceExhausted | proxyroute.OnGRPCUnavailable

// retryState is the retry side of a client's request in flight.
type retryState struct {
	policy   *proxyroute.RetryPolicy // nil: not retried (a stale pooled connection is still replaced once)
	upstream Upstream                // nil: the same pool again, no budget
	tried    [4]any                  // the tags of the hosts tried (previous_hosts)
	triedN   int
	// release gives back the retry's reservation of one of the cluster's
	// max_retries (reserve): held through the back-off and the retried
	// attempt until the next retry decision (retryTake) or the response's
	// start (start), as Envoy's RetryStateImpl holds retries() from one
	// shouldRetry to the next or to its end (Filter::onUpstreamHeaders,
	// onUpstream1xxHeaders reset the retry state; decodeData once the body
	// outgrew its buffer: bodyRead); the request's end too (endRetries).
	release func()
	// limited: the request is under the cluster's circuit breakers
	// (Target.Held); held: the slots it holds now on upstream.
	limited  bool
	held     Slots
	waiting  bool // between attempts, until at: the back-off
	bodyHeld bool // the body's reading stopped for the back-off (holdBody)
	at       int64
	replay   []byte          // borrowed: the request while waiting
	kept     bodychain.Chain // borrowed: its first bytes, before replay (up.kept)
	pool     *clusterPool    // the last attempt's pool
	tag      any             // the last attempt's host tag
	tryStart int64           // when the attempt in flight began (per-try timeout)
	// started: the response started, as Envoy's router says once it took
	// a 1xx it does not drop unseen (proxyroute.Special1xx, loop.interim;
	// Filter::onUpstream1xxHeaders) or a final head it does not retry
	// (loop.responseCounted; Filter::onUpstreamHeaders), as on the
	// goroutine path (httpconn's attempt): the request's retries are over
	// (neither a retriable status nor a reset after a 1xx is retried), its
	// per-try timeout no longer counts (UpstreamRequest::onPerTryTimeout
	// ignores it: the response runs on to the route timeout), and a reset
	// after a 1xx is reported as after the response started
	// (proxyroute.ResetDetails).
	started bool
	// body is how much of the request's body was read while a retry may
	// come (bodyRead); outgrew once it passed proxyroute.MaxRetryBuffer:
	// no retry follows, and none is flagged URX (proxyroute.DecideRetry).
	body    int64
	outgrew bool
}

// bodyRead tallies n more bytes of the request's body read from its
// client (down.received) while a retry may come: the policy set and
// the response not started, as Envoy's Filter::decodeData buffers the
// body while its retry state lasts. Once the body outgrows
// proxyroute.MaxRetryBuffer no retry follows (outgrew), and the cluster
// counts retry_or_shadow_abandoned once when the policy has retries, as
// decodeData counts it when it drops its retry state; the reservation of
// max_retries of a retry under way is given back then.
func (rs *retryState) bodyRead(n int64) {
	if rs.policy == nil || rs.started || rs.outgrew {
		return
	}
	rs.body += n
	if !proxyroute.OutgrewRetryBuffer(rs.body) {
		return
	}
	rs.outgrew = true
	// The retry state is gone, and the reservation of a retry under way
	// with it (RetryStateImpl's destructor).
	rs.unreserve()
	if rs.upstream != nil && rs.policy.NumRetries > 0 {
		rs.upstream.RetryAbandoned()
	}
}

// perTry reports whether the attempt in flight has a per-try timeout
// running: the policy sets one and the response has not started.
func (rs *retryState) perTry() bool {
	return rs.policy != nil && rs.policy.PerTryTimeout > 0 && !rs.started
}

// startRetries sets up the retries of a request dispatched to t.
func (l *loop) startRetries(d *down, t *Target, router bool) {
	rs := &d.rs
	l.endRetries(d)
	*rs = retryState{policy: staticRetry, tryStart: l.now}
	if router {
		rs.policy, rs.upstream, rs.tag = t.Retry, t.Upstream, t.Tag
		rs.tried[0], rs.triedN = t.Tag, 1
		rs.limited, rs.held = t.Held != 0, t.Held
	}
	d.retries, d.staleRetry = 0, false
}

// endRetries releases what the request's retries hold; the request is
// answered, or its connection gone.
func (l *loop) endRetries(d *down) {
	rs := &d.rs
	rs.unreserve()
	if rs.held != 0 {
		rs.upstream.Release(rs.held)
		rs.held = 0
	}
	if rs.replay != nil {
		l.putBuf(rs.replay)
		rs.replay = nil
	}
	rs.kept.Release(l.chunks())
	rs.waiting = false
}

// mayRetry reports whether the request in flight may still be retried
// once response bytes came: on its response's status, or on a reset
// before its final head ended (a 1xx the router drops, or part of a
// head, then a close or a malformed head), as Envoy's router retries a
// reset until the response started. The request's bytes are kept until
// then.
func (d *down) mayRetry() bool {
	p := d.rs.policy
	return p != nil && !d.rs.started && p.On&(statusRetries|proxyroute.OnReset) != 0 && d.retries < p.NumRetries
}

// backoffAt is when retry n of a request under p may start: the loop's
// time plus the policy's jittered back-off, which may be any Duration up
// to MaxInt64 (farTimeout).
func (l *loop) backoffAt(p *proxyroute.RetryPolicy, n int) int64 {
	return l.now + min(int64(p.Backoff(n)), farTimeout)
}

// retry decides whether the failed attempt u (its outcome retriable by
// the policy) is retried, as the goroutine path does: a retry left, the
// request at hand to send again (all that was read of it, its body
// arriving or not: up.replayable, or up.unsent when its connect failed),
// the cluster's budget (retryTake). When it is, the Observer
// hears of u's outcome (code, timedOut: as Observer.Done), u is closed
// and the request waits for its back-off; a body still arriving waits
// in the client's input meanwhile (process, holdBody).
func (l *loop) retry(d *down, u *up, retriable bool, code int, timedOut bool) bool {
	if !retriable || !l.retryTake(d, u.replayable && u.out != nil || u.unsent()) {
		return false
	}
	rs := &d.rs
	rs.replay, u.out, u.outOff, u.replayable = u.out, nil, 0, false
	rs.kept, u.kept, u.keptOff = u.kept, bodychain.Chain{}, 0
	rs.pool = u.pool
	l.observeRetried(u, code, timedOut)
	u.d, d.u = nil, nil
	l.closeUp(u)
	if l.retryWait(d) {
		l.retryNow(d)
	}
	return true
}

// retryTake decides whether the request on d, its attempt failed for an
// outcome the policy retries, is retried, by proxyroute.DecideRetry as
// the goroutine path's roundTrip does: its body not outgrown (else
// nothing is flagged), a retry left (else the request is flagged URX and
// the budget told, RetryEnd), the whole request at hand to send again
// (whole), a retry the cluster's budget lets (its max_retries; else
// flagged UO). When it is, the retry counts in d.retries and the
// attempt's request slot is given back. Whatever it decides, the
// previous retry's reservation is given back first, as Envoy's
// RetryStateImpl::shouldRetry does (resetRetry) before it looks at
// num_retries and the cluster's max_retries: a retry of a retry takes
// the one its previous retry held.
func (l *loop) retryTake(d *down, whole bool) bool {
	rs := &d.rs
	rs.unreserve()
	p := rs.policy
	if p == nil || rs.started {
		return false
	}
	switch proxyroute.DecideRetry(d.retries, p.NumRetries, rs.outgrew, whole, rs.reserve) {
	case proxyroute.RetrySpent:
		if rs.upstream != nil {
			rs.upstream.RetryEnd(true)
		}
		d.logFlags(accesslog.UpstreamRetryLimitExceeded, "")
		return false
	case proxyroute.RetryNoBudget:
		d.logFlags(accesslog.UpstreamOverflow, "") // the budget is spent (counted as an overflow), as Envoy flags RetryStatus::NoOverflow
		return false
	case proxyroute.RetryBodyGone:
		return false
	}
	d.retries++
	rs.attemptEnded()
	return true
}

// retryWait starts the back-off of a request retryTake retried, its
// attempt ended: it waits on d's timer (expire calls retryNow), or it
// reports that the back-off is over already (a jittered back-off may be
// 0), when the caller starts the next attempt (retryNow).
func (l *loop) retryWait(d *down) bool {
	rs := &d.rs
	rs.waiting = true
	rs.at = l.backoffAt(rs.policy, d.retries)
	if rs.at <= l.now {
		return true
	}
	l.arm(d)
	return false
}

// retryNow starts the next attempts of a request whose back-off ended,
// one after the other while each fails at once (retryAttempt) and is
// retried with no back-off to wait: a loop, not a recursion, so that the
// stack does not grow with max_retries.
func (l *loop) retryNow(d *down) {
	for l.retryAttempt(d) {
	}
}

// retryAttempt starts the next attempt of a request whose back-off
// ended: on a host the cluster's load balancer picks (avoiding those
// tried when the policy says so), else the last attempt's pool. It
// returns true when the attempt's connect failed at once and was retried
// with a back-off already over (connectFailedNow, retryWait): the caller
// starts the next one.
func (l *loop) retryAttempt(d *down) bool {
	rs := &d.rs
	rs.waiting = false
	pool, tag := rs.pool, rs.tag
	if rs.upstream != nil {
		var avoid func(any) bool
		if rs.policy.PreviousHosts {
			avoid = rs.triedBefore
		}
		host, t, ok := rs.upstream.Pick(avoid, rs.policy.HostSelectionAttempts)
		if !ok {
			// Charged as the cluster's 503, as Envoy's doRetry charges
			// it (sendNoHealthyUpstreamResponse).
			d.logFlags(accesslog.NoHealthyUpstream, "no_healthy_upstream")
			l.abortReply(d, pool, 503, "no healthy upstream", false)
			return false
		}
		next := l.hostPool(pool.def.name, host)
		l.poolTLS(next, pool.tls) // the cluster's TLS and connect timeout, as the first attempt's pool had them
		next.connect, next.tag = pool.connect, t
		pool, tag = next, t
		rs.tag = t
		d.logAttempt(host)
		if rs.triedN < len(rs.tried) {
			rs.tried[rs.triedN] = t
		}
		rs.triedN++
		if rs.limited {
			if !rs.upstream.Acquire(t) {
				// As the goroutine path's Acquire refuses a retry's
				// attempt: 503 UO, counted as dropped, not retried.
				d.logFlags(accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}")
				l.dropReply(d, pool, "upstream connect error or disconnect/reset before headers. reset reason: overflow", false)
				return false
			}
			rs.held |= SlotRequest
		}
	}
	pool.st.rqTotal.Inc()
	if st := d.ustream(); st != nil && st.toH2 {
		return l.h2uOpen(d, pool, pool.def.name, tag)
	}
	u, err := l.getUp(pool)
	if err != nil {
		// The request stays in rs.replay for the next attempt.
		if l.connectFailedNow(d, pool, pool.def.name, tag, true) {
			return l.retryWait(d)
		}
		f := proxyroute.ConnectFailed(err, false) // an immediate failure
		d.logConnectFailure(f, false)
		l.abortReply(d, pool, 503, f.Body(), false)
		return false
	}
	l.putBuf(u.out)
	// A body still arriving follows what was kept as it comes (process,
	// sendUp; flushUp resumes the client held meanwhile), as Envoy's
	// doRetry sends a retry its buffered body and then the rest.
	// Kept again while a retry may still come (dispatch).
	u.out, u.outOff, u.replayable, u.streamed = rs.replay, 0, d.state != dsBody || d.mayRetry(), d.state == dsBody
	u.kept, u.keptOff, rs.kept = rs.kept, 0, bodychain.Chain{} // sent first (flushUp)
	rs.replay = nil
	u.d, d.u = d, u
	l.observeStart(u, pool.def.name, tag)
	u.started, rs.tryStart = l.now, l.now
	if !u.connecting {
		l.flushUp(u)
	}
	return false
}

// triedBefore is the previous_hosts predicate over the hosts tried.
func (rs *retryState) triedBefore(tag any) bool {
	for _, t := range rs.tried[:min(rs.triedN, len(rs.tried))] {
		if t == tag {
			return true
		}
	}
	return false
}

// perTryTimeout ends an attempt that outlived the policy's per-try
// timeout: retried when the policy retries timeouts, else answered 504
// (a response already under way is cut, as the goroutine path's
// attempt context cuts its body).
func (l *loop) perTryTimeout(u *up) {
	d := u.d
	l.observeDone(u, 0, true)
	if u.status != 0 {
		l.cutResponse(u, accesslog.UpstreamRequestTimeout, "")
		return
	}
	if up := d.rs.upstream; up != nil {
		up.PerTryTimeout()
	}
	if l.retry(d, u, d.rs.policy.RetriableTimeout(), 0, true) {
		return
	}
	u.d, d.u = nil, nil
	l.closeUp(u)
	d.logFlags(accesslog.UpstreamRequestTimeout, "upstream_per_try_timeout")
	l.abortReply(d, u.pool, 504, "upstream request timeout", false)
}

// responseRetry is told of a final response on u (its status, and its
// head as parsed in rs): true when the response is dropped for a retry.
// Otherwise it counts a retried request's success.
func (l *loop) responseRetry(d *down, u *up, head []byte, rs *response) bool {
	p := d.rs.policy
	if p == nil || d.rs.started {
		return false
	}
	status := rs.status
	gs := u.rh.GRPCStatus // read for a gRPC request (readHead)
	if p.On&grpcRetries != 0 && !u.rh.GRPC {
		gs = grpcStatus(head, rs)
	}
	if !p.RetriableStatus(status, gs) {
		if d.retries > 0 && d.rs.upstream != nil {
			d.rs.upstream.RetryEnd(false)
		}
		return false
	}
	return l.retry(d, u, true, status, false)
}

// grpcStatus is the response's grpc-status as proxyroute.GRPCStatus
// reads it (its first header's value), proxyroute.NoGRPCStatus without
// one.
func grpcStatus(head []byte, rs *response) int {
	for i := range rs.lines {
		h := &rs.lines[i]
		if equalFold(h.name.of(head), "grpc-status") {
			return proxyroute.GRPCStatus(h.value.of(head))
		}
	}
	return proxyroute.NoGRPCStatus
}

// attemptEnded gives back the request slot of an attempt that is
// retried: the next one takes its own (retryNow), as the goroutine
// path's attempts each Acquire theirs. The connection slot stays with
// the request.
func (rs *retryState) attemptEnded() {
	if rs.held&SlotRequest != 0 {
		rs.upstream.Release(SlotRequest)
		rs.held &^= SlotRequest
	}
}

// reserve takes a reservation for the next attempt from the cluster's
// retry budget (retryTake gave back the previous one). It returns false
// when the budget is spent (the budget counts that as an overflow).
func (rs *retryState) reserve() bool {
	if rs.upstream != nil {
		rel := rs.upstream.Retry()
		if rel == nil {
			return false
		}
		rs.release = rel
	}
	return true
}

// unreserve gives back the retry's reservation, if one is held.
func (rs *retryState) unreserve() {
	if rs.release != nil {
		rs.release()
		rs.release = nil
	}
}

// start marks the response started (started): no retry follows, and the
// retry's reservation is given back, as Envoy's Filter::onUpstreamHeaders
// and onUpstream1xxHeaders end the retry state (after shouldRetryHeaders
// gave it back) as they pass the head on.
func (rs *retryState) start() {
	rs.started = true
	rs.unreserve()
}

// unsent reports whether none of the request went upstream on u, its
// connect (or TLS handshake) not yet done: all the loops read of the
// request is in u.kept and u.out, its body too while it arrives (sendUp
// keeps it there meanwhile), so that a failed connect can be retried whether or
// not the body ended, as Envoy's router and the goroutine path retry it
// (Filter::doRetry sends the retry what it buffered, then the rest).
// Bounded as every path bounds what it keeps for a retry
// (proxyroute.MaxRetryBuffer), though a client is held after one read
// of its body while the connect is under way (sendUp).
func (u *up) unsent() bool {
	return u.connecting && u.out != nil && u.outOff == 0 && u.keptOff == 0 && (u.d == nil || !u.d.rs.outgrew)
}

// holdBody stops reading the body of d's request while it has no
// attempt upstream (a retry's back-off, retryWait): what came stays in
// d.in (an HTTP/2 stream's DATA there too, its window not credited,
// h2Credit) for the next attempt, whose flushUp resumes the client once
// the kept request went out, as sendUp holds a client its upstream does
// not keep up with (to an HTTP/2 cluster, h2uOpen's h1uCredit).
func (l *loop) holdBody(d *down) {
	d.rs.bodyHeld = true
	if !d.pausedIn {
		d.pausedIn = true
		l.watchDown(d)
	}
}
