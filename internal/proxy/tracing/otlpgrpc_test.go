package tracing

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*collectortrace.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, r *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestOTLPGRPCEncoding sends spans of two resources, with every attribute
// type, events, links, statuses and parents, through the hand-written
// exporter to a real OTLP/gRPC collector, which decodes them with the
// OTLP Go structs: every field arrives as the SDK recorded it.
func TestOTLPGRPCEncoding(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, col)
	go gs.Serve(ln) // ends with Stop below
	defer gs.Stop()

	rec := tracetest.NewSpanRecorder()
	var spans []sdktrace.ReadOnlySpan
	for _, svc := range []string{"one", "two"} {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", svc), attribute.Int64("n", 7))))
		tr := tp.Tracer("scope-"+svc, trace.WithInstrumentationVersion("v1"))
		remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled, Remote: true})
		ctx, root := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "root "+svc, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithLinks(trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("l", "x")}}))
		_, child := tr.Start(ctx, "child", trace.WithSpanKind(trace.SpanKindClient))
		child.SetAttributes(attribute.String("s", "text"), attribute.Int64("i", -42), attribute.Bool("b", true), attribute.Float64("f", 2.5),
			attribute.StringSlice("ss", []string{"a", "b"}))
		child.AddEvent("ev", trace.WithAttributes(attribute.Int("k", 1)), trace.WithTimestamp(time.Unix(10, 5)))
		child.SetStatus(codes.Error, "it broke")
		child.End()
		root.SetStatus(codes.Ok, "")
		root.End()
	}
	spans = rec.Ended()

	exp, err := newOTLPGRPC(Config{Endpoint: ln.Addr().String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 { // the second export reuses the buffers
		if err := exp.ExportSpans(ctx, spans); err != nil {
			t.Fatal(err)
		}
	}
	if len(col.reqs) != 2 {
		t.Fatalf("%d requests", len(col.reqs))
	}
	for _, req := range col.reqs {
		rss := req.GetResourceSpans()
		if len(rss) != 2 {
			t.Fatalf("%d resource spans, want one per resource", len(rss))
		}
		var got []*tracepb.Span
		for i, rs := range rss {
			res := kvs(rs.GetResource().GetAttributes())
			if want := []string{"one", "two"}[i]; res["service.name"] != want || res["n"] != "7" {
				t.Errorf("resource %d: %v", i, res)
			}
			if ss := rs.GetScopeSpans(); len(ss) != 1 || ss[0].GetScope().GetName() != "scope-"+res["service.name"] || ss[0].GetScope().GetVersion() != "v1" {
				t.Errorf("scope spans %v", ss)
			}
			got = append(got, rs.GetScopeSpans()[0].GetSpans()...)
		}
		if len(got) != len(spans) {
			t.Fatalf("%d spans, want %d", len(got), len(spans))
		}
		for i, s := range spans {
			g := got[i]
			sc := s.SpanContext()
			tid, sid, pid := sc.TraceID(), sc.SpanID(), s.Parent().SpanID()
			if !bytes.Equal(g.GetTraceId(), tid[:]) || !bytes.Equal(g.GetSpanId(), sid[:]) || !bytes.Equal(g.GetParentSpanId(), pid[:]) {
				t.Errorf("%s: ids %x %x %x", s.Name(), g.GetTraceId(), g.GetSpanId(), g.GetParentSpanId())
			}
			if g.GetName() != s.Name() || int(g.GetKind()) != int(s.SpanKind()) ||
				g.GetStartTimeUnixNano() != uint64(s.StartTime().UnixNano()) || g.GetEndTimeUnixNano() != uint64(s.EndTime().UnixNano()) {
				t.Errorf("%s: name %q kind %v times %d %d", s.Name(), g.GetName(), g.GetKind(), g.GetStartTimeUnixNano(), g.GetEndTimeUnixNano())
			}
			wantFlags := uint32(0x101)
			if s.Parent().IsRemote() {
				wantFlags |= 0x200
			}
			if g.GetFlags() != wantFlags {
				t.Errorf("%s: flags %x, want %x", s.Name(), g.GetFlags(), wantFlags)
			}
			switch s.Name() {
			case "child":
				a := kvs(g.GetAttributes())
				if a["s"] != "text" || a["i"] != "-42" || a["b"] != "true" || a["f"] != "2.5" || a["ss"] != `["a","b"]` {
					t.Errorf("child attributes %v", a)
				}
				if g.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR || g.GetStatus().GetMessage() != "it broke" {
					t.Errorf("child status %v", g.GetStatus())
				}
				if ev := g.GetEvents(); len(ev) != 1 || ev[0].GetName() != "ev" || ev[0].GetTimeUnixNano() != uint64(time.Unix(10, 5).UnixNano()) || kvs(ev[0].GetAttributes())["k"] != "1" {
					t.Errorf("child events %v", ev)
				}
			default:
				if g.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_OK {
					t.Errorf("root status %v", g.GetStatus())
				}
				l := g.GetLinks()
				if len(l) != 1 || !bytes.Equal(l[0].GetTraceId(), []byte{1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) || kvs(l[0].GetAttributes())["l"] != "x" || l[0].GetFlags() != 0x301 {
					t.Errorf("root links %v", l)
				}
			}
		}
	}
}

// kvs renders OTLP attributes as text, by key.
func kvs(attrs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range attrs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = attribute.Int64Value(v.GetIntValue()).Emit()
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = attribute.BoolValue(v.GetBoolValue()).Emit()
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = attribute.Float64Value(v.GetDoubleValue()).Emit()
		default:
			m[kv.GetKey()] = v.GetStringValue()
		}
	}
	return m
}
