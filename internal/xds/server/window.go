package server

import (
	"sync"
	"time"
)

// window bounds the pushes a write sends out at once: at most max streams
// hold a slot, each from the push a new snapshot caused to the moment the
// stream is idle again (every response it was sent answered), its NACK
// included, or the stream closes, or the slot is older than timeout. A
// stream that owes a write's push when every slot is held waits in a
// queue, first come first served, and is pushed to when a slot is freed,
// on the goroutine that freed it.
//
// Why: every push is answered. With 10,000 proxies a write's fan-out
// sends 10,000 responses in a few hundred milliseconds and the answers
// (an ACK, and from grpc-go's default client a bandwidth-delay PING too)
// come back as 10,000 runnable goroutines; an API call that lands among
// them waits in Go's run queue behind them: p50 52-79 ms, p99 97-129 ms
// in round 14's -steps runs with the default grpc-go client. With a
// window the answers arrive as fast as slots are freed, never more than
// max at once, and the call waits behind at most those: p50 2-3 ms, p99
// 4-17 ms, with 256 or 1,024 slots (docs/bench/xds.md, round 14). A
// window that is full also has a cost: the pushes past it wait for ACKs
// instead of going out at once, 4-12 ms at p99 for 1,000 proxies with
// 256 slots; hence the default of 1,024 (DefaultMaxPushesInFlight).
//
// Responses that answer a new subscription are not held back, nor is a
// snapshot that closes the stream: only a push to an idle stream that a
// new snapshot caused takes a slot, whether the fan-out or an ACK finds
// it owed, and a stream that holds one keeps it while it sends the rest
// of that snapshot's types.
//
// A slot's lifetime is bounded by timeout so that clients that never
// answer (stalled, or slow to read) cannot hold the window shut: their
// slots go back to the queue, they stay awaiting as before.
type window struct {
	max     int
	timeout time.Duration
	metrics *metrics
	now     func() time.Time // time.Now; tests replace it

	mu       sync.Mutex
	inFlight int    // slots held
	seq      uint64 // the last slot or place in the queue given
	// held lists the slots in the order they were given, for timeout:
	// an entry whose stream no longer holds that slot (slot != seq) is
	// skipped. waiting is the queue, read from head; an entry whose
	// stream left it (queued != seq) is skipped. Both are trimmed from
	// their heads as they are read.
	held    []windowEntry
	heldAt  int
	waiting []windowEntry
	waitAt  int
	waiters int         // live entries in waiting
	timer   *time.Timer // fires at the oldest slot's timeout; nil until first needed
	armed   bool
}

type windowEntry struct {
	s   *stream
	seq uint64
	at  time.Time
}

// newWindow returns a window of max slots; nil (no window: every push
// goes out at once) when max is negative.
func newWindow(max int, timeout time.Duration, m *metrics) *window {
	if max < 0 {
		return nil
	}
	return &window{max: max, timeout: timeout, metrics: m, now: time.Now}
}

// take gives s a slot if it holds none and one is free with nobody
// waiting, and reports whether s holds one. Otherwise s is queued (once)
// and will be pushed to when a slot comes to it (grant). Called holding
// s's turn.
func (w *window) take(s *stream) bool {
	if w == nil {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.slot != 0 {
		return true
	}
	if s.left {
		return false
	}
	now := w.now()
	if w.inFlight < w.max && w.waiters == 0 {
		w.give(s, now)
		return true
	}
	// Slots past their timeout are freed by fire, which gives them in
	// the queue's order: a slot is only ever given to a stream that is
	// not in the queue (here, none waiting) or that leaves it (grant).
	if s.queued == 0 {
		w.seq++
		s.queued = w.seq
		w.waiting = append(w.waiting, windowEntry{s: s, seq: w.seq})
		w.waiters++
		w.metrics.pushesQueued.Inc()
		w.metrics.pushesWaiting.Set(float64(w.waiters))
	}
	w.arm(now)
	return false
}

// release frees s's slot, if it holds one, and returns the stream the
// slot went to (nil when none waits): the caller pushes to it (run).
func (w *window) release(s *stream) *stream {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.slot == 0 {
		return nil
	}
	s.slot = 0
	w.inFlight--
	next := w.grant(w.now())
	w.metrics.pushesInFlight.Set(float64(w.inFlight))
	return next
}

// leave takes a closing stream out of the window: its slot is freed, its
// place in the queue given up; the stream the slot went to, if any, is
// returned for the caller to push to.
func (w *window) leave(s *stream) *stream {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	s.left = true
	if s.queued != 0 {
		s.queued = 0
		w.waiters--
		w.metrics.pushesWaiting.Set(float64(w.waiters))
	}
	w.mu.Unlock()
	return w.release(s)
}

// give hands s a slot. Called with mu held.
func (w *window) give(s *stream, now time.Time) {
	w.seq++
	s.slot = w.seq
	w.inFlight++
	if len(w.held)-w.heldAt >= 2*w.inFlight+64 {
		w.prune()
	}
	w.held = append(w.held, windowEntry{s: s, seq: w.seq, at: now})
	w.metrics.pushesInFlight.Set(float64(w.inFlight))
}

// prune drops the entries of slots no longer held, keeping the others in
// order. give calls it once the list is twice the slots held (and more
// than a few): fewer than half the entries walked survive, so the walks
// come to at most twice the pushes, whatever their order. Only
// expire trims the list otherwise, and it runs on the timer, which only
// runs while streams wait: in a window that never fills, the list grew
// by an entry a push, holding every stream pushed to, closed or not.
func (w *window) prune() {
	live := w.held[:0]
	for _, e := range w.held[w.heldAt:] {
		if e.s.slot == e.seq {
			live = append(live, e)
		}
	}
	clear(w.held[len(live):])
	w.held, w.heldAt = live, 0
}

// grant gives a free slot to the first stream waiting, and returns it;
// nil when no slot is free or nobody waits. Called with mu held.
func (w *window) grant(now time.Time) *stream {
	if w.inFlight >= w.max {
		return nil
	}
	for w.waitAt < len(w.waiting) {
		e := w.waiting[w.waitAt]
		w.waiting[w.waitAt] = windowEntry{}
		w.waitAt++
		if e.s.queued != e.seq {
			continue // left the queue (closed)
		}
		e.s.queued = 0
		w.waiters--
		w.metrics.pushesWaiting.Set(float64(w.waiters))
		w.give(e.s, now)
		w.compact()
		return e.s
	}
	w.compact()
	return nil
}

// expire frees the slots older than timeout. Called with mu held.
func (w *window) expire(now time.Time) {
	for w.heldAt < len(w.held) {
		e := w.held[w.heldAt]
		if e.s.slot == e.seq {
			if now.Sub(e.at) < w.timeout {
				break
			}
			e.s.slot = 0
			w.inFlight--
			w.metrics.pushTimeouts.Inc()
		}
		w.held[w.heldAt] = windowEntry{}
		w.heldAt++
	}
	w.metrics.pushesInFlight.Set(float64(w.inFlight))
	w.compact()
}

// compact drops the read heads of held and waiting once they are half of
// their slices, so that neither grows without bound. Called with mu held.
func (w *window) compact() {
	if w.heldAt > 0 && w.heldAt >= len(w.held)/2 {
		w.held = w.held[:copy(w.held, w.held[w.heldAt:])]
		w.heldAt = 0
	}
	if w.waitAt > 0 && w.waitAt >= len(w.waiting)/2 {
		w.waiting = w.waiting[:copy(w.waiting, w.waiting[w.waitAt:])]
		w.waitAt = 0
	}
}

// arm sets the timer to the oldest slot's timeout while streams wait.
// Called with mu held.
func (w *window) arm(now time.Time) {
	if w.armed || w.waiters == 0 {
		return
	}
	d := w.timeout
	for i := w.heldAt; i < len(w.held); i++ {
		if e := w.held[i]; e.s.slot == e.seq {
			d = e.at.Add(w.timeout).Sub(now)
			break
		}
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire) // its goroutine ends when fire returns
		return
	}
	w.timer.Reset(d)
}

// fire frees the slots past their timeout and pushes to the streams that
// get them; it arms the timer again while streams still wait.
func (w *window) fire() {
	w.mu.Lock()
	w.armed = false
	now := w.now()
	w.expire(now)
	var next []*stream
	for s := w.grant(now); s != nil; s = w.grant(now) {
		next = append(next, s)
	}
	w.arm(now)
	w.mu.Unlock()
	for _, s := range next {
		w.run(s)
	}
}

// stop stops the timer; a server that stops serving calls it.
func (w *window) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.armed = true // never again
}

// run pushes to s, which was just given a slot, and to each stream the
// slot passes on to when s needed it for nothing (its client holds what
// it would be sent, or it closed).
func (w *window) run(s *stream) {
	for s != nil {
		s = s.pushGranted(w)
	}
}
