package evloop

// Retries of requests sent to HTTP/2 upstreams, by the route's policy as
// retry_linux.go applies it to HTTP/1.1 ones (the budget, the back-off
// on the loop's timers, another host by the cluster's load balancer,
// retryNow): a stream the upstream reset or refused (also by GOAWAY)
// before its response head, a connection that failed under it, or a
// response head whose status or grpc-status the policy retries. The
// request is sent again from what the client's stream kept: its decoded
// fields, its body up to proxyroute.MaxRetryBuffer and its trailers. A
// request still being received is retried when its connection failed
// to connect or after part of it went upstream: the next attempt sends
// what was kept, then the rest as it comes (h2uBody keeps what comes in
// the back-off), as Envoy's Filter::doRetry does; one with a longer body
// is not. The per-try timeout is the
// HTTP/1.1 attempts' too (h2uPerTryTimeout).

import (
	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2uRetry decides whether s's failed attempt is retried (the caller
// checked the policy retries its outcome): a retry left, the request
// kept (all that came of it, its body arriving or not: h2stream.kept),
// the cluster's budget. When it is, s ends (RST_STREAM CANCEL when still
// open upstream) and the request waits for its back-off.
func (l *loop) h2uRetry(s *h2ustream, code int, open, timedOut bool) bool {
	st := s.st
	d := st.sd
	if d.closed || st.gone || !l.retryTake(d, st.kept()) {
		return false
	}
	d.rs.pool = s.x.pool
	l.observeRetried(&s.x, code, timedOut)
	if open && !s.c.u.closed {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
	}
	l.h2uDone(s)
	if l.retryWait(d) {
		l.retryNow(d)
	}
	return true
}

// h2uPerTryTimeout ends an attempt that outlived the policy's per-try
// timeout, as perTryTimeout does for HTTP/1.1: retried when the policy
// retries timeouts, else answered 504 (a response under way is reset).
func (l *loop) h2uPerTryTimeout(s *h2ustream) {
	d := s.st.sd
	if s.gotHead {
		l.observeDone(&s.x, 0, true)
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		l.h2uDone(s)
		l.h2uResetDown(d)
		return
	}
	if up := d.rs.upstream; up != nil {
		up.PerTryTimeout()
	}
	if d.rs.policy.RetriableTimeout() && l.h2uRetry(s, 0, true, true) {
		return
	}
	l.observeDone(&s.x, 0, true)
	_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
	pool := s.x.pool
	l.h2uDone(s)
	d.logFlags(accesslog.UpstreamRequestTimeout, "upstream_per_try_timeout")
	l.abortReply(d, pool, 504, "upstream request timeout", false)
}

// h2uForget drops what a client stream holds for its upstream side: the
// upstream stream (reset with CANCEL when still open) and the request
// kept for retries (h2Done's hook).
func (l *loop) h2uForget(st *h2stream) {
	if s := st.us; s != nil {
		l.h2uCancel(s)
	}
	st.replay.Release(l.chunks())
	st.hf, st.reqTrailers = nil, nil
}

// h2GRPCStatus is a response HEADERS' (or trailers') grpc-status as
// proxyroute.GRPCStatus reads it, proxyroute.NoGRPCStatus without one: a
// trailers-only response carries it in its head.
func h2GRPCStatus(f *http2.MetaHeadersFrame) int {
	for _, hf := range f.RegularFields() {
		if hf.Name == "grpc-status" {
			return proxyroute.GRPCStatus(hf.Value)
		}
	}
	return proxyroute.NoGRPCStatus
}

// kept reports whether the request of st is kept to be sent again: its
// fields and all of its body that came, not cut (past
// proxyroute.MaxRetryBuffer, or once the response began). A body still
// arriving follows what was kept as it comes (h2uOpen, h2uBody), whether
// or not part of it went upstream, as Envoy's Filter::doRetry sends its
// buffered body and then the rest.
func (st *h2stream) kept() bool {
	return st.hf != nil && !st.replayCut
}

// waiting reports whether st's request, to an HTTP/2 cluster, is in a
// retry's back-off: what its client sends meanwhile is kept for the next
// attempt (h2uBody, h2uTrailers).
func (st *h2stream) waiting() bool {
	return st.toH2 && st.us == nil && st.sd.rs.waiting
}
