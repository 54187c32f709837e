package httpconn

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// roundTrip sends the stream's upstream request: it picks hosts, applies
// circuit breakers and per-try timeouts, and retries by the route's
// policy. It returns a response, or a *localError describing the local
// reply.
func (s *stream) roundTrip(req *http.Request) (*http.Response, error) {
	c := s.cl
	rp := s.rt.Retry
	ctx := req.Context()
	tr, http1 := c.Transport(s.in.ProtoMajor)
	var body *replayBody
	if rp != nil && rp.NumRetries > 0 && req.Body != nil && req.Body != http.NoBody {
		body = &replayBody{src: req.Body, abandoned: c.Stats.RetryAbandoned}
		// However the request ends, no attempt follows: the chunks kept
		// go back to their pool (but those an attempt still replays).
		defer body.answered()
	}
	var tried [4]*cluster.Host
	triedN := 0
	var avoid func(*cluster.Host) bool
	if rp != nil && rp.PreviousHosts {
		avoid = func(h *cluster.Host) bool {
			for _, t := range tried[:min(triedN, len(tried))] {
				if t == h {
					return true
				}
			}
			return false
		}
	}
	attempts := 1
	if rp != nil {
		attempts = rp.HostSelectionAttempts
	}
	grpc := route.IsGRPC(req.Header.Get("Content-Type"))
	// heldRetry gives back the retry's reservation of one of the
	// cluster's max_retries (nil when none is held): taken when a retry
	// is decided (takeRetry), held through its back-off and its attempt
	// until that attempt's outcome, a response head (a 1xx the router
	// does not drop too: attempt.got1xx) or its failure, as Envoy's
	// RetryStateImpl holds retries() from one shouldRetry to the next or
	// to its end (Filter::onUpstreamHeaders, onUpstream1xxHeaders and
	// cleanup end the retry state; decodeData once the body outgrew its
	// buffer: replayBody.retry); at the latest when the request ends.
	// Once (takeRetry's sync.OnceFunc): the transport's goroutines may
	// end it too.
	var heldRetry func()
	defer func() {
		if heldRetry != nil {
			heldRetry()
		}
	}()
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			// The stream ended (reset, timeout) before this attempt:
			// none is in flight.
			return nil, s.ctxError(ctx, false)
		}
		var h *cluster.Host
		var err error
		if c.Type == cluster.OriginalDst {
			// The upstream is where the client was going before the
			// iptables redirect.
			h = c.OriginalDstHost(s.conn.Dst.String())
		} else {
			h, err = c.Pick(avoid, attempts)
		}
		if err != nil {
			// Charged as the cluster's 503, as Envoy's router charges it
			// (Filter::sendNoHealthyUpstreamResponse, chargeUpstreamCode
			// without a host), at a retry's pick too (doRetry); as on the
			// loops (loopRouter.route, retryNow).
			c.Stats.Response(http.StatusServiceUnavailable)
			return nil, &localError{code: 503, flags: accesslog.NoHealthyUpstream, body: "no healthy upstream", details: "no_healthy_upstream"}
		}
		if triedN < len(tried) {
			tried[triedN] = h
		}
		triedN++
		s.host = h
		s.attempts = n + 1
		queued := s.queuedTimeout(c, http1)
		release, err := c.Acquire(ctx, h, http1)
		queued()
		if err != nil {
			if errors.Is(err, cluster.ErrOverflow) {
				if errors.Is(err, cluster.ErrPendingOverflow) {
					s.host = nil // refused before a host was attached: none logged
				}
				c.Stats.Response(http.StatusServiceUnavailable) // an overflow reset, not retried: charged as below
				c.Stats.Dropped()                               // and as dropped (onUpstreamReset)
				return nil, &localError{code: 503, flags: accesslog.UpstreamOverflow, details: "upstream_reset_before_response_started{overflow}",
					body: "upstream connect error or disconnect/reset before headers. reset reason: overflow"}
			}
			// Waiting for one of max_connections: a reply now is not
			// made at the head (replyCloses).
			s.queued = true
			return nil, s.pendingEnded(ctx)
		}
		actx, acancel := ctx, context.CancelFunc(func() {})
		at := &attempt{c: c, retry: heldRetry}
		if rp != nil && rp.PerTryTimeout > 0 {
			var cancel context.CancelCauseFunc
			actx, cancel = context.WithCancelCause(ctx)
			at.perTry = s.perTryTimer(rp.PerTryTimeout, func() {
				if at.phase.CompareAndSwap(tryRunning, tryTimedOut) {
					cancel(errPerTry)
				}
			})
			acancel = func() { s.tryEnded(at.perTry); cancel(context.Canceled) }
		}
		if http1 {
			actx = cluster.WithInterim(actx, at.got1xx)
			if ab := aheadOf(req); ab != nil {
				actx = cluster.WithConnecting(actx, ab.start)
			}
		} else {
			actx = httptrace.WithClientTrace(actx, at.trace())
		}
		areq := req.WithContext(cluster.WithHost(actx, h))
		areq.URL.Host = h.Addr
		if body != nil {
			if err := body.waitPrevious(ctx); err != nil {
				acancel()
				release()
				return nil, s.pendingEnded(ctx)
			}
			// Never nil: the first attempt, or a retry taken (takeRetry's
			// replayBody.decide), begun even once a read its given-up
			// attempt had under way took the body past the bound (over:
			// it is the last, with no GetBody).
			areq.Body = body.next()
			if !body.overflow() {
				areq.GetBody = body.again
			}
		}
		if s.upStart.IsZero() {
			s.upStart = time.Now()
		}
		t0 := time.Now()
		h.RequestStarted()
		c.Stats.RqTotal.Inc()
		resp, err := tr.RoundTrip(areq)
		if heldRetry != nil {
			// The attempt's outcome is known: Envoy's router asks its
			// retry state about it (shouldRetryHeaders, shouldRetryReset,
			// whose shouldRetry gives the reservation back first) or ends
			// it (cleanup).
			heldRetry()
			heldRetry = nil
		}
		if err == nil && !at.responded() {
			// The per-try timeout ended the attempt as its head came:
			// taken as ending it first (its context is gone, and the
			// body with it).
			_ = resp.Body.Close()
			resp, err = nil, errPerTry
		}
		if err != nil {
			le := s.downstreamError()
			if le == nil && s.down.Err() != nil && context.Cause(ctx) == context.Cause(s.down) {
				// The client left (or shutdown): the attempt ended from
				// its side, as Envoy's router resets its upstream request
				// with its callbacks removed: no outlier detection, no
				// retry.
				le = s.ctxError(ctx, false)
			}
			if le != nil {
				c.RequestReset(h, !http1)
				acancel()
				release()
				return nil, le
			}
			cluster.CountConnError(at.conn(), err)
			le, retriable, timedOut := s.classify(ctx, actx, err, rp, at.came())
			retriable = retriable && !at.came()
			c.RequestDone(h, 0, true, timedOut)
			acancel()
			release()
			if retriable {
				switch r, v := takeRetry(c, rp, n, body, s.rxBytes.Load()); v {
				case route.RetryGo:
					heldRetry = r
					c.Stats.RqRetry.Inc()
					if !backoff(ctx, rp, n+1) {
						return nil, s.ctxError(ctx, false) // no attempt in flight
					}
					continue
				case route.RetryNoBudget:
					le.flags |= accesslog.UpstreamOverflow // max_retries spent, as Envoy flags RetryStatus::NoOverflow
				case route.RetrySpent:
					c.Stats.RqRetryLimit.Inc()
					le.flags |= accesslog.UpstreamRetryLimitExceeded
				}
			}
			// The router gives up on the attempt: before the response
			// started its reply's status counts as the cluster's
			// response (Envoy's Filter::chargeUpstreamAbort), as on the
			// loops (abortReply); a retried attempt counts nothing. The
			// client's stream ending (gone, its idle or duration
			// timeout) is not the router's giving up: only the route
			// timeout of ctx is.
			if !at.came() && (ctx.Err() == nil || le.flags&accesslog.UpstreamRequestTimeout != 0) {
				c.Stats.Response(le.code)
			}
			return nil, le
		}
		s.svcTime = time.Since(t0)
		head := route.ResponseHead{Status: resp.StatusCode, GRPC: grpc, GRPCStatus: route.NoGRPCStatus}
		if grpc {
			head.GRPCStatus, head.End = route.GRPCStatus(resp.Header.Get("Grpc-Status")), cluster.HeadEnded(resp)
		}
		if rp != nil && !at.came() {
			gs := head.GRPCStatus
			if !grpc {
				gs = route.GRPCStatus(resp.Header.Get("Grpc-Status")) // the policy reads any response's
			}
			if rp.RetriableStatus(resp.StatusCode, gs) {
				switch r, v := takeRetry(c, rp, n, body, s.rxBytes.Load()); v {
				case route.RetryGo:
					head.Retried = true
					c.ResponseHead(h, head)
					_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					_ = resp.Body.Close()
					acancel()
					release()
					heldRetry = r
					c.Stats.RqRetry.Inc()
					c.Stats.RetryResponse(resp.StatusCode) // in retry.upstream_rq_*, as Envoy's onUpstreamHeaders charges it
					if !backoff(ctx, rp, n+1) {
						return nil, s.ctxError(ctx, false) // no attempt in flight
					}
					continue
				case route.RetryNoBudget:
					s.flags |= accesslog.UpstreamOverflow // max_retries spent, as above
				case route.RetrySpent:
					c.Stats.RqRetryLimit.Inc()
					s.flags |= accesslog.UpstreamRetryLimitExceeded
				case route.RetryBodyGone:
					// Not flagged nor counted: Envoy's Filter::decodeData
					// dropped its retry state when the body outgrew its
					// buffer, and onUpstreamHeaders flags nothing then.
				}
			} else if n > 0 {
				c.Stats.RqRetrySuccess.Inc()
			}
		}
		if body != nil {
			// No retry follows: the response goes to the client. What
			// was kept of the body is dropped and no more is kept, as
			// Envoy's Filter::onUpstreamHeaders ends its retry state
			// before it sends the head on (decodeData buffers no more).
			body.answered()
		}
		wait := c.ResponseHead(h, head)
		c.Stats.Response(resp.StatusCode) // the request's answer
		ub := &upstreamBody{ReadCloser: resp.Body, s: s, done: func() { acancel(); release() }, wire: at.conn(), h2: resp.ProtoMajor == 2, host: h}
		if wait {
			ub.grpc = &grpcEnd{host: h, resp: resp, head: head.GRPCStatus, trailers: !http1}
		}
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
			ub.upgraded = true
			// An upgraded connection: the forwarder writes to it as well.
			resp.Body = &upgradedBody{upstreamBody: ub, w: rwc}
			return resp, nil
		}
		resp.Body = ub
		return resp, nil
	}
}

// attempt is one attempt's state across the goroutines that see it (the
// per-try timer's, the transport's reading the response, roundTrip's).
// Its per-try timeout ends the attempt until the response started, as
// Envoy's upstream request ignores its per-try timeout once the router's
// downstream_response_started_ is set (UpstreamRequest::onPerTryTimeout;
// source/common/router/upstream_request.cc), so that a response head
// taken goes on to the route timeout however long its body takes. The
// router sets it when it takes a 1xx it does not drop unseen
// (route.Special1xx; Filter::onUpstream1xxHeaders in
// source/common/router/router.cc), and when it takes a final head it
// does not retry (Filter::onUpstreamHeaders), before it sends it on.
//
// Such a 1xx is also counted in the cluster's upstream_rq_<code>,
// upstream_rq_1xx and upstream_rq_completed (chargeUpstreamCode), and
// ends the request's retries, so that neither a retriable status nor a
// reset after it is retried (as on the loops: evloop's
// retryState.started), and a reset after it is reported as after the
// response started (route.ResetDetails). The transports read past the
// 1xx (the forwarder never sees it, dropped as Envoy drops it without
// proxy_100_continue). One per attempt: a transport may report a 1xx of
// an attempt given up on while the next one runs.
type attempt struct {
	c      *cluster.Cluster
	perTry *time.Timer // nil without a per-try timeout
	got    atomic.Bool // a 1xx came (came)
	phase  atomic.Int32
	wire   atomic.Pointer[net.Conn] // an HTTP/2 attempt's connection, as x/net tells it (trace)

	// retry gives back the reservation of max_retries of the retry this
	// attempt is (nil: none), once: a 1xx that starts the response ends
	// it (got1xx), as Envoy's Filter::onUpstream1xxHeaders ends the
	// retry state; else roundTrip, once the attempt's outcome is known.
	retry func()
}

// An attempt's phases: the per-try timeout runs, the response started
// (the timeout no longer counts), or the timeout ended the attempt. The
// first of the last two wins.
const (
	tryRunning int32 = iota
	tryStarted
	tryTimedOut
)

// responded takes the attempt's response head, a 1xx or the final one,
// as the response's start: its per-try timeout no longer counts (a final
// head retried ends the attempt at once, so it may as well be taken so
// before the retry is decided). False when that timeout ended the
// attempt first.
func (t *attempt) responded() bool {
	if t.perTry != nil {
		t.perTry.Stop()
	}
	return t.phase.CompareAndSwap(tryRunning, tryStarted) || t.phase.Load() == tryStarted
}

// got1xx takes a 1xx response head's status, on the goroutine reading
// the response.
func (t *attempt) got1xx(status int) {
	if !route.Special1xx(status) {
		return
	}
	t.c.Stats.Response(status)
	t.got.Store(true)
	t.responded() // false: the attempt is being ended anyway
	if t.retry != nil {
		t.retry()
	}
}

// trace is got1xx for an HTTP/2 upstream, whose client tells 1xx heads
// through httptrace.
func (t *attempt) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		Got1xxResponse: func(status int, _ textproto.MIMEHeader) error {
			t.got1xx(status)
			return nil // dropped: the transport reads on to the final response
		},
		// The connection the stream goes on, for counting its failure
		// (cluster.CountConnError).
		GotConn: func(ci httptrace.GotConnInfo) { t.wire.Store(&ci.Conn) },
	}
}

// conn is the attempt's HTTP/2 connection, nil before x/net took one (or
// for HTTP/1.1).
func (t *attempt) conn() net.Conn {
	if c := t.wire.Load(); c != nil {
		return *c
	}
	return nil
}

// came reports whether such a 1xx came.
func (t *attempt) came() bool { return t.got.Load() }

// backoff sleeps Envoy's jittered exponential retry back-off before retry
// n (1-based); false when ctx ended first.
func backoff(ctx context.Context, rp *route.RetryPolicy, n int) bool {
	t := time.NewTimer(rp.Backoff(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ctxError turns the stream context's end into a local reply. inFlight:
// an attempt was under way (sent, waiting for a connection, or its
// response's body coming), which a route timeout ends and counts in
// upstream_rq_timeout, as Envoy's Filter::onResponseTimeout counts each
// upstream request it resets; with none (a retry's back-off) nothing is
// counted, as there.
func (s *stream) ctxError(ctx context.Context, inFlight bool) *localError {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errRouteTimeout):
		if inFlight {
			s.cl.Stats.RqTimeout.Inc()
		}
		return &localError{code: 504, flags: accesslog.UpstreamRequestTimeout, body: "upstream request timeout", details: route.DetailsRouteTimeout}
	case errors.Is(cause, errIdleTimeout): // counted by its timer
		code, grpc := route.StreamTimeoutReply(s.requestReceived(), false)
		return &localError{code: code, grpc: grpc, flags: accesslog.StreamIdleTimeout, body: "stream timeout", details: route.DetailsStreamIdleTimeout}
	case errors.Is(cause, errDuration):
		// No response flag: Envoy's onStreamMaxDurationReached sets the
		// details alone (DT is a connection's max duration).
		code, grpc := route.StreamTimeoutReply(s.requestReceived(), true)
		return &localError{code: code, grpc: grpc, body: "downstream duration timeout", details: route.DetailsMaxDurationTimeout}
	}
	return &localError{code: 503, flags: accesslog.DownstreamConnectionTermination, body: "downstream disconnected", details: route.DetailsRemoteDisconnect}
}

// pendingEnded is the local reply of a request whose stream ended while
// its attempt waited before it was sent (for one of the cluster's
// HTTP/1.1 max_connections, or for the previous attempt's body to be let
// go): a route timeout ends it as one in flight, counted, and charged as
// the cluster's 504 before any response, as Envoy's onResponseTimeout
// charges an upstream request awaiting headers, one still pending in the
// connection pool too (chargeUpstreamAbort without a host).
func (s *stream) pendingEnded(ctx context.Context) *localError {
	le := s.ctxError(ctx, true)
	if le.flags&accesslog.UpstreamRequestTimeout != 0 {
		s.cl.Stats.Response(le.code)
	}
	return le
}

// classify maps an attempt's transport error to a local reply and
// whether the retry policy retries it; started: a 1xx came before it
// (route.ResetDetails).
func (s *stream) classify(ctx, actx context.Context, err error, rp *route.RetryPolicy, started bool) (le *localError, retriable, timedOut bool) {
	if ctx.Err() != nil {
		le = s.ctxError(ctx, true)
		return le, false, le.flags&accesslog.UpstreamRequestTimeout != 0
	}
	if errors.Is(context.Cause(actx), errPerTry) || errors.Is(err, errPerTry) {
		s.cl.Stats.RqPerTryTimeout.Inc()
		le = &localError{code: 504, flags: accesslog.UpstreamRequestTimeout, body: "upstream request timeout", details: "upstream_per_try_timeout"}
		return le, rp != nil && rp.RetriableTimeout(), true
	}
	var ce *cluster.ConnectError
	if errors.As(err, &ce) {
		f := route.ConnectFailed(ce.Err, ce.Timeout)
		le = &localError{code: 503, flags: accesslog.UpstreamConnectionFailure, details: f.Details(started),
			body: f.Body(), upstreamFailure: f.Transport}
		return le, rp != nil && rp.RetriableReset(true, false), false
	}
	if cluster.IsProtocolError(err) {
		// A response the codec cannot take resets the stream (protocol
		// error), which Envoy's router retries as any reset under
		// retry_on reset, 5xx or gateway-error (wouldRetryFromReset),
		// as the loops do (badGateway, h2uProtocolError). Over HTTP/2
		// it failed the connection, and each of its streams counts as a
		// reset the proxy sent (cluster/h2conn.go, which counts the
		// connection). An HTTP/1.1 connection, closed with its one
		// exchange, counts here, as Envoy's codec client counts it
		// (CodecClient::onData), and as the loops count it.
		if cluster.H2ProtocolReset(err) {
			s.cl.Stats.RqTxReset.Inc()
		} else {
			s.cl.Stats.CxProtocolError.Inc()
		}
		le = &localError{code: route.UpstreamProtocolErrorStatus, flags: accesslog.UpstreamProtocolError,
			details: route.ResetDetails(route.UpstreamProtocolErrorReason, started), body: route.UpstreamProtocolErrorBody}
		return le, rp != nil && rp.RetriableReset(false, false), false
	}
	refused := cluster.Refused(err) // by RST_STREAM or by GOAWAY
	if cluster.H2StreamReset(err) {
		// Envoy's HTTP/2 pool counts a stream reset so; a connection that
		// ends, or an HTTP/1.1 one, it does not.
		s.cl.Stats.RqRxReset.Inc()
	}
	le = &localError{code: 503, flags: accesslog.UpstreamConnectionTermination, details: route.ResetDetails(route.ResetConnectionTermination, started),
		body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination"}
	switch {
	case refused:
		// Envoy's reset reason remote refused stream reset (UR), as the
		// loops log it (h2uPeerReset).
		le.flags = accesslog.UpstreamRemoteReset
		le.details = route.ResetDetails(route.ResetRemoteRefused, started)
		le.body = "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
	case cluster.RemoteReset(err):
		// An HTTP/2 upstream's RST_STREAM: Envoy's reset reason remote
		// reset (UR), as the loops answer it (h2uPeerReset).
		le.flags = accesslog.UpstreamRemoteReset
		le.details = route.ResetDetails(route.ResetRemoteReset, started)
		le.body = "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
	}
	return le, rp != nil && rp.RetriableReset(false, refused), false
}

// newRequestID returns a random UUID v4 for x-request-id. Request IDs
// need to be unique, not secret: the runtime's per-thread ChaCha8 source
// is enough and makes no system call.
func newRequestID() string {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
