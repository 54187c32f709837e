package tracing

import (
	"context"
	"log/slog"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// queue is a span processor with a bounded queue: OnEnd never blocks (a
// full queue drops the span and counts it), and one goroutine (run)
// exports batches with a timeout. The SDK's batch processor drops too,
// but keeps no count a proxy can show in its stats.
type queue struct {
	exp       sdktrace.SpanExporter
	q         chan sdktrace.ReadOnlySpan
	batch     int
	timeout   time.Duration
	dropped   *stats.Counter
	exported  *stats.Counter
	exportErr *stats.Counter
	log       *slog.Logger
}

func newQueue(exp sdktrace.SpanExporter, size, batch int, timeout time.Duration, sc stats.Scope, log *slog.Logger) *queue {
	return &queue{exp: exp, q: make(chan sdktrace.ReadOnlySpan, size), batch: batch, timeout: timeout,
		dropped: sc.Counter("spans_dropped"), exported: sc.Counter("spans_exported"),
		exportErr: sc.Counter("export_error"), log: log}
}

func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.q <- s:
	default:
		q.dropped.Inc()
	}
}

// Shutdown and ForceFlush belong to the SDK's life cycle; run owns the
// export loop, so there is nothing left to do when they are called.
func (q *queue) Shutdown(ctx context.Context) error { return q.exp.Shutdown(ctx) }

func (q *queue) ForceFlush(context.Context) error { return nil }

// run exports until ctx ends, then exports what is queued once more.
func (q *queue) run(ctx context.Context) {
	t := time.NewTimer(batchDelay)
	defer t.Stop()
	buf := make([]sdktrace.ReadOnlySpan, 0, q.batch)
	for {
		select {
		case <-ctx.Done():
			// One last export of what is queued, bounded by shutdownFlush
			// whatever the export timeout.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
			defer cancel()
			for n := len(q.q); n > 0 && fctx.Err() == nil; n-- {
				buf = append(buf, <-q.q)
				if len(buf) == q.batch {
					buf = q.export(fctx, buf)
				}
			}
			q.export(fctx, buf)
			return
		case s := <-q.q:
			buf = append(buf, s)
			if len(buf) == q.batch {
				buf = q.export(ctx, buf)
			}
		case <-t.C:
			buf = q.export(ctx, buf)
			t.Reset(batchDelay)
		}
	}
}

func (q *queue) export(ctx context.Context, buf []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	if len(buf) == 0 {
		return buf
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	if err := q.exp.ExportSpans(ctx, buf); err != nil {
		q.exportErr.Inc()
		q.dropped.Add(int64(len(buf)))
		q.log.Debug("span export", "spans", len(buf), "err", err)
	} else {
		q.exported.Add(int64(len(buf)))
	}
	clear(buf)
	return buf[:0]
}
