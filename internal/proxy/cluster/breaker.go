package cluster

import (
	"context"
	"sync"
)

// Acquire reserves a request slot under the circuit breakers for a
// request to h; release returns it. HTTP/1.1 requests also need a
// connection slot and may wait in the pending queue until ctx ends. An
// overflow of max_requests counts in h's rq_error, as Envoy's pool
// refuses the stream with the host it picked (attachStreamToClient) and
// its router counts that 503 in the host's rq_error (chargeUpstreamCode);
// one of max_pending_requests has no host (ConnPoolImplBase::newStream).
func (c *Cluster) Acquire(ctx context.Context, h *Host, http1 bool) (release func(), err error) {
	if n := c.rqActive.Add(1); n > int64(c.cb.maxRequests) {
		c.rqActive.Add(-1)
		c.Stats.RqPendingOverflow.Inc()
		if h != nil {
			h.rqError.Add(1)
		}
		return nil, ErrOverflow
	}
	c.Stats.RqActive.Inc()
	done := func() {
		c.rqActive.Add(-1)
		c.Stats.RqActive.Dec()
	}
	if !http1 || c.gate == nil {
		return done, nil
	}
	if err := c.gate.acquire(ctx, c); err != nil {
		done()
		return nil, err
	}
	return func() { c.gate.release(); done() }, nil
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
// up to max_pending_requests more, as Envoy's HTTP/1 pool does.
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

func (g *gate) acquire(ctx context.Context, c *Cluster) error {
	g.mu.Lock()
	if g.active < g.maxActive {
		g.active++
		g.mu.Unlock()
		return nil
	}
	c.Stats.CxOverflow.Inc()
	if len(g.waiters) >= g.maxPending {
		g.mu.Unlock()
		c.Stats.RqPendingOverflow.Inc()
		return ErrOverflow
	}
	ch := make(chan struct{})
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
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
