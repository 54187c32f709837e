package tracing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// queue holds finished sampled spans for export, bounded: add never
// blocks (a full queue drops the span and counts it), and one goroutine
// (run) exports batches with a timeout. It takes the place of the SDK's
// batch span processor, which drops too but keeps no count a proxy can
// show in its stats, and of the SDK's processor pipeline altogether: see
// Tracer.end for why.
//
// add appends to a slice under a mutex and wakes the exporter only when
// a batch is full; otherwise the exporter wakes on its timer (batchDelay).
// A channel send per span, as this queue had before, woke the exporter
// goroutine for every sampled request: at 1,000 requests/s that was a
// thousand goroutine wake-ups a second (the scheduler finding it a thread,
// futex wakes): in CPU profiles of a sidecar at a fixed 1,000
// requests/s, the largest part of what 100 % sampling added
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

	// wake holds one token when a batch is ready; add never waits on it.
	wake chan struct{}
	mu   sync.Mutex
	// pending are the spans ended since the exporter last took them;
	// protected by mu. At most size: the exporter holds at most one more
	// such slice while it exports (spare, when it is done).
	pending []ended
	spare   []ended                 // only run's goroutine uses it
	ro      []sdktrace.ReadOnlySpan // what is exported, pointing into spare; only run's goroutine uses it
	// attrs recycles the attribute slices of exported spans
	// (*[]attribute.KeyValue).
	attrs sync.Pool
}

// ended is a finished sampled span and the attributes the tracing filter
// recorded for it, which stay out of the SDK's span (Tracer.end).
type ended struct {
	sdktrace.ReadOnlySpan
	attrs *[]attribute.KeyValue
}

// Attributes are the filter's, in the order it recorded them; their keys
// are distinct by construction, so there is nothing to de-duplicate.
func (e *ended) Attributes() []attribute.KeyValue { return *e.attrs }

func newQueue(exp sdktrace.SpanExporter, size, batch int, timeout time.Duration, sc stats.Scope, log *slog.Logger) *queue {
	return &queue{exp: exp, size: size, batch: batch, timeout: timeout, delay: batchDelay,
		dropped: sc.Counter("spans_dropped"), exported: sc.Counter("spans_exported"),
		exportErr: sc.Counter("export_error"), log: log, wake: make(chan struct{}, 1)}
}

// attrSlice returns an empty attribute slice for a span, recycled from
// an exported one when there is one.
func (q *queue) attrSlice() *[]attribute.KeyValue {
	if ap, _ := q.attrs.Get().(*[]attribute.KeyValue); ap != nil {
		return ap
	}
	return new([]attribute.KeyValue)
}

// release recycles a span's attribute slice once nothing reads it.
func (q *queue) release(ap *[]attribute.KeyValue) {
	clear(*ap) // the strings may go
	*ap = (*ap)[:0]
	q.attrs.Put(ap)
}

// add queues a finished sampled span for export, or drops and counts it
// when the queue is full.
func (q *queue) add(e ended) {
	q.mu.Lock()
	n := len(q.pending)
	if n >= q.size {
		q.mu.Unlock()
		q.dropped.Inc()
		q.release(e.attrs)
		return
	}
	if q.pending == nil {
		q.pending = make([]ended, 0, q.size)
	}
	q.pending = append(q.pending, e)
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
	ro := q.ro[:0]
	for i := range spans {
		ro = append(ro, &spans[i])
	}
	b := ro
	for len(b) > 0 && ctx.Err() == nil {
		n := min(len(b), q.batch)
		q.export(ctx, b[:n])
		b = b[n:]
	}
	// Stopped (shutdown's bound) before every batch went: they are lost.
	if len(b) > 0 {
		q.dropped.Add(int64(len(b)))
	}
	// The exporters are done with the spans once ExportSpans returns.
	for i := range spans {
		q.release(spans[i].attrs)
	}
	clear(ro)
	clear(spans) // the spans may go
	q.ro, q.spare = ro[:0], spans[:0]
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
