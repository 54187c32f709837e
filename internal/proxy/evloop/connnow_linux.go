package evloop

import (
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// An attempt whose connect failed at once, in socket(2) or connect(2)
// itself, so that it never had a connection: no route to the network, a
// local address or port that cannot be had, no descriptor left. Envoy's
// ClientConnectionImpl reports such a failure on the dispatcher's next
// event, as a connection closed before it was up, which its pool reports
// as any failed connect (UpstreamRequest::onPoolFailure) and the router
// retries as one (Filter::onUpstreamReset, maybeRetryReset:
// RetryStateImpl::wouldRetryFromReset retries a local or a remote
// connection failure under connect-failure, with the back-off); the
// goroutine path's dialer returns it as any failed connect, which
// roundTrip retries. So do the loops, from where the attempt began
// (dispatch, h2uOpen, retryAttempt), through the retries of a connect
// that fails later (retryTake, retryWait, retryNow).

// connectFailedNow is told of an attempt of d's request on pool (to
// cluster's host tag) whose connect failed at once: the Observer hears
// of it (observeFailedNow), and the request is retried, as upFailed
// retries a connect that fails later, when the policy retries connect
// failures (connectRetriable) and retryTake lets it, whole saying
// whether the whole request is at hand to send again. True when it is
// retried: the caller then keeps the request for the next attempt and
// waits (retryWait); else it answers it.
func (l *loop) connectFailedNow(d *down, pool *clusterPool, cluster string, tag any, whole bool) bool {
	l.observeFailedNow(cluster, tag)
	if !l.connectRetriable(d) || !l.retryTake(d, whole) {
		return false
	}
	d.rs.pool = pool
	return true
}

// observeFailedNow tells the Observer of an attempt whose connect failed
// at once, its start and its failure (the host's rq_total and rq_error,
// outlier detection's gateway failure), as of an attempt whose connect
// fails later (observeStart, then upFailed's observeDone), and as the
// goroutine path counts every attempt.
func (l *loop) observeFailedNow(cluster string, tag any) {
	if o := l.srv.cfg.Observer; o != nil {
		o.Started(cluster, tag)
		o.Done(cluster, tag, 0, false)
	}
}

// connectRetriable reports whether d's retry policy retries a failed
// connect of the request's attempt (retryTake decides the rest).
func (l *loop) connectRetriable(d *down) bool {
	p := d.rs.policy
	return p != nil && !d.rs.started && p.RetriableReset(true, false)
}

// h1Retry is dispatch's for a request to an HTTP/1.1 cluster whose first
// attempt's connect failed at once (err) under a policy that retries
// connect failures: o is the request's head as it goes upstream (a
// buffer of its own), more whether a body follows it. As much of the
// body as came with the head and fits in o goes with it, as it goes in
// an attempt's first write (dispatch), and the request is retried from
// o, as upFailed retries one whose connect fails later (up.unsent):
// nothing went upstream, so a body still arriving is retried too, the
// rest of it sent on the next attempt as it comes (process holds it
// meanwhile). A body whose framing is broken where it came is not (the
// request is answered as one not retried, dispatchFailed, as when the
// policy or the budget says no).
func (l *loop) h1Retry(d *down, r *request, pool *clusterPool, t *Target, o []byte, more bool, err error) {
	var avail, fits []byte
	if more {
		avail = d.in[d.off:]
		fits = avail[:min(len(avail), max(0, cap(o)-len(o)))]
	}
	framed := true
	if more && d.chunked {
		cs := d.chunks // scanned on a copy, as bodyArrived scans it
		_, _, serr := cs.scan(fits)
		framed = serr == nil
	}
	if !l.connectFailedNow(d, pool, t.Cluster, t.Tag, framed) {
		l.putBuf(o)
		l.dispatchFailed(d, r, pool, err)
		return
	}
	d.state, d.bodyIn = dsWait, false // the request is whole: its response is awaited
	if more {
		data := d.chunks.data
		take, done, _ := d.bodyPart(fits) // scanned above: no error
		o = append(o, avail[:take]...)
		d.off += take
		d.received(take, data)
		if !done {
			d.state, d.bodyIn = dsBody, true // the rest follows (process)
		}
	}
	d.rs.replay = o
	if l.retryWait(d) {
		l.retryNow(d)
	}
}

// dispatchFailed answers a request whose first attempt's connect failed
// at once (err), not retried: 503 UF with the failure's reason, before
// any of its body was read (replyUnread).
func (l *loop) dispatchFailed(d *down, r *request, pool *clusterPool, err error) {
	f := proxyroute.ConnectFailed(err, false) // an immediate failure
	d.logConnectFailure(f, false)
	l.chargeAbort(d, pool, 503)
	l.replyUnread(d, r, 503, f.Body(), false)
}
