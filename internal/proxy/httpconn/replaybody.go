package httpconn

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/weftmesh/weft/internal/proxy/bodychain"
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// replayBody lets retries resend a request body: each attempt's
// transport reads it through a replayReader, which gives the bytes
// already kept from memory, then reads on from the source, keeping what
// it reads for the next attempt. It keeps at most route.MaxRetryBuffer
// (but for one read of an attempt given up with it under way, for the
// retry taken, which is then the last: took), and nothing once the
// response began (answered), as Envoy's router buffers a body for
// retries only while its retry state lasts (Filter::decodeData,
// Filter::onUpstreamHeaders).
//
// Two locks, so that no one waits on the client: readMu is held across
// the source's read, which lasts until the client sends more, and orders
// the attempts' reads of it (one transport at a time; a transport may
// still be in a read when it closes its body from another goroutine, as
// x/net's abortRequestBodyWrite does, or when its attempt was given up
// on); mu guards what is kept and is never held across that read, so
// roundTrip's answered and retry decisions, and a transport's Close,
// never wait for the client's next bytes.
type replayBody struct {
	src    io.ReadCloser
	readMu sync.Mutex // held across src.Read

	mu sync.Mutex // guards the fields below and the readers' pos and done
	// kept holds the body's bytes as read from src, in chunks of
	// keptChunks (a chain, not one slice grown as the body comes): from
	// its first byte until over, then from what the current attempt has
	// taken (nothing before it is kept).
	kept bodychain.Chain
	// over: no attempt follows the current one (while taken, the one
	// taken), so nothing is kept but what it has not yet taken: the body
	// outgrew route.MaxRetryBuffer, the response began (answered), or the
	// verdict retried nothing (decide).
	over bool
	// taken: a retry was taken (decide) and its attempt has not begun
	// (next); current is the attempt given up. What a read of it still
	// under way brings is kept for the retry, whatever the bound.
	taken   bool
	current *replayReader // the attempt reading now (waitPrevious, trim)
	// abandoned counts the body outgrowing route.MaxRetryBuffer while a
	// retry may come: the cluster's retry_or_shadow_abandoned, as Envoy's
	// Filter::decodeData counts it. Nil: not counted.
	abandoned *stats.Counter
	// retry gives back the reservation of max_retries of the retry last
	// taken (takeRetry; sync.OnceFunc's, so that roundTrip's own call
	// and this one are one): the body outgrowing the bound ends it
	// (countAbandoned), as Envoy's decodeData ends its retry state, and
	// the reservation with it (RetryStateImpl's destructor).
	retry func()
}

// keptChunks are the chunks replayBodies keep bodies in.
var keptChunks bodychain.SyncPool

// errAttemptOver is what the body's reader of an attempt that ended (its
// transport closed it, or roundTrip gave it up for a retry) answers to
// a further read.
var errAttemptOver = errors.New("the request body's attempt ended")

// errBodyNotKept is what a transport asking for the body again (GetBody)
// gets once the body is no longer kept.
var errBodyNotKept = errors.New("the request body is no longer kept for a retry")

func (b *replayBody) overflow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// waitPrevious waits until the previous attempt's transport has closed
// its body, as net/http asks of a body used again: its reads are over
// but for one that may still be under way, which readMu orders before
// the next attempt's and whose bytes are kept for it (replayReader.took).
func (b *replayBody) waitPrevious(ctx context.Context) error {
	b.mu.Lock()
	cur := b.current
	b.mu.Unlock()
	if cur == nil {
		return nil
	}
	select {
	case <-cur.closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next starts an attempt's reading of the body from its first byte; nil
// once the body is no longer kept (over) but for a retry taken, which
// begins (over: it is the last).
func (b *replayBody) next() *replayReader {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over && !b.taken {
		return nil
	}
	r := &replayReader{b: b, closed: make(chan struct{})}
	b.current, b.taken = r, false
	return r
}

// again is next for a transport's own retry (Request.GetBody).
func (b *replayBody) again() (io.ReadCloser, error) {
	if r := b.next(); r != nil {
		return r, nil
	}
	return nil, errBodyNotKept
}

// decide gives the verdict on retrying the current attempt, the n-th
// (0-based) under a policy of numRetries, by route.DecideRetry on the
// body's state at one instant: under mu, so that no read's bytes land
// between the verdict's facts (the body outgrown, num_retries, then the
// cluster's budget, which take reserves) and what the verdict does. Envoy's
// router is one thread: Filter::decodeData has dropped its retry state
// for a body past its buffer either before the retry is decided
// (onUpstreamHeaders or maybeRetryReset then see none: nothing flagged)
// or after (RetryStateImpl::shouldRetry decided first). A retry taken
// gives the current attempt up: its reader reads no more, and what a
// read of it still under way brings is kept for the next attempt. Any
// other verdict ends the keeping, as answered does: no attempt follows,
// and Envoy's router ends its retry state then (onUpstreamHeaders resets
// it before it sends the head on, onUpstreamAbort's cleanup), so a body
// outgrowing the bound afterwards is not counted either.
func (b *replayBody) decide(n, numRetries int, take func() bool) route.RetryVerdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := route.DecideRetry(n, numRetries, b.over, true, take)
	if v != route.RetryGo {
		b.over = true
		b.trim()
		return v
	}
	if b.current != nil {
		b.current.done = true
	}
	b.taken = true
	return v
}

// answered ends the keeping: the response began and no attempt follows
// (Envoy's Filter::onUpstreamHeaders ends its retry state, and
// decodeData buffers no more). What the current attempt has not yet
// taken of what was kept stays until it has; the rest of the body
// passes through, so a long stream under a retry policy holds none of
// it. It never waits for the client: a read of the source under way
// brings bytes that are passed on, not kept.
func (b *replayBody) answered() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.over, b.taken = true, false
	b.trim()
}

// trim drops, once over, what the current attempt has taken. Under mu.
func (b *replayBody) trim() {
	if cur := b.current; cur != nil {
		b.kept.Drop(&keptChunks, cur.pos)
	} else {
		b.kept.Release(&keptChunks)
	}
}

// takeRetry decides whether attempt n (0-based), which the policy
// would retry, is retried, by route.DecideRetry, taking one of the
// cluster's max_retries when it is (release returns it, once; with a
// copy of the body kept, the body outgrowing the bound returns it too:
// replayBody.retry, set as the verdict is taken). With a copy of
// the body kept (body), on the body's state at one instant
// (replayBody.decide); with none (num_retries 0), on the body read so far
// (read: the stream's count, as the loops' retryState.bodyRead tallies
// it), so that a body that outgrew the bound is not flagged URX: Envoy's
// retry state exists then too, and decodeData drops it.
func takeRetry(c *cluster.Cluster, rp *route.RetryPolicy, n int, body *replayBody, read int64) (release func(), v route.RetryVerdict) {
	take := func() bool {
		r, ok := c.AcquireRetry()
		if ok {
			release = sync.OnceFunc(r)
			if body != nil {
				body.retry = release // under body.mu: decide calls take
			}
		}
		return ok
	}
	if body != nil {
		v = body.decide(n, rp.NumRetries, take)
	} else {
		v = route.DecideRetry(n, rp.NumRetries, route.OutgrewRetryBuffer(read), true, take)
	}
	return release, v // nil but for RetryGo: take is asked last
}

// replayReader is one attempt's reading of a replayBody, on its
// transport's goroutines: one reads, another may close it.
type replayReader struct {
	b      *replayBody
	pos    int64 // how much of the body this attempt has taken; under b.mu
	done   bool  // closed, or given up for a retry: reads no more; under b.mu
	closed chan struct{}
	once   sync.Once
}

func (r *replayReader) Read(p []byte) (int, error) {
	if n, err := r.fromKept(p); n > 0 || err != nil {
		return n, err
	}
	b := r.b
	b.readMu.Lock()
	defer b.readMu.Unlock()
	// A previous attempt's read under way may have kept more meanwhile.
	if n, err := r.fromKept(p); n > 0 || err != nil {
		return n, err
	}
	n, err := b.src.Read(p)
	r.took(p[:n])
	return n, err
}

// fromKept copies to p what is kept past what r has taken: 0 and no
// error when r has taken it all (the source is read next);
// bodychain.ErrDropped for a reader behind what is kept (no transport
// reads on after its attempt was given up: done), never bytes of the
// wrong place.
func (r *replayReader) fromKept(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.done {
		return 0, errAttemptOver
	}
	if r.pos >= b.kept.End() {
		return 0, nil
	}
	n, err := b.kept.ReadAt(p, r.pos)
	if err != nil {
		return 0, err
	}
	r.pos += int64(n)
	if b.over {
		b.trim() // r is the current attempt: a done one reads no more
	}
	return n, nil
}

// took records what r read from the source, under readMu: r had taken
// all that was kept, so p continues the body at kept's end.
func (r *replayReader) took(p []byte) {
	if len(p) == 0 {
		return
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	r.pos += int64(len(p))
	switch {
	case r != b.current || b.taken:
		// Bytes an attempt still has to send: another attempt reads now
		// (its transport's retry, GetBody; or roundTrip's retry, r given
		// up with this read under way), or one was taken and begins next.
		// Kept for it, whatever the bound; when they take the body past
		// it, that attempt is the last (over), and the request counts
		// once in retry_or_shadow_abandoned: the body outgrew its buffer
		// while a retry could come, as Envoy's Filter::decodeData counts
		// it, and as the loops keep what an h2c client sends in a
		// back-off for the next attempt, then the last. (Envoy's
		// decodeData answers 507 instead when no attempt is in flight: see
		// Known differences.)
		b.kept.Append(&keptChunks, p)
		if !b.over && route.OutgrewRetryBuffer(b.kept.End()) {
			b.over = true
			b.countAbandoned()
		}
	case b.over:
		// Passed on, not kept: no attempt follows (the response began,
		// the verdict retried nothing, or the body outgrew the bound).
		b.kept.Drop(&keptChunks, r.pos)
	case route.OutgrewRetryBuffer(int64(b.kept.Len() + len(p))):
		// Of the current attempt, closed or not: no retry follows.
		b.over = true
		b.kept.Drop(&keptChunks, r.pos)
		b.countAbandoned()
	default:
		b.kept.Append(&keptChunks, p)
	}
}

// countAbandoned counts the request in retry_or_shadow_abandoned and
// gives back the reservation of a retry under way. Under mu, once: as
// the body is set over for it.
func (b *replayBody) countAbandoned() {
	if b.abandoned != nil {
		b.abandoned.Inc()
	}
	if b.retry != nil {
		b.retry()
		b.retry = nil
	}
}

func (r *replayReader) Close() error {
	r.b.mu.Lock()
	r.done = true
	r.b.mu.Unlock()
	r.once.Do(func() { close(r.closed) })
	return nil
}
