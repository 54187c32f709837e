package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/store"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// Limits of the push spans: the traced writes remembered, by store
// revision (the oldest forgotten first), the push spans open at once
// (the oldest ended first, as "dropped"), and how long a push waits for
// its ACK before its span ends as "timed out".
const (
	DefaultPushTraceWrites  = 1024
	DefaultPushTraceOpen    = 4096
	DefaultPushTraceTimeout = 30 * time.Second
)

// Outcomes of a push span (attribute weft.xds.outcome).
const (
	pushAcked      = "ack"
	pushNacked     = "nack"
	pushSuperseded = "superseded" // the next push of the type went out first
	pushTimedOut   = "timed out"
	pushDropped    = "dropped" // DefaultPushTraceOpen spans were open
	pushUnfinished = "unfinished"
)

// pushTracer extends an API write's trace to the proxies: it is the xDS
// server's Observer. A traced write that commits at revision R is
// remembered (wrote); the first push of R starts a "recompute" span (from
// the commit to that push: following the store, translating, delivering)
// and every push of R to a proxy a span "xds push" that ends at the
// proxy's ACK or NACK (error status, the proxy's message). Pushes that
// answer a new subscription, not a change, and pushes of revisions no
// traced write made, make no span. Writes batched together by the xDS
// server reach the proxies as the last one's revision: only that write's
// trace shows the pushes.
//
// The xDS server may push a revision before the request's goroutine is
// back from the commit and has called wrote: such pushes, and their
// answers, are kept as early pushes (at most DefaultPushTraceOpen, the
// oldest revisions forgotten first) and become spans, with their own
// times, when wrote names their revision.
//
// Pushed and Acked are called on the xDS streams' goroutines, holding a
// stream's lock: they take mu and the SDK's span calls, nothing else.
type pushTracer struct {
	tr      trace.Tracer
	writes  int // the bounds above
	open    int
	timeout time.Duration

	mu    sync.Mutex
	byRev map[store.Revision]*tracedWrite
	revs  []store.Revision // byRev's keys, oldest first
	spans map[pushKey]*pushSpan
	order []started // spans in start order; may hold ended ones
	// early holds the pushes of revisions no write has claimed yet, by
	// revision; earlyRevs its keys, oldest first; earlyBy the latest
	// early push of each stream and type, for its answer.
	early     map[store.Revision][]*earlyPush
	earlyRevs []store.Revision
	earlyN    int
	earlyBy   map[pushKey]*earlyPush
}

// earlyPush is a push seen before its write, and its end if it had one.
type earlyPush struct {
	in      xdsserver.PushInfo
	at      time.Time
	outcome string // "": still open
	nack    string
	endAt   time.Time
}

// started is one push span in the order they started.
type started struct {
	k pushKey
	s *pushSpan
}

// tracedWrite is a write whose pushes get spans.
type tracedWrite struct {
	parent     trace.SpanContext // the request's span
	committed  time.Time
	recomputed bool // its recompute span is out
}

// pushKey is one type on one stream: at most one push awaits its answer.
type pushKey struct {
	stream  int64
	typeURL string
}

type pushSpan struct {
	span    trace.Span
	nonce   string
	started time.Time
}

func newPushTracer(tp trace.TracerProvider) *pushTracer {
	return &pushTracer{
		tr: tp.Tracer(tracerName), writes: DefaultPushTraceWrites, open: DefaultPushTraceOpen, timeout: DefaultPushTraceTimeout,
		byRev: map[store.Revision]*tracedWrite{}, spans: map[pushKey]*pushSpan{},
		early: map[store.Revision][]*earlyPush{}, earlyBy: map[pushKey]*earlyPush{},
	}
}

// wrote remembers the write of ctx's (sampled) span, committed at rev
// by a commit that began at began.
func (p *pushTracer) wrote(ctx context.Context, rev store.Revision, began time.Time) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.byRev[rev]; ok {
		return
	}
	for len(p.revs) >= p.writes {
		delete(p.byRev, p.revs[0])
		p.revs = p.revs[1:]
	}
	w := &tracedWrite{parent: sc, committed: now}
	p.byRev[rev] = w
	p.revs = append(p.revs, rev)
	pushes := p.early[rev]
	if len(pushes) == 0 {
		return
	}
	// Pushed before the commit returned here: the commit was over by the
	// first push, and began at began.
	w.committed = began
	if pushes[0].at.Before(began) {
		w.committed = pushes[0].at
	}
	delete(p.early, rev)
	p.earlyN -= len(pushes)
	p.pruneEarlyRevs()
	for _, e := range pushes {
		k := pushKey{e.in.StreamID, e.in.TypeURL}
		if p.earlyBy[k] == e {
			delete(p.earlyBy, k)
		}
		s := p.start(w, e.in, e.at)
		switch {
		case e.outcome != "":
			p.end(k, s, e.outcome, e.nack, e.endAt)
		case p.spans[k] != s: // a later push is open: cannot happen, as it supersedes e
			p.end(k, s, pushSuperseded, "", now)
		}
	}
}

func (p *pushTracer) Pushed(in xdsserver.PushInfo) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	k := pushKey{in.StreamID, in.TypeURL}
	if old := p.spans[k]; old != nil {
		p.end(k, old, pushSuperseded, "", now)
	}
	if e := p.earlyBy[k]; e != nil && e.outcome == "" {
		e.outcome, e.endAt = pushSuperseded, now
	}
	if in.Initial {
		return
	}
	w := p.byRev[in.Revision]
	if w == nil {
		p.keepEarly(in, now)
		return
	}
	p.start(w, in, now)
}

// pruneEarlyRevs drops from earlyRevs the revisions whose pushes a write
// claimed (wrote), once they are about half of it. Only keepEarly's
// eviction took revisions out, and it runs only when earlyN reaches its
// bound: with every write claiming its pushes, earlyRevs grew by one
// revision per write for good. Claims come in any order, so one revision
// still waiting can hold any number of claimed ones behind it. Called
// with mu held.
func (p *pushTracer) pruneEarlyRevs() {
	if len(p.earlyRevs) < 2*len(p.early)+16 {
		return
	}
	kept := p.earlyRevs[:0]
	for _, r := range p.earlyRevs {
		if _, ok := p.early[r]; ok {
			kept = append(kept, r)
		}
	}
	p.earlyRevs = kept
}

// keepEarly keeps a push whose write is not known (yet). Called with mu
// held.
func (p *pushTracer) keepEarly(in xdsserver.PushInfo, now time.Time) {
	for p.earlyN >= p.open && len(p.earlyRevs) > 0 {
		old := p.earlyRevs[0]
		p.earlyRevs = p.earlyRevs[1:]
		for _, e := range p.early[old] {
			k := pushKey{e.in.StreamID, e.in.TypeURL}
			if p.earlyBy[k] == e {
				delete(p.earlyBy, k)
			}
		}
		p.earlyN -= len(p.early[old])
		delete(p.early, old)
	}
	e := &earlyPush{in: in, at: now}
	if _, ok := p.early[in.Revision]; !ok {
		p.earlyRevs = append(p.earlyRevs, in.Revision)
	}
	p.early[in.Revision] = append(p.early[in.Revision], e)
	p.earlyN++
	p.earlyBy[pushKey{in.StreamID, in.TypeURL}] = e
}

// start opens the span of push in of write w, sent at now. Called with
// mu held.
func (p *pushTracer) start(w *tracedWrite, in xdsserver.PushInfo, now time.Time) *pushSpan {
	k := pushKey{in.StreamID, in.TypeURL}
	ctx := trace.ContextWithSpanContext(context.Background(), w.parent)
	if !w.recomputed {
		w.recomputed = true
		_, rs := p.tr.Start(ctx, "recompute", trace.WithTimestamp(w.committed),
			trace.WithAttributes(attribute.Int64("weft.store.revision", int64(in.Revision))))
		rs.End(trace.WithTimestamp(now))
	}
	for len(p.spans) >= p.open && len(p.order) > 0 {
		e := p.order[0]
		p.order = p.order[1:]
		if p.spans[e.k] == e.s {
			p.end(e.k, e.s, pushDropped, "", now)
		}
	}
	if len(p.order) >= 2*p.open {
		// Mostly ended spans: keep the open ones only.
		p.order = slices.DeleteFunc(p.order, func(e started) bool { return p.spans[e.k] != e.s })
	}
	_, span := p.tr.Start(ctx, "xds push", trace.WithTimestamp(now), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("weft.xds.node_id", in.NodeID),
			attribute.String("weft.xds.type_url", in.TypeURL),
			attribute.String("weft.xds.version", in.Version),
			attribute.String("weft.xds.nonce", in.Nonce),
			attribute.Int64("weft.xds.stream", in.StreamID),
			attribute.Int64("weft.store.revision", int64(in.Revision)),
		))
	s := &pushSpan{span: span, nonce: in.Nonce, started: now}
	if old := p.spans[k]; old != nil && old.started.After(now) {
		return s // a later push is open already: s is ended by the caller
	}
	p.spans[k] = s
	p.order = append(p.order, started{k, s})
	return s
}

func (p *pushTracer) Acked(in xdsserver.AckInfo) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	k := pushKey{in.StreamID, in.TypeURL}
	if e := p.earlyBy[k]; e != nil && e.outcome == "" && e.in.Nonce == in.Nonce {
		e.outcome, e.endAt = pushAcked, now
		if in.Error != "" {
			e.outcome, e.nack = pushNacked, in.Error
		}
		return
	}
	s := p.spans[k]
	if s == nil || s.nonce != in.Nonce {
		return
	}
	if in.Error != "" {
		p.end(k, s, pushNacked, in.Error, now)
		return
	}
	p.end(k, s, pushAcked, "", now)
}

// end ends one push span with its outcome. Called with mu held.
func (p *pushTracer) end(k pushKey, s *pushSpan, outcome, nack string, at time.Time) {
	if p.spans[k] == s {
		delete(p.spans, k)
	}
	s.span.SetAttributes(attribute.String("weft.xds.outcome", outcome))
	switch outcome {
	case pushNacked:
		s.span.SetStatus(codes.Error, nack)
	case pushTimedOut:
		s.span.SetStatus(codes.Error, "no ACK within "+p.timeout.String())
	}
	s.span.End(trace.WithTimestamp(at))
	if len(p.spans) == 0 {
		p.order = p.order[:0] // every key in it is ended
	}
}

// expire ends the spans older than the timeout, at the moment it passed.
// The oldest are first in order. Called with mu held.
func (p *pushTracer) expire(now time.Time) {
	for len(p.order) > 0 {
		e := p.order[0]
		open := p.spans[e.k] == e.s
		if open && now.Sub(e.s.started) < p.timeout {
			return
		}
		p.order = p.order[1:]
		if open {
			p.end(e.k, e.s, pushTimedOut, "", e.s.started.Add(p.timeout))
		}
	}
}

// close ends the spans still open, before the exporter flushes: the
// server is stopping.
func (p *pushTracer) close() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	for k, s := range p.spans {
		p.end(k, s, pushUnfinished, "", now)
	}
}
