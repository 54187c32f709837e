package tracing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// queue is a span processor with a bounded queue: OnEnd never blocks (a
// full queue drops the span and counts it), and one goroutine (run)
// exports batches with a timeout. The SDK's batch processor drops too,
// but keeps no count a proxy can show in its stats.
//
// OnEnd appends to a slice under a mutex and wakes the exporter only when
// a batch is full; otherwise the exporter wakes on its timer (batchDelay).
// A channel send per span, as this queue had before, woke the exporter
// goroutine for every sampled request: at 1,000 requests/s that was a
// thousand goroutine wake-ups a second (the scheduler finding it a thread,
// futex wakes), which a CPU profile of a sidecar at a fixed 1,000
// requests/s put at about a third of what 100 % sampling cost
// (docs/bench/proxy.md, "Observability overhead").
type queue struct {
	exp       sdktrace.SpanExporter
	size      int // most spans pending (not yet taken by the exporter)
	batch     int // most spans in one export
	timeout   time.Duration
	delay     time.Duration // the longest a span waits for a batch: batchDelay
	dropped   *stats.Counter
	exported  *stats.Counter
	exportErr *stats.Counter
	log       *slog.Logger

	// wake holds one token when a batch is ready; OnEnd never waits on it.
	wake chan struct{}
	mu   sync.Mutex
	// pending are the spans ended since the exporter last took them;
	// protected by mu. At most size: the exporter holds at most one more
	// such slice while it exports (spare, when it is done).
	pending []sdktrace.ReadOnlySpan
	spare   []sdktrace.ReadOnlySpan // only run's goroutine uses it
}

func newQueue(exp sdktrace.SpanExporter, size, batch int, timeout time.Duration, sc stats.Scope, log *slog.Logger) *queue {
	return &queue{exp: exp, size: size, batch: batch, timeout: timeout, delay: batchDelay,
		dropped: sc.Counter("spans_dropped"), exported: sc.Counter("spans_exported"),
		exportErr: sc.Counter("export_error"), log: log, wake: make(chan struct{}, 1)}
}

func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	q.mu.Lock()
	n := len(q.pending)
	if n >= q.size {
		q.mu.Unlock()
		q.dropped.Inc()
		return
	}
	if q.pending == nil {
		q.pending = make([]sdktrace.ReadOnlySpan, 0, q.size)
	}
	q.pending = append(q.pending, s)
	q.mu.Unlock()
	// Wake the exporter once, when the pending spans first fill a batch
	// (or the queue, when it is smaller than a batch).
	if n+1 == min(q.batch, q.size) {
		select {
		case q.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Shutdown and ForceFlush belong to the SDK's life cycle; run owns the
// export loop, so there is nothing left to do when they are called.
func (q *queue) Shutdown(ctx context.Context) error { return q.exp.Shutdown(ctx) }

func (q *queue) ForceFlush(context.Context) error { return nil }

// run exports until ctx ends, then exports what is pending once more.
// Exports outlive ctx by at most shutdownFlush, whatever the export
// timeout: the one under way when ctx ends may finish, and the last one
// shares the same bound.
func (q *queue) run(ctx context.Context) {
	ectx, ecancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ecancel()
	stopBound := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownFlush, ecancel) })
	defer stopBound()
	t := time.NewTimer(q.delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			q.drain(ectx)
			return
		case <-q.wake:
		case <-t.C:
		}
		q.drain(ectx)
		t.Reset(q.delay)
	}
}

// drain takes the pending spans and exports them in batches. Only run's
// goroutine calls it.
func (q *queue) drain(ctx context.Context) {
	q.mu.Lock()
	spans := q.pending
	q.pending = q.spare
	q.mu.Unlock()
	b := spans
	for len(b) > 0 && ctx.Err() == nil {
		n := min(len(b), q.batch)
		q.export(ctx, b[:n])
		b = b[n:]
	}
	// Stopped (shutdown's bound) before every batch went: they are lost.
	if len(b) > 0 {
		q.dropped.Add(int64(len(b)))
	}
	clear(spans) // the spans may go
	q.spare = spans[:0]
}

func (q *queue) export(ctx context.Context, buf []sdktrace.ReadOnlySpan) {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	if err := q.exp.ExportSpans(ctx, buf); err != nil {
		q.exportErr.Inc()
		q.dropped.Add(int64(len(buf)))
		q.log.Debug("span export", "spans", len(buf), "err", err)
		return
	}
	q.exported.Add(int64(len(buf)))
}
