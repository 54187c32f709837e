package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/store"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// outcomes lists the ended push spans' outcome and node, in end order.
func outcomes(rec *tracetest.SpanRecorder) [][2]string {
	var out [][2]string
	for _, s := range rec.Ended() {
		if s.Name() != "xds push" {
			continue
		}
		var node, outcome string
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "weft.xds.node_id":
				node = kv.Value.AsString()
			case "weft.xds.outcome":
				outcome = kv.Value.AsString()
			}
		}
		out = append(out, [2]string{node, outcome})
	}
	return out
}

// TestPushTracerBounds: the push spans' ends other than an ACK, and the
// tracer's limits: a push superseded by the next of its type, an answer
// naming another nonce ignored, pushes of untraced revisions and initial
// pushes skipped, the oldest open span dropped at the limit, spans
// timed out, the oldest write forgotten, close ending the rest, and
// pushes seen before their write's commit returned.
func TestPushTracerBounds(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	p := newPushTracer(tp)
	p.writes, p.open = 2, 2
	ctx, req := tp.Tracer("t").Start(context.Background(), "request")
	defer req.End()
	for _, rev := range []int64{5, 6, 7} {
		p.wrote(ctx, store.Revision(rev), time.Now())
	}
	if _, ok := p.byRev[5]; ok || len(p.byRev) != 2 {
		t.Errorf("writes remembered %v, want 6 and 7 (the limit is 2)", p.byRev)
	}
	push := func(stream int64, node, nonce string, rev int64) {
		p.Pushed(xdsserver.PushInfo{StreamID: stream, NodeID: node, TypeURL: "rds", Version: "v", Nonce: nonce, Revision: store.Revision(rev)})
	}
	push(1, "a", "1", 5)                                                                                           // forgotten write: no span
	p.Pushed(xdsserver.PushInfo{StreamID: 1, NodeID: "a", TypeURL: "rds", Nonce: "2", Revision: 6, Initial: true}) // no span
	push(1, "a", "3", 6)
	push(1, "a", "4", 7)                                                // supersedes nonce 3
	p.Acked(xdsserver.AckInfo{StreamID: 1, TypeURL: "rds", Nonce: "3"}) // stale: ignored
	push(2, "b", "1", 7)
	push(3, "c", "1", 7) // a third open span: a's is dropped
	p.Acked(xdsserver.AckInfo{StreamID: 2, TypeURL: "rds", Nonce: "1", Error: "bad route"})
	want := [][2]string{{"a", pushSuperseded}, {"a", pushDropped}, {"b", pushNacked}}
	if got := outcomes(rec); !slices.Equal(got, want) {
		t.Fatalf("ended %v, want %v", got, want)
	}
	for _, s := range rec.Ended() {
		if s.Name() == "xds push" && s.Status().Code == codes.Error && s.Status().Description != "bad route" {
			t.Errorf("NACK status %v", s.Status())
		}
		if s.Name() == "xds push" && s.Parent().SpanID() != req.SpanContext().SpanID() {
			t.Errorf("push span's parent %v, want the request", s.Parent().SpanID())
		}
	}
	recomputes := 0
	for _, s := range rec.Ended() {
		if s.Name() == "recompute" {
			recomputes++
		}
	}
	if recomputes != 2 {
		t.Errorf("%d recompute spans, want one per revision pushed (6 and 7)", recomputes)
	}

	p.timeout = 0 // every open span is now past its deadline
	p.Acked(xdsserver.AckInfo{StreamID: 9, TypeURL: "rds", Nonce: "x"})
	want = append(want, [2]string{"c", pushTimedOut})
	if got := outcomes(rec); !slices.Equal(got, want) {
		t.Fatalf("after the timeout: ended %v, want %v", got, want)
	}
	p.timeout = DefaultPushTraceTimeout
	push(4, "d", "1", 7)
	p.close()
	want = append(want, [2]string{"d", pushUnfinished})
	if got := outcomes(rec); !slices.Equal(got, want) {
		t.Fatalf("after close: ended %v, want %v", got, want)
	}
	if len(p.spans) != 0 {
		t.Errorf("%d spans left open", len(p.spans))
	}

	// Pushed, and answered, before the request is back from its commit:
	// spans once the write is known, with the times they happened.
	push(5, "e", "1", 9)
	p.Acked(xdsserver.AckInfo{StreamID: 5, TypeURL: "rds", Nonce: "1"})
	push(6, "f", "1", 9)
	if n := len(outcomes(rec)); n != len(want) {
		t.Fatalf("%d push spans ended before their write was known", n-len(want))
	}
	p.wrote(ctx, 9, time.Now())
	want = append(want, [2]string{"e", pushAcked})
	if got := outcomes(rec); !slices.Equal(got, want) {
		t.Fatalf("after the late write: ended %v, want %v", got, want)
	}
	if len(p.spans) != 1 || len(p.early) != 0 || len(p.earlyBy) != 0 {
		t.Errorf("open %d, early %v %v; want f's span open and nothing early", len(p.spans), p.early, p.earlyBy)
	}
	p.close()
	want = append(want, [2]string{"f", pushUnfinished})
	if got := outcomes(rec); !slices.Equal(got, want) {
		t.Fatalf("after close: ended %v, want %v", got, want)
	}

	// Unsampled writes are not remembered.
	_, unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())).Tracer("t").Start(context.Background(), "r")
	p.wrote(trace.ContextWithSpan(context.Background(), unsampled), 8, time.Now())
	if _, ok := p.byRev[8]; ok {
		t.Error("an unsampled write was remembered")
	}
}

// TestPushTracerEarlyRevsBounded: the pushes of a write seen before its
// commit returned, claimed by the write (wrote), leave the list of
// revisions waiting for a write too. With every write's pushes early, as
// on one server where the pushes race the API's reply, the list grew by
// a revision per write for good; one revision never claimed kept the
// claimed ones behind it.
func TestPushTracerEarlyRevsBounded(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	p := newPushTracer(tp)
	ctx, req := tp.Tracer("t").Start(context.Background(), "request")
	defer req.End()
	// Revision 1's write is never traced: its push waits.
	p.Pushed(xdsserver.PushInfo{StreamID: 2, TypeURL: "rds", Nonce: "w", Revision: 1})
	const writes = 100_000
	for rev := int64(2); rev < 2+writes; rev++ {
		p.Pushed(xdsserver.PushInfo{StreamID: 1, TypeURL: "rds", Nonce: "n", Revision: store.Revision(rev)})
		p.wrote(ctx, store.Revision(rev), time.Now())
		p.Acked(xdsserver.AckInfo{StreamID: 1, TypeURL: "rds", Nonce: "n"})
	}
	if n := len(p.earlyRevs); n > 64 {
		t.Fatalf("%d revisions wait for a write after %d writes claimed theirs, one left unclaimed", n, writes)
	}
	if !slices.Contains(p.earlyRevs, 1) || len(p.early[1]) != 1 {
		t.Fatalf("the unclaimed push of revision 1 was dropped: revisions %v", p.earlyRevs)
	}
}
