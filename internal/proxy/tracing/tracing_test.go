package tracing

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.opentelemetry.io/contrib/propagators/aws/xray"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestCanonicalKey: the names the propagators ask for map to the
// canonical form net/http stores them under.
func TestCanonicalKey(t *testing.T) {
	tr, _ := newTestTracer(t, "127.0.0.1:4317", 8, 8)
	names := append(tr.extract.Fields(), tr.inject.Fields()...)
	names = append(names, "x-b3-parentspanid", "X-Amzn-Trace-Id")
	for _, n := range names {
		if got, want := canonicalKey(n), http.CanonicalHeaderKey(n); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", n, got, want)
		}
	}
}

// newFilter returns the ingress tracing filter of a tracer exporting
// nowhere (nothing is exported at rate 0) with the given formats.
func newFilter(t testing.TB, rate float64, formats ...string) *filter {
	t.Helper()
	tr, err := New(context.Background(), Config{Exporter: ExporterOTLPGRPC, Endpoint: "127.0.0.1:4317", Insecure: true,
		SampleRate: rate, Propagation: formats, ServiceName: "svc", ExportTimeout: time.Hour},
		stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return tr.Filter(httpconn.HCMInfo{Tracing: &hcmv3.HttpConnectionManager_Tracing{}}, true).(*filter)
}

// TestUnsampledRootHeaders: an unsampled new trace gets no span, and its
// headers, written without the propagators, are byte for byte what the
// propagators write for the same IDs with the sampled flag off, in every
// format, alone and together.
func TestUnsampledRootHeaders(t *testing.T) {
	sets := [][]string{{FormatTraceContext}, {FormatB3}, {FormatB3Multi}, {FormatXRay},
		{FormatTraceContext, FormatB3, FormatB3Multi, FormatXRay}}
	for _, formats := range sets {
		t.Run(strings.Join(formats, ","), func(t *testing.T) {
			f := newFilter(t, 0, formats...)
			start := time.Now()
			for range 50 {
				h := http.Header{"User-Agent": {"test"}}
				if span := f.start(h, start); span != nil {
					t.Fatalf("rate 0 started a span")
				}
				sc := trace.SpanContextFromContext(f.t.extract.Extract(context.Background(), carrier(h)))
				if !sc.IsValid() || sc.IsSampled() {
					t.Fatalf("headers %v: span context %v, want a valid one, not sampled", h, sc)
				}
				if tid := sc.TraceID(); f.t.xrayIDs && binary.BigEndian.Uint32(tid[:4]) != uint32(start.Unix()) {
					t.Errorf("trace ID %s does not begin with the epoch second (X-Ray)", sc.TraceID())
				}
				want := http.Header{"User-Agent": {"test"}}
				f.t.inject.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier(want))
				if !reflect.DeepEqual(h, want) {
					t.Fatalf("headers\n%v\nwant (the propagators')\n%v", h, want)
				}
			}
		})
	}
}

// TestUnsampledParentHeaders: a parent with the sampled flag off, in
// each format, gets no span; the upstream gets the same trace ID, a new
// span ID and the flag still off, and stale headers of other formats are
// gone.
func TestUnsampledParentHeaders(t *testing.T) {
	const traceID, parent = "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
	for _, tc := range []struct {
		format string
		in     http.Header
	}{
		{FormatTraceContext, http.Header{"Traceparent": {"00-" + traceID + "-" + parent + "-00"}, "Tracestate": {"k=v"}}},
		{FormatB3, http.Header{"B3": {traceID + "-" + parent + "-0"}}},
		{FormatB3Multi, http.Header{"X-B3-Traceid": {traceID}, "X-B3-Spanid": {parent}, "X-B3-Sampled": {"0"}}},
		{FormatXRay, http.Header{"X-Amzn-Trace-Id": {"Root=1-" + traceID[:8] + "-" + traceID[8:] + ";Parent=" + parent + ";Sampled=0"}}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			f := newFilter(t, 1, tc.format) // every new trace sampled: only the parent says no
			tc.in["Traceparent"] = append(tc.in["Traceparent"], "00-"+traceID+"-"+parent+"-00")
			if span := f.start(tc.in, time.Now()); span != nil {
				t.Fatalf("an unsampled parent started a span")
			}
			sc := trace.SpanContextFromContext(f.t.extract.Extract(context.Background(), carrier(tc.in)))
			if sc.TraceID().String() != traceID || sc.SpanID().String() == parent || !sc.SpanID().IsValid() || sc.IsSampled() {
				t.Errorf("upstream headers %v: trace %s span %s sampled %v, want trace %s, a new span, not sampled",
					tc.in, sc.TraceID(), sc.SpanID(), sc.IsSampled(), traceID)
			}
			if tc.format != FormatTraceContext && tc.in.Get("Traceparent") != "" {
				t.Errorf("the stale traceparent was forwarded: %v", tc.in)
			}
			if tc.format == FormatTraceContext && tc.in.Get("Tracestate") != "k=v" {
				t.Errorf("tracestate %q, want the parent's", tc.in.Get("Tracestate"))
			}
		})
	}
}

// TestRootSamplingRate: new traces are sampled at the configured rate,
// deciding on the trace ID as sdktrace.TraceIDRatioBased does.
func TestRootSamplingRate(t *testing.T) {
	for _, rate := range []float64{0, 0.01, 0.5, 1} {
		f := newFilter(t, rate, FormatTraceContext)
		const n = 20000
		sampled := 0
		ratio := sdktrace.TraceIDRatioBased(rate)
		for range n {
			tid, _ := f.t.newIDs(time.Now())
			got := f.root.sample(tid)
			if got {
				sampled++
			}
			want := ratio.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: tid}).Decision == sdktrace.RecordAndSample
			if got != want {
				t.Fatalf("rate %v, trace %s: sampled %v, TraceIDRatioBased says %v", rate, tid, got, want)
			}
		}
		if lo, hi := rate*n-4*math.Sqrt(n*rate+1), rate*n+4*math.Sqrt(n*rate+1); float64(sampled) < lo || float64(sampled) > hi {
			t.Errorf("rate %v: %d of %d sampled", rate, sampled, n)
		}
	}
	// A sampled new trace is the SDK's recording span.
	f := newFilter(t, 1, FormatTraceContext)
	h := http.Header{}
	span := f.start(h, time.Now())
	if span == nil || !span.IsRecording() || !span.SpanContext().IsSampled() {
		t.Fatalf("rate 1: span %v", span)
	}
	if want := "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"; h.Get("Traceparent") != want {
		t.Errorf("traceparent %q, want %q", h.Get("Traceparent"), want)
	}
}

// TestUnsampledRootAllocations: an unsampled new trace costs the filter
// the header values it forwards and nothing else: no span, no context.
// Allocation counts are deterministic, so this holds the cost in place.
func TestUnsampledRootAllocations(t *testing.T) {
	for _, tc := range []struct {
		formats []string
		want    float64 // each header's value, and one slice for them all
	}{
		{[]string{FormatTraceContext}, 2},
		{[]string{FormatXRay}, 2},
		{[]string{FormatB3Multi, FormatTraceContext}, 3},
	} {
		f := newFilter(t, 0, tc.formats...)
		h := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
		start := time.Now()
		got := testing.AllocsPerRun(1000, func() {
			f.t.clearHeaders(h) // a new request, without the last one's context
			if f.start(h, start) != nil {
				t.Fatal("rate 0 started a span")
			}
		})
		if got != tc.want {
			t.Errorf("%v: %v allocations per unsampled request, want %v", tc.formats, got, tc.want)
		}
	}
}

// BenchmarkFilterStart is the tracing filter's work at the start of a
// request with no trace headers, at 0 % (every request unsampled) and
// 100 %; "sdk, unsampled" is what the filter did for an unsampled request
// before it decided sampling first: the SDK's non-recording span and the
// propagators' injection.
func BenchmarkFilterStart(b *testing.B) {
	run := func(b *testing.B, rate float64, do func(f *filter, h http.Header, start time.Time)) {
		f := newFilter(b, rate, FormatTraceContext)
		h := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
		start := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			delete(h, "Traceparent") // a new request, without the last one's context
			do(f, h, start)
		}
	}
	b.Run("unsampled", func(b *testing.B) {
		run(b, 0, func(f *filter, h http.Header, start time.Time) { f.start(h, start) })
	})
	b.Run("sdk, unsampled", func(b *testing.B) {
		sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0)))).Tracer("b")
		run(b, 0, func(f *filter, h http.Header, start time.Time) {
			ctx := f.t.extract.Extract(context.Background(), carrier(h))
			ctx, _ = sdk.Start(ctx, f.name, f.kind, trace.WithTimestamp(start))
			f.t.clearHeaders(h)
			f.t.inject.Inject(ctx, carrier(h))
		})
	})
	b.Run("sampled", func(b *testing.B) {
		run(b, 1, func(f *filter, h http.Header, start time.Time) { f.start(h, start).End() })
	})
}

// TestHeadersAsWhenEveryRequestHadASpan: deciding sampling first changes
// no header the upstream gets. For each incoming context (none, W3C with
// and without trace state, B3 single and multiple headers sampled, not,
// deferred and debug, X-Ray, and broken ones) and at 0 % and 100 %, the
// filter's headers are those of the way it worked before: extraction, the
// SDK's span (recording or not) under ParentBased(TraceIDRatioBased), and
// the propagators' injection, with every ID the two make up at random
// masked.
func TestHeadersAsWhenEveryRequestHadASpan(t *testing.T) {
	const tid, sid = "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
	xrayRoot := "Root=1-" + tid[:8] + "-" + tid[8:] + ";Parent=" + sid
	inputs := []http.Header{
		{},
		{"Traceparent": {"00-" + tid + "-" + sid + "-01"}},
		{"Traceparent": {"00-" + tid + "-" + sid + "-00"}, "Tracestate": {"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}},
		{"Traceparent": {"00-" + tid + "-" + sid + "-02"}},
		{"Traceparent": {"garbage"}},
		{"B3": {tid + "-" + sid + "-1"}},
		{"B3": {tid + "-" + sid + "-0"}},
		{"B3": {tid + "-" + sid}},
		{"B3": {tid + "-" + sid + "-d"}},
		{"B3": {"0"}},
		{"B3": {"d"}},
		{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Sampled": {"0"}},
		{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}},
		{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Flags": {"1"}},
		{"X-B3-Sampled": {"0"}},
		{"X-Amzn-Trace-Id": {xrayRoot + ";Sampled=0"}},
		{"X-Amzn-Trace-Id": {xrayRoot + ";Sampled=1"}},
		{"X-Amzn-Trace-Id": {"Root=nonsense"}},
	}
	known := map[string]bool{tid: true, tid[:8]: true, tid[8:]: true, sid: true}
	ids := regexp.MustCompile(`[0-9a-f]{32}|[0-9a-f]{24}|[0-9a-f]{16}|[0-9a-f]{8}`)
	mask := func(h http.Header) string {
		var lines []string
		for k, vs := range h {
			for _, v := range vs {
				lines = append(lines, k+": "+ids.ReplaceAllStringFunc(v, func(s string) string {
					if known[s] {
						return s
					}
					return fmt.Sprintf("<%d new>", len(s))
				}))
			}
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	all := []string{FormatTraceContext, FormatB3, FormatB3Multi, FormatXRay}
	for _, rate := range []float64{0, 1} {
		f := newFilter(t, rate, all...)
		old := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(rate))),
			sdktrace.WithIDGenerator(xray.NewIDGenerator())).Tracer("before")
		for _, in := range inputs {
			got, want := in.Clone(), in.Clone()
			span := f.start(got, time.Now())
			ctx := f.t.extract.Extract(context.Background(), carrier(want))
			ctx, oldSpan := old.Start(ctx, f.name, f.kind)
			f.t.clearHeaders(want)
			f.t.inject.Inject(ctx, carrier(want))
			if g, w := mask(got), mask(want); g != w {
				t.Errorf("rate %v, request %v: upstream headers\n%s\nwant (a span for every request)\n%s", rate, in, g, w)
			}
			if (span != nil) != oldSpan.IsRecording() {
				t.Errorf("rate %v, request %v: span %v, want recording %v", rate, in, span != nil, oldSpan.IsRecording())
			}
		}
	}
}
