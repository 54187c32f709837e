package tracing

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/proxy/httpconn"
)

// Filter returns the tracing filter for one connection manager, or nil
// when the connection manager has no tracing block. Its random_sampling,
// when set, replaces the proxy's rate for new traces unless the proxy's
// own configuration fixed it (override).
func (t *Tracer) Filter(info httpconn.HCMInfo, override bool) httpconn.Filter {
	if info.Tracing == nil {
		return nil
	}
	f := &filter{t: t, egress: info.Egress, root: t.root, kind: trace.WithSpanKind(trace.SpanKindServer), name: "ingress"}
	if info.Egress {
		f.kind, f.name = trace.WithSpanKind(trace.SpanKindClient), "egress"
	}
	if rs := info.Tracing.GetRandomSampling(); rs != nil && !override {
		f.root = newRatio(rs.GetValue() / 100)
	}
	return f
}

// SamplingOf returns the fraction an HCM tracing block samples, and
// whether it sets one.
func SamplingOf(tr *hcmv3.HttpConnectionManager_Tracing) (float64, bool) {
	if rs := tr.GetRandomSampling(); rs != nil {
		return rs.GetValue() / 100, true
	}
	return 0, false
}

// filter is the tracing HTTP filter of one connection manager.
//
// It decides sampling before it builds anything: a request whose parent
// (traceparent, B3 or X-Amzn-Trace-Id) is sampled, or a new trace the
// ratio picks, gets the SDK's span; any other request gets no span, only
// its trace context (the parent's trace ID or a new one, a new span ID,
// the sampled flag off), forwarded upstream in the configured formats as
// Envoy forwards an unsampled request's.
//
// What it costs per request, measured with
// go test -run XXX -bench HTTPOneHopTracing -benchtime 3000x -benchmem ./internal/proxy/
// (client, proxy, backend and the OTLP collector's decoding in one
// process; allocations are stable, the ns/op of a shared machine are
// not): no tracer 172-173 allocs/op; 1 % sampling 179-180 (184 when
// every request built the SDK's span, sampled or not: a non-recording
// span, two contexts and the propagators' strings); 100 % sampling 258
// allocs and 20.8 KB (Envoy's three tags that are the same on every span,
// component, node_id and zone, are resource attributes, sent once per
// export batch; the attributes skip the SDK's span and its snapshot,
// Tracer.end; their slices are recycled after export; status codes are
// not formatted). Of what 1 % adds, the filter's own share for an
// unsampled new trace is two allocations with W3C propagation, the
// traceparent value and its slice in the header map
// (TestUnsampledRootAllocations); the rest is the request ID the
// connection manager makes when tracing is on, the backend reading one
// more header, and the 1 % of sampled spans.
type filter struct {
	t      *Tracer
	egress bool
	root   ratio // how new traces are sampled
	// kind and name start every span: egress spans are named for the
	// host once they are known to record (Done), so that an unsampled
	// request builds no name.
	kind trace.SpanStartOption
	name string
}

func (f *filter) DecodeHeaders(x httpconn.Exchange, slot *any) *httpconn.LocalReply {
	if span := f.start(x.Request().Header, x.Start()); span != nil {
		*slot = span
	}
	return nil
}

// start begins the span of a request with headers h that arrived at
// start, or, when the request is not sampled, only its trace context; it
// replaces every trace header of h with the formats the upstream gets.
// It returns nil for an unsampled request.
func (f *filter) start(h http.Header, start time.Time) trace.Span {
	t := f.t
	t.spans.Inc()
	if !t.hasTraceHeaders(h) {
		// A new trace, the most common request at a sidecar's edge:
		// nothing to extract, nothing to clear.
		tid, sid := t.newIDs(start)
		if f.root.sample(tid) {
			return f.startSpan(context.Background(), h, start)
		}
		t.injectRoot(h, tid, sid)
		return nil
	}
	bg := context.Background()
	ctx := t.extract.Extract(bg, carrier(h))
	psc := trace.SpanContextFromContext(ctx)
	if psc.IsValid() {
		if psc.IsSampled() {
			return f.startSpan(ctx, h, start) // parent based: sampled
		}
		// Parent based: not sampled. The span context the SDK would give
		// a non-recording child, injected by the propagators, which see
		// what extraction left in ctx (B3's debug and deferred states).
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: psc.TraceID(), SpanID: newSpanID(),
			TraceFlags: psc.TraceFlags() &^ trace.FlagsSampled, TraceState: psc.TraceState()})
		t.clearHeaders(h)
		t.inject.Inject(trace.ContextWithSpanContext(ctx, sc), carrier(h))
		return nil
	}
	tid, sid := t.newIDs(start)
	if f.root.sample(tid) {
		return f.startSpan(ctx, h, start)
	}
	t.clearHeaders(h)
	if ctx != bg {
		// Extraction found no parent but left state (a B3 header with a
		// debug flag and no IDs): the propagators write what it implies.
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid})
		t.inject.Inject(trace.ContextWithSpanContext(ctx, sc), carrier(h))
		return nil
	}
	t.injectRoot(h, tid, sid)
	return nil
}

// startSpan starts the SDK's span, sampled, and injects its context.
func (f *filter) startSpan(ctx context.Context, h http.Header, start time.Time) trace.Span {
	ctx, span := f.t.tracer.Start(ctx, f.name, f.kind, trace.WithTimestamp(start))
	f.t.clearHeaders(h)
	f.t.inject.Inject(ctx, carrier(h))
	return span
}

// hasTraceHeaders tells whether h holds any trace header weft knows.
func (t *Tracer) hasTraceHeaders(h http.Header) bool {
	for _, k := range t.clear {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// clearHeaders removes every trace header weft knows from h, so that the
// upstream never sees a stale context next to the new one.
func (t *Tracer) clearHeaders(h http.Header) {
	for _, k := range t.clear {
		delete(h, k) // canonical already: no need for Del's work
	}
}

// ratio is sdktrace.TraceIDRatioBased's decision, taken before any span
// exists: a new trace is sampled when the last 8 bytes of its ID, shifted
// right by one, are below bound.
type ratio struct {
	all   bool
	bound uint64
}

func newRatio(fraction float64) ratio {
	switch {
	case fraction >= 1:
		return ratio{all: true}
	case !(fraction > 0): // 0, negative or NaN
		return ratio{}
	}
	return ratio{bound: uint64(fraction * (1 << 63))}
}

func (r ratio) sample(tid trace.TraceID) bool {
	return r.all || binary.BigEndian.Uint64(tid[8:16])>>1 < r.bound
}

// newIDs returns a new trace ID and span ID as the tracer provider's ID
// generator makes them: random (math/rand/v2, as the SDK), the trace ID
// beginning with the epoch second of now where X-Ray takes part (X-Ray's
// rule, xray.IDGenerator's).
func (t *Tracer) newIDs(now time.Time) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	for !tid.IsValid() {
		binary.NativeEndian.PutUint64(tid[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(tid[8:], rand.Uint64())
		if t.xrayIDs {
			binary.BigEndian.PutUint32(tid[:4], uint32(now.Unix()))
		}
	}
	return tid, newSpanID()
}

func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}

// Header values of an unsampled new trace, as the propagators write them
// for a span context with no flags, no trace state and nothing else in
// the context (TestUnsampledRootHeaders holds the two to the same bytes).
const (
	tpLen   = len("00-") + 32 + len("-") + 16 + len("-00")
	b3Len   = 32 + len("-") + 16 + len("-0")
	xrayLen = len("Root=1-") + 8 + len("-") + 24 + len(";Parent=") + 16 + len(";Sampled=0")
)

// injectRoot writes the headers of an unsampled new trace (trace ID tid,
// the proxy's span sid) in every configured format: one string per
// header (B3's multiple headers share one) and one slice for all values.
func (t *Tracer) injectRoot(h http.Header, tid trace.TraceID, sid trace.SpanID) {
	var ids [48]byte // tid, sid in hex
	hex.Encode(ids[:32], tid[:])
	hex.Encode(ids[32:], sid[:])
	vals := make([]string, t.rootValues)
	set := func(k, v string) {
		vals[0] = v
		h[k] = vals[:1:1]
		vals = vals[1:]
	}
	for _, f := range t.cfg.Propagation {
		switch f {
		case FormatTraceContext:
			var b [tpLen]byte
			copy(b[:], "00-")
			copy(b[3:], ids[:32])
			b[35] = '-'
			copy(b[36:], ids[32:])
			copy(b[52:], "-00")
			set("Traceparent", string(b[:]))
		case FormatB3:
			var b [b3Len]byte
			copy(b[:], ids[:32])
			b[32] = '-'
			copy(b[33:], ids[32:])
			copy(b[49:], "-0")
			set("B3", string(b[:]))
		case FormatB3Multi:
			s := string(ids[:])
			set("X-B3-Traceid", s[:32])
			set("X-B3-Spanid", s[32:])
			set("X-B3-Sampled", "0")
		case FormatXRay:
			var b [xrayLen]byte
			n := copy(b[:], "Root=1-")
			n += copy(b[n:], ids[:8])
			b[n] = '-'
			n++
			n += copy(b[n:], ids[8:32])
			n += copy(b[n:], ";Parent=")
			n += copy(b[n:], ids[32:])
			copy(b[n:], ";Sampled=0")
			set("X-Amzn-Trace-Id", string(b[:]))
		}
	}
}

// rootValues counts the header values injectRoot writes for formats.
func rootValues(formats []string) int {
	n := 0
	for _, f := range formats {
		if f == FormatB3Multi {
			n += 3
		} else {
			n++
		}
	}
	return n
}

func (f *filter) Done(x httpconn.Exchange, slot any) {
	span, _ := slot.(trace.Span)
	if span == nil || !span.IsRecording() {
		return
	}
	r := x.Request()
	if d := x.Decorator(); d != "" {
		span.SetName(d)
	} else if f.egress {
		span.SetName("egress " + r.Host)
	}
	proto := r.Proto
	if r.ProtoMajor == 2 {
		proto = "HTTP/2"
	}
	status := x.Status()
	flags := x.Flags().String()
	if flags == "" {
		flags = "-"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ap := f.t.queue.attrSlice()
	*ap = append(*ap,
		attribute.String("guid:x-request-id", r.Header.Get("X-Request-Id")),
		attribute.String("http.url", scheme+"://"+r.Host+r.URL.RequestURI()),
		attribute.String("http.method", r.Method),
		attribute.String("downstream_cluster", orDash(r.Header.Get("X-Envoy-Downstream-Service-Cluster"))),
		attribute.String("user_agent", orDash(r.UserAgent())),
		attribute.String("http.protocol", proto),
		attribute.String("peer.address", x.Downstream()),
		attribute.Int64("request_size", x.BytesReceived()),
		attribute.Int64("response_size", x.BytesSent()),
		attribute.String("http.status_code", f.t.statusText(status)),
		attribute.String("response_flags", flags),
	)
	if c := x.Cluster(); c != "" {
		*ap = append(*ap, attribute.String("upstream_cluster", c), attribute.String("upstream_cluster.name", c))
	}
	if h := x.UpstreamHost(); h != "" {
		*ap = append(*ap, attribute.String("upstream_address", h))
	}
	if status >= 500 || status == 0 {
		*ap = append(*ap, attribute.String("error", "true"))
		span.SetStatus(codes.Error, f.t.statusText(status))
	}
	f.t.end(span, ap)
}

// carrier is propagation.HeaderCarrier without a canonicalization (and
// its allocation) per header name: the propagators ask for a fixed set of
// names, which canonicalKey knows. Being a map, it is stored in the
// propagators' TextMapCarrier interface without an allocation.
type carrier http.Header

// canonicalKey is http.CanonicalHeaderKey for the names the propagators
// ask for, without its work.
func canonicalKey(k string) string {
	switch k {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "b3":
		return "B3"
	case "x-b3-traceid":
		return "X-B3-Traceid"
	case "x-b3-spanid":
		return "X-B3-Spanid"
	case "x-b3-parentspanid":
		return "X-B3-Parentspanid"
	case "x-b3-sampled":
		return "X-B3-Sampled"
	case "x-b3-flags":
		return "X-B3-Flags"
	case "X-Amzn-Trace-Id", "x-amzn-trace-id":
		return "X-Amzn-Trace-Id"
	}
	return http.CanonicalHeaderKey(k)
}

func (c carrier) Get(k string) string {
	if v := c[canonicalKey(k)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c carrier) Set(k, v string) { c[canonicalKey(k)] = []string{v} }

func (c carrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// ifPresent extracts with p only when the carrier holds one of names.
type ifPresent struct {
	propagation.TextMapPropagator
	names []string
}

func (p ifPresent) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	for _, n := range p.names {
		if c.Get(n) != "" {
			return p.TextMapPropagator.Extract(ctx, c)
		}
	}
	return ctx
}
