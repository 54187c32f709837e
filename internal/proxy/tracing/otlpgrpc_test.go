package tracing

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/otlptest"
)

// TestOTLPGRPCEncoding sends the same spans through the hand-written
// exporter and through the SDK's otlptracegrpc exporter to a real
// OTLP/gRPC collector, which decodes both with the OTLP Go structs: the
// two requests must be equal, field for field. The spans cover every
// field the SDK's exporter sends: two resources (one with a schema URL),
// scopes with versions, schema URLs and attributes, every attribute type,
// events, links, trace state, each status, remote and local parents, and
// dropped attribute, event and link counts.
func TestOTLPGRPCEncoding(t *testing.T) {
	col := otlptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rec := tracetest.NewSpanRecorder()
	ts, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	limits := sdktrace.NewSpanLimits()
	limits.AttributeCountLimit, limits.EventCountLimit, limits.LinkCountLimit = 12, 1, 1
	limits.AttributePerEventCountLimit, limits.AttributePerLinkCountLimit = 1, 1
	for i, res := range []*resource.Resource{
		resource.NewSchemaless(attribute.String("service.name", "one"), attribute.Int64("n", 7)),
		resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "two")),
	} {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res), sdktrace.WithRawSpanLimits(limits))
		opts := []trace.TracerOption{trace.WithInstrumentationVersion("v1")}
		if i == 1 {
			opts = append(opts, trace.WithSchemaURL("https://example.com/schema"), trace.WithInstrumentationAttributes(attribute.Bool("scoped", true)))
		}
		tr := tp.Tracer("scope", opts...)
		remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5},
			TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
		ctx, root := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "root", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithLinks(trace.Link{SpanContext: remote}, // the oldest link and event go over the limits
				trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("l", "x"), attribute.String("m", "y")}}))
		_, child := tr.Start(ctx, "child", trace.WithSpanKind(trace.SpanKindClient))
		child.SetAttributes(attribute.String("s", "text"), attribute.Int64("i", -42), attribute.Bool("b", true), attribute.Float64("f", 2.5),
			attribute.StringSlice("ss", []string{"a", "b"}), attribute.Int64Slice("is", []int64{1, -2}),
			attribute.BoolSlice("bs", []bool{true, false}), attribute.Float64Slice("fs", []float64{0.5}),
			attribute.ByteSlice("bytes", []byte{0, 1}), attribute.Slice("mixed", attribute.IntValue(3), attribute.StringValue("x")),
			attribute.Map("map", attribute.String("k", "v"), attribute.Int("n", 2)), attribute.KeyValue{Key: "empty"},
			attribute.String("over", "the limit"))
		child.AddEvent("over the limit")
		child.AddEvent("ev", trace.WithAttributes(attribute.Int("k", 1), attribute.Int("j", 2)), trace.WithTimestamp(time.Unix(10, 5)))
		child.SetStatus(codes.Error, "it broke")
		child.End()
		_, internal := tr.Start(ctx, "internal") // no kind set, status unset
		internal.End()
		root.SetStatus(codes.Ok, "")
		root.End()
	}
	spans := rec.Ended()
	if c, r := spans[0], spans[2]; c.DroppedAttributes() == 0 || c.DroppedEvents() == 0 || c.Events()[0].DroppedAttributeCount == 0 ||
		r.DroppedLinks() == 0 || r.Links()[0].DroppedAttributeCount == 0 {
		t.Fatalf("spans %s and %s should have dropped attributes, events and links", c.Name(), r.Name())
	}

	sdkExp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(col.Addr), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer sdkExp.Shutdown(context.Background())
	if err := sdkExp.ExportSpans(ctx, spans); err != nil {
		t.Fatal(err)
	}
	exp, err := newOTLPGRPC(Config{Endpoint: col.Addr, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background())
	for range 2 { // the second export reuses the buffers
		if err := exp.ExportSpans(ctx, spans); err != nil {
			t.Fatal(err)
		}
	}

	reqs := col.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	want := canonical(reqs[0])
	if n := len(want.GetResourceSpans()); n != 2 {
		t.Fatalf("the SDK's exporter sent %d resource spans, want 2", n)
	}
	for i, req := range reqs[1:] {
		got := canonical(req)
		// The SDK's exporter leaves a link's trace state out; OTLP has a
		// field for it, which weft sends.
		for _, rs := range got.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					for _, l := range s.GetLinks() {
						if l.GetTraceState() != "vendor=value" {
							t.Errorf("export %d: span %s: link trace state %q", i+1, s.GetName(), l.GetTraceState())
						}
						l.TraceState = ""
					}
				}
			}
		}
		if !proto.Equal(want, got) {
			t.Errorf("export %d: hand-written request differs from the SDK's\nSDK:\n%s\nweft:\n%s", i+1, prototext.Format(want), prototext.Format(got))
		}
	}
}

// canonical returns req with its resource spans in service name order
// (the SDK's exporter sends them in a map's order).
func canonical(req *collectortrace.ExportTraceServiceRequest) *collectortrace.ExportTraceServiceRequest {
	req = proto.Clone(req).(*collectortrace.ExportTraceServiceRequest)
	name := func(i int) string {
		for _, kv := range req.ResourceSpans[i].GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				return kv.GetValue().GetStringValue()
			}
		}
		return ""
	}
	idx := make([]int, len(req.ResourceSpans))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(name(a), name(b)) })
	rss := req.ResourceSpans
	req.ResourceSpans = nil
	for _, i := range idx {
		req.ResourceSpans = append(req.ResourceSpans, rss[i])
	}
	return req
}

// BenchmarkOTLPGRPCExport exports batches of 256 spans shaped like weft
// proxy's (eleven to fourteen attributes, a remote parent, the proxy's
// resource) to a real collector, through the SDK's otlptracegrpc exporter
// and through weft's: the cost of the exporter alone, per span.
func BenchmarkOTLPGRPCExport(b *testing.B) {
	col := otlptest.StartDiscard(b)
	rec := tracetest.NewSpanRecorder()
	res := resource.NewSchemaless(attribute.String("service.name", "mesh/m/virtualNode/a"), attribute.String("aws.appmesh.mesh", "m"),
		attribute.String("aws.appmesh.virtual_node", "a"), attribute.String("component", "proxy"),
		attribute.String("node_id", "mesh/m/virtualNode/a"), attribute.String("zone", ""))
	tr := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res)).Tracer("weft-proxy")
	parent := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true}))
	for i := range 256 {
		_, s := tr.Start(parent, "egress colors.m.local", trace.WithSpanKind(trace.SpanKindClient))
		s.SetAttributes(attribute.String("guid:x-request-id", "6a3c9a1e-1f0b-4c8e-9b8e-"+strconv.Itoa(100000+i)),
			attribute.String("http.url", "http://colors.m.local/color"), attribute.String("http.method", "GET"),
			attribute.String("downstream_cluster", "-"), attribute.String("user_agent", "curl/8.0"),
			attribute.String("http.protocol", "HTTP/1.1"), attribute.String("peer.address", "127.0.0.1:41234"),
			attribute.Int64("request_size", 0), attribute.Int64("response_size", 5), attribute.String("http.status_code", "200"),
			attribute.String("response_flags", "-"), attribute.String("upstream_cluster", "cds_egress_m_colors_http_8080"),
			attribute.String("upstream_cluster.name", "cds_egress_m_colors_http_8080"), attribute.String("upstream_address", "10.0.0.7:8080"))
		s.End()
	}
	spans := rec.Ended()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		new  func() (sdktrace.SpanExporter, error)
	}{
		{"sdk", func() (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(col.Addr), otlptracegrpc.WithInsecure())
		}},
		{"weft", func() (sdktrace.SpanExporter, error) { return newOTLPGRPC(Config{Endpoint: col.Addr, Insecure: true}) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			exp, err := c.new()
			if err != nil {
				b.Fatal(err)
			}
			defer exp.Shutdown(ctx)
			b.ReportAllocs()
			for b.Loop() {
				if err := exp.ExportSpans(ctx, spans); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
		})
	}
}
