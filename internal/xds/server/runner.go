package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/follow"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// runner is the thin goroutine around the core: it follows the store
// (internal/store/follow), serves the streams' attach and detach requests,
// arms the leaf renewal timer on its clock, runs the core's parallel work
// on goroutines, and hands what the core produces to the hub. run's
// goroutine owns the core and every field below the channels.
type runner struct {
	st            store.Store
	loadDiscovery LoadDiscovery
	core          *machine
	hub           *hub
	log           *slog.Logger
	metrics       *metrics
	skipped       prometheus.Counter // Options.Skipped; nil: not counted
	clock         Clock

	attachCh chan attachReq          // written by stream goroutines; read by run
	detachCh chan translate.Identity // written by stream goroutines; read by run
	done     chan struct{}           // closed when run returns
	// applied is the store revision the proxies' snapshots reflect;
	// written by run, read by anyone.
	applied atomic.Int64

	renewC  <-chan time.Time // nil: no leaf to renew
	renewAt time.Time        // what renewC is armed for
}

type attachReq struct {
	id    translate.Identity
	reply chan error // buffered: run never waits on the requester
}

func newRunner(opts *Options, h *hub, m *metrics) *runner {
	clock := opts.Clock
	if clock == nil {
		clock = systemClock{}
	}
	c := newMachine(opts, m, rand.Reader)
	c.parallel, c.workers = parallel, workers
	h.fanout = parallel
	return &runner{
		st:            opts.Store,
		loadDiscovery: opts.LoadDiscovery,
		core:          c,
		hub:           h,
		log:           opts.Log,
		metrics:       m,
		skipped:       opts.Skipped,
		clock:         clock,
		attachCh:      make(chan attachReq),
		detachCh:      make(chan translate.Identity),
		done:          make(chan struct{}),
	}
}

// requestAttach is called by a stream goroutine; see hub.attach.
func (r *runner) requestAttach(ctx context.Context, id translate.Identity) error {
	req := attachReq{id: id, reply: make(chan error, 1)}
	select {
	case r.attachCh <- req:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-r.done:
		return status.Error(codes.Unavailable, "xDS server is shutting down")
	}
	// Once run has the request it counts the stream: wait for the answer
	// even if ctx ends, so that the count and the stream agree.
	select {
	case err := <-req.reply:
		return err
	case <-r.done:
		return status.Error(codes.Unavailable, "xDS server is shutting down")
	}
}

// requestDetach is called by a stream goroutine when an attached stream ends.
func (r *runner) requestDetach(id translate.Identity) {
	select {
	case r.detachCh <- id:
	case <-r.done:
	}
}

// skip logs and counts a stored record left out: by Cloud Map's load
// (readState, through report) or by the core (machine.Skipped). A Cloud
// Map record set aside while its namespace or service is missing is
// logged on its own and not counted: it decodes, and comes back with its
// parent (a parent that does not decode is counted itself).
func (r *runner) skip(key string, err error) {
	if errors.Is(err, discovery.ErrOrphaned) {
		r.log.Warn("setting aside record until its parent is back", "key", key, "error", err)
		return
	}
	if r.skipped != nil {
		r.skipped.Inc() // before the log line, which tests wait for
	}
	r.log.Error("skipping undecodable record", "key", key, "error", err)
}

// readState reads what the core loads from a store snapshot. It reports
// nothing itself: it returns the Cloud Map records it left out and the
// CA's decode error, for its caller to report once the read is the one
// kept (follow.Load reads again after a store error or a compacted
// revision, and each read finds them anew).
func readState(tx store.Tx, loadDiscovery LoadDiscovery) (s state, r readReport, err error) {
	// A store error fails the read, for follow.Load to read again; only a
	// state that does not decode is reported and left out.
	if s.ca, r.caErr, err = loadCA(tx); err != nil {
		return state{}, readReport{}, err
	}
	if s.appMesh, err = tx.List(appmesh.KeyPrefix, "", 0); err != nil {
		return state{}, readReport{}, err
	}
	if loadDiscovery != nil {
		// In the same snapshot as App Mesh, so that following the watch
		// from its revision misses nothing.
		skip := func(key string, err error) { r.skips = append(r.skips, skippedRecord{key, err}) }
		if s.disc, err = loadDiscovery(tx, skip); err != nil {
			return state{}, readReport{}, fmt.Errorf("load cloud map: %w", err)
		}
	}
	return s, r, nil
}

// readReport is what readState found wrong in what it read.
type readReport struct {
	caErr error           // the CA state did not decode: none is loaded
	skips []skippedRecord // Cloud Map records left out, in key order
}

// report logs r, and counts its skipped records (runner.skip).
func (r *runner) report(rep readReport) {
	if rep.caErr != nil {
		r.log.Error("ignoring undecodable CA state", "error", rep.caErr)
	}
	for _, sk := range rep.skips {
		r.skip(sk.key, sk.err)
	}
}

// run follows the store until ctx ends, applying each batch of changes
// already queued (no timer: a lone write is pushed at once), and serves
// attach and detach requests and leaf renewals in between. After a lost
// watch (compaction, or a watcher that fell behind) it loads a fresh
// snapshot and carries on.
func (r *runner) run(ctx context.Context) error {
	defer close(r.done)
	f := follow.New(r.st, "")
	load := func() error {
		var s state
		var rep readReport
		rev, err := f.Load(ctx, func(tx store.Tx) (err error) {
			s, rep, err = readState(tx, r.loadDiscovery)
			return err
		})
		if err != nil {
			return err
		}
		r.report(rep)
		now := r.clock.Now()
		r.core.Reset(s, rev, now)
		r.deliver()
		return nil
	}
	if err := load(); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-f.Changes():
			if ok {
				batch, closed := follow.Drain(c, f.Changes())
				// Measure from the commit: the write is what the user
				// waits on.
				at := batch[0].Committed
				if at.IsZero() {
					at = time.Now()
				}
				start := time.Now()
				r.core.Apply(batch, at, r.clock.Now())
				r.metrics.recompute.Observe(time.Since(start).Seconds())
				r.deliver()
				if !closed {
					continue
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			r.log.Warn("store watch ended; reading a fresh snapshot")
			if err := load(); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case req := <-r.attachCh:
			// Take every attach already waiting: after a restart, proxies
			// reconnect by the thousand, and a batch translates in parallel.
			batch := []attachReq{req}
		more:
			for len(batch) < 1024 {
				select {
				case req := <-r.attachCh:
					batch = append(batch, req)
				default:
					break more
				}
			}
			ids := make([]translate.Identity, len(batch))
			for i, req := range batch {
				ids[i] = req.id
			}
			errs := r.core.Attach(ids, r.clock.Now())
			// The snapshots reach the hub before the streams hear back,
			// so that each finds its identity's snapshot there.
			r.deliver()
			for i, req := range batch {
				req.reply <- errs[i]
			}
		case id := <-r.detachCh:
			r.core.Detach(id)
			r.deliver()
		case <-r.renewC:
			r.renewC, r.renewAt = nil, time.Time{}
			r.core.Renew(r.clock.Now())
			r.deliver()
		}
	}
}

// deliver hands what the core produced to the hub, publishes the applied
// revision and re-arms the renewal timer.
func (r *runner) deliver() {
	for _, s := range r.core.Skipped() {
		r.skip(s.key, s.err)
	}
	ups, rev := r.core.Ready()
	for _, u := range ups {
		// A snapshot delivered again (an attach) keeps its revision:
		// streams may be reading it.
		if u.snap != nil && u.snap.rev == 0 {
			u.snap.rev = rev
		}
	}
	r.hub.deliver(ups)
	r.applied.Store(int64(rev))
	r.hub.bump()
	next := r.core.RenewAt()
	if next.Equal(r.renewAt) && (r.renewC != nil || next.IsZero()) {
		return
	}
	r.renewAt, r.renewC = next, nil
	if !next.IsZero() {
		r.renewC = r.clock.After(next.Sub(r.clock.Now()))
	}
}

// Clock is the time of certificate issuance and renewal.
type Clock interface {
	Now() time.Time
	// After delivers the time on the channel once d has passed (at once
	// when d <= 0).
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// procs is GOMAXPROCS as the package initialised. workers and parallel
// read it, not GOMAXPROCS itself, which Go changes while the process runs
// when its container's CPU limit does: the two must agree within a batch,
// since recompute indexes memory sized by workers with parallel's worker
// numbers. A changed limit takes effect at the next start.
var procs = runtime.GOMAXPROCS(0)

// workers is how many goroutines parallel runs for n calls.
func workers(n int) int { return max(min(procs, n), 1) }

// parallel calls fn(w, 0) ... fn(w, n-1) on workers(n) goroutines, the
// caller's being worker 0 and w the goroutine's number, and returns when
// every call has. Each worker takes the next index from a shared counter:
// no channel operation, and so no hand-off between goroutines, per call
// (the fan-out calls it once per stream pushed to).
func parallel(n int, fn func(w, i int)) {
	nw := workers(n)
	var next atomic.Int64
	work := func(w int) {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			fn(w, i)
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < nw; w++ {
		wg.Go(func() { work(w) }) // ends when every index is taken
	}
	work(0)
	wg.Wait()
}
