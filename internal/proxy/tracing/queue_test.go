package tracing

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/weftmesh/weft/internal/otlptest"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// newTestTracer builds a tracer exporting over OTLP/gRPC to endpoint at
// 100 % sampling, with the queue's limits given.
func newTestTracer(t *testing.T, endpoint string, queueSize, batch int) (*Tracer, *stats.Store) {
	t.Helper()
	st := stats.NewStore()
	tr, err := New(context.Background(), Config{Exporter: ExporterOTLPGRPC, Endpoint: endpoint, Insecure: true, SampleRate: 1,
		ServiceName: "svc", QueueSize: queueSize, BatchSize: batch, ExportTimeout: time.Hour}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return tr, st
}

// endSpans records n finished spans with two attributes each, as the
// tracing filter does.
func endSpans(tr *Tracer, n int) {
	for i := range n {
		_, s := tr.tracer.Start(context.Background(), "span")
		ap := tr.queue.attrSlice()
		*ap = append(*ap, attribute.Int("i", i), attribute.String("http.method", "GET"))
		tr.end(s, ap)
	}
}

func counter(st *stats.Store, name string) int64 {
	v, _ := st.Value(name)
	return v
}

// run starts tr.Run; the returned function cancels it and waits for it
// to return.
func run(ctx context.Context, tr *Tracer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the exporter; ends when stop cancels ctx
		defer wg.Done()
		tr.Run(ctx)
	}()
	return func() { cancel(); wg.Wait() }
}

// TestQueueExportsFullBatches: with the batch timer out of the way, full
// batches alone wake the exporter (two of the three batches' worth must
// arrive: the exporter may take a batch and the first span of the next);
// what is left goes at shutdown, and every span reaches a real OTLP
// collector complete (name, attributes), in requests of at most a batch.
func TestQueueExportsFullBatches(t *testing.T) {
	col := otlptest.Start(t)
	tr, st := newTestTracer(t, col.Addr, 64, 8)
	tr.queue.delay = time.Hour // only a full batch can wake the exporter
	stop := run(context.Background(), tr)
	endSpans(tr, 24)
	col.WaitSpans(t, 20*time.Second, func(s []*tracepb.Span) bool { return len(s) >= 16 })
	stop() // flushes the rest; the counters are final once the exporter has returned
	spans := col.Spans()
	seen := map[int64]bool{}
	for _, s := range spans {
		if s.GetName() != "span" || len(s.GetAttributes()) != 2 || s.GetAttributes()[1].GetValue().GetStringValue() != "GET" {
			t.Fatalf("span arrived incomplete: %v", s)
		}
		seen[s.GetAttributes()[0].GetValue().GetIntValue()] = true
	}
	if len(spans) != 24 || len(seen) != 24 {
		t.Errorf("collector got %d spans, %d distinct, want 24", len(spans), len(seen))
	}
	for i, req := range col.Requests() {
		n := 0
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				n += len(ss.GetSpans())
			}
		}
		if n > 8 {
			t.Errorf("export %d sent %d spans, more than a batch (8)", i, n)
		}
	}
	if n := counter(st, "tracing.spans_exported"); n != 24 {
		t.Errorf("tracing.spans_exported = %d, want 24", n)
	}
	if d := counter(st, "tracing.spans_dropped"); d != 0 {
		t.Errorf("tracing.spans_dropped = %d, want 0", d)
	}
}

// TestQueueFlushesAtShutdown: spans that fill no batch, with the timer
// not yet due, are exported when the tracer stops.
func TestQueueFlushesAtShutdown(t *testing.T) {
	col := otlptest.Start(t)
	tr, st := newTestTracer(t, col.Addr, 64, 8)
	tr.queue.delay = time.Hour
	endSpans(tr, 5)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr.Run(ctx) // stopped already: only the flush at shutdown exports
	if n := len(col.Spans()); n != 5 {
		t.Errorf("collector got %d spans at shutdown, want 5", n)
	}
	if n := counter(st, "tracing.spans_exported"); n != 5 {
		t.Errorf("tracing.spans_exported = %d, want 5", n)
	}
}

// TestQueueDropsWhenFull: with a collector that accepts connections and
// never answers, the queue holds QueueSize spans, drops and counts the
// rest without blocking, and the flush at shutdown gives up within its
// bound, counting what it could not send.
func TestQueueDropsWhenFull(t *testing.T) {
	ln := otlptest.NeverAnswers(t)
	tr, st := newTestTracer(t, ln.Addr().String(), 4, 2)
	endSpans(tr, 10) // nothing exports yet: 4 wait, 6 are dropped
	if d := counter(st, "tracing.spans_dropped"); d != 6 {
		t.Errorf("tracing.spans_dropped = %d with a full queue, want 6", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	tr.Run(ctx)
	if el := time.Since(start); el > shutdownFlush+5*time.Second {
		t.Errorf("stopping took %v with a collector that never answers, bound %v", el, shutdownFlush)
	}
	if d := counter(st, "tracing.spans_dropped"); d != 10 {
		t.Errorf("tracing.spans_dropped = %d after shutdown, want 10", d)
	}
	if n := counter(st, "tracing.spans_exported"); n != 0 {
		t.Errorf("tracing.spans_exported = %d, want 0", n)
	}
}
