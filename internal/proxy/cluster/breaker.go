package cluster

import (
	"context"
	"sync"
)

// Slot is what TryAcquire got.
type Slot uint8

const (
	// Acquired: the request holds its slots; Release gives them back.
	Acquired Slot = iota
	// Overflow: max_requests is reached; counted as Acquire counts it.
	// The request was refused with the host picked for it (Envoy's
	// attachStreamToClient), which the access log names.
	Overflow
	// PendingOverflow: max_connections is reached with the pending queue
	// full; counted as Acquire counts it. The request has no upstream
	// host (ErrPendingOverflow).
	PendingOverflow
	// WouldQueue: max_connections is reached and the pending queue has
	// room: Acquire would queue the request. Nothing is counted, so that
	// the caller's Acquire (the goroutine path, handed the request)
	// counts the queueing once.
	WouldQueue
)

// Acquire reserves a request slot under the circuit breakers for a
// request to h; release returns it. HTTP/1.1 requests also need a
// connection slot and may wait in the pending queue until ctx ends. An
// overflow of max_requests counts in h's rq_error, as Envoy's pool
// refuses the stream with the host it picked (attachStreamToClient) and
// its router counts that 503 in the host's rq_error (chargeUpstreamCode);
// one of max_pending_requests has no host (ConnPoolImplBase::newStream):
// ErrPendingOverflow, whose request logs no upstream host. TryAcquire is
// the same rule without the wait.
func (c *Cluster) Acquire(ctx context.Context, h *Host, http1 bool) (release func(), err error) {
	if !c.acquireRequest(h) {
		return nil, ErrOverflow
	}
	if !http1 || c.gate == nil {
		return c.releaseRq, nil
	}
	if err := c.gate.acquire(ctx, c); err != nil {
		c.releaseRequest()
		return nil, err
	}
	return c.releaseRqCx, nil
}

// TryAcquire is Acquire for a caller that must not block (the event
// loops): the slots at once, an overflow, or WouldQueue where Acquire
// would wait for one of max_connections. A queued request is served
// first: TryAcquire gets a connection slot only when none waits, as a
// release hands its slot to the oldest waiter. Acquired slots are given
// back with ReleaseRequest and, when it took one (http1 and Queues),
// ReleaseConnection, once each; the wide-open cluster (no gate) costs two
// atomic adds each way.
func (c *Cluster) TryAcquire(h *Host, http1 bool) Slot {
	if !c.acquireRequest(h) {
		return Overflow
	}
	if !http1 || c.gate == nil {
		return Acquired
	}
	s := c.gate.try(c)
	if s != Acquired {
		c.releaseRequest()
	}
	return s
}

// AcquireRequest reserves a request slot (max_requests) alone: a retry's
// attempt on the event loops, whose request keeps the connection slot
// its first attempt took, and an HTTP/2 stream there that does not wait
// for one of max_connections (docs/proxy.md, Known differences). An
// overflow is counted as Acquire counts it. ReleaseRequest gives it back.
func (c *Cluster) AcquireRequest(h *Host) bool { return c.acquireRequest(h) }

// ReleaseRequest gives back a slot of AcquireRequest.
func (c *Cluster) ReleaseRequest() { c.releaseRequest() }

// ReleaseConnection gives back a connection slot (max_connections) of
// TryAcquire.
func (c *Cluster) ReleaseConnection() { c.gate.release() }

// acquireRequest takes one of max_requests, or counts its overflow.
func (c *Cluster) acquireRequest(h *Host) bool {
	if n := c.rqActive.Add(1); n > int64(c.cb.maxRequests) {
		c.rqActive.Add(-1)
		c.Stats.RqPendingOverflow.Inc()
		if h != nil {
			h.rqError.Add(1)
		}
		return false
	}
	c.Stats.RqActive.Inc()
	return true
}

func (c *Cluster) releaseRequest() {
	c.rqActive.Add(-1)
	c.Stats.RqActive.Dec()
}

func (c *Cluster) releaseRequestConnection() {
	c.gate.release()
	c.releaseRequest()
}

// Queues reports whether Acquire may wait for an HTTP/1.1 request's
// connection (max_connections set: the gate's pending queue).
func (c *Cluster) Queues() bool { return c.gate != nil }

// AcquireRetry reserves a retry under max_retries.
func (c *Cluster) AcquireRetry() (release func(), ok bool) {
	if n := c.retries.Add(1); n > int64(c.cb.maxRetries) {
		c.retries.Add(-1)
		c.Stats.RqRetryOverflow.Inc()
		return nil, false
	}
	return func() { c.retries.Add(-1) }, true
}

// gate limits concurrent HTTP/1.1 exchanges to max_connections, queueing
// up to max_pending_requests more, as Envoy's HTTP/1 pool does. While
// any waits, active is maxActive: a release hands its slot to the oldest
// waiter, so that a newcomer never passes the queue.
type gate struct {
	mu         sync.Mutex
	active     int             // protected by mu
	waiters    []chan struct{} // FIFO; protected by mu
	maxActive  int
	maxPending int
}

func (g *gate) pendingFull() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiters) >= g.maxPending
}

// tryLocked is the gate's rule, with g.mu held: a slot (Acquired), the
// queue full (PendingOverflow: upstream_cx_overflow and
// upstream_rq_pending_overflow counted), or room in the queue
// (WouldQueue, counted by the caller that queues).
func (g *gate) tryLocked(c *Cluster) Slot {
	if g.active < g.maxActive {
		g.active++
		return Acquired
	}
	if len(g.waiters) >= g.maxPending {
		c.Stats.CxOverflow.Inc()
		c.Stats.RqPendingOverflow.Inc()
		return PendingOverflow
	}
	return WouldQueue
}

// try is tryLocked without a wait.
func (g *gate) try(c *Cluster) Slot {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tryLocked(c)
}

func (g *gate) acquire(ctx context.Context, c *Cluster) error {
	g.mu.Lock()
	switch g.tryLocked(c) {
	case Acquired:
		g.mu.Unlock()
		return nil
	case PendingOverflow:
		g.mu.Unlock()
		return ErrPendingOverflow
	}
	ch := make(chan struct{})
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
	c.Stats.CxOverflow.Inc()
	c.Stats.RqPendingTo.Inc()
	c.Stats.RqPendingActive.Inc()
	defer c.Stats.RqPendingActive.Dec()
	select {
	case <-ch: // release handed its slot over
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		for i, w := range g.waiters {
			if w == ch {
				g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
				g.mu.Unlock()
				return ctx.Err()
			}
		}
		g.mu.Unlock()
		// The slot was handed over just as ctx ended: give it back.
		g.release()
		return ctx.Err()
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiters) > 0 {
		ch := g.waiters[0]
		g.waiters = g.waiters[1:]
		close(ch) // the slot passes to the waiter; active is unchanged
		return
	}
	g.active--
}

// Thresholds returns the default-priority circuit breaker limits.
func (c *Cluster) Thresholds() (maxConnections, maxPending, maxRequests, maxRetries uint32) {
	return c.cb.maxConnections, c.cb.maxPending, c.cb.maxRequests, c.cb.maxRetries
}
