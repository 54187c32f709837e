package tracing

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// otlpGRPC exports spans over OTLP/gRPC, writing the protobuf of the
// export request straight from the SDK's finished spans into one buffer
// reused by every export.
//
// Why not the SDK's otlptracegrpc exporter: it converts each span into
// the generated OTLP structs first (a pointer per attribute, value and
// span) and marshals those; in a CPU profile of 100 % sampling
// (go test -run XXX -bench HTTPOneHopTracing/100pct -cpuprofile, in
// internal/proxy) that conversion and marshalling were about a third of
// what tracing cost. With this exporter the same benchmark (-benchmem;
// client, proxy, backend and collector in one process) goes from 314 to
// 262 allocs/op and from 25.6 to 22.6 KB/op. docs/bench/proxy.md
// ("Observability overhead") has the sidecar's CPU before and after
// this exporter and the cheaper spans, together.
//
// The exporter alone: both send the same 256 proxy-shaped spans to a
// collector in the same process (go test -run XXX -bench OTLPGRPCExport
// -benchtime 200x -count 3 ./internal/proxy/tracing/; 2 vCPU shared with
// other builds, load average 5-7, 2026-12-02). Per batch: 32,270
// allocations and 1.70-1.74 MB with the SDK's exporter, 19,930 and
// 0.94-1.02 MB with this one (most of what remains is the collector's
// decoding, the same for both), so about 48 allocations and 2.9 KB less
// per span; 17.0-18.4 against 9.6-10.2 us of wall time per span, a
// figure the machine's load makes rough.
//
// The request is the SDK exporter's, field for field
// (TestOTLPGRPCEncoding sends the same spans through both and compares
// the decoded requests), except that a link's trace state is sent too.
// As with OTLP/HTTP (the SDK's exporter, retries off), a failed export
// is not retried: the queue drops the batch and counts it, and bounds
// each export by Config.ExportTimeout.
type otlpGRPC struct {
	conn *grpc.ClientConn
	buf  []byte // the request, reused; only the queue's goroutine exports
	span []byte // one span's encoding, reused
	ev   []byte // one event's or link's encoding, reused
}

const otlpExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

func newOTLPGRPC(cfg Config) (*otlpGRPC, error) {
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("otlp grpc %s: %w", cfg.Endpoint, err)
	}
	return &otlpGRPC{conn: conn}, nil
}

func (e *otlpGRPC) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	e.buf = e.encode(e.buf[:0], spans)
	req := e.buf
	var resp []byte
	if err := e.conn.Invoke(ctx, otlpExportMethod, &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		// The transport may still hold the request's bytes: the next
		// export writes into a new buffer.
		e.buf = nil
		return fmt.Errorf("otlp export: %w", err)
	}
	return nil
}

func (e *otlpGRPC) Shutdown(context.Context) error { return e.conn.Close() }

// rawCodec sends a request already encoded (*[]byte) and keeps the
// response's bytes, which weft does not read (partial success is not
// reported).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

// Field numbers of opentelemetry/proto/collector/trace/v1 and
// opentelemetry/proto/trace/v1, common/v1, resource/v1.
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest.resource_spans

	fRSResource   = 1 // ResourceSpans
	fRSScopeSpans = 2
	fRSSchemaURL  = 3

	fResAttributes = 1 // Resource

	fSSScope     = 1 // ScopeSpans
	fSSSpans     = 2
	fSSSchemaURL = 3

	fScopeName       = 1 // InstrumentationScope
	fScopeVersion    = 2
	fScopeAttributes = 3

	fSpanTraceID     = 1 // Span
	fSpanSpanID      = 2
	fSpanTraceState  = 3
	fSpanParentID    = 4
	fSpanName        = 5
	fSpanKind        = 6
	fSpanStart       = 7
	fSpanEnd         = 8
	fSpanAttributes  = 9
	fSpanDroppedAttr = 10
	fSpanEvents      = 11
	fSpanDroppedEv   = 12
	fSpanLinks       = 13
	fSpanDroppedLink = 14
	fSpanStatus      = 15
	fSpanFlags       = 16

	fEvTime       = 1 // Span.Event
	fEvName       = 2
	fEvAttributes = 3
	fEvDropped    = 4

	fLinkTraceID    = 1 // Span.Link
	fLinkSpanID     = 2
	fLinkTraceState = 3
	fLinkAttributes = 4
	fLinkDropped    = 5
	fLinkFlags      = 6

	fStatusMessage = 2 // Status
	fStatusCode    = 3

	fKVKey   = 1 // KeyValue
	fKVValue = 2

	fAnyString = 1 // AnyValue
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5 // ArrayValue
	fAnyKVList = 6 // KeyValueList
	fAnyBytes  = 7

	fListValues = 1 // ArrayValue.values, KeyValueList.values

	// Span.flags: the W3C trace flags, and whether the parent's
	// remoteness is known and true.
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// encode appends the ExportTraceServiceRequest of spans to b: one
// ResourceSpans per run of spans with the same resource and scope (a
// proxy's spans all share one).
func (e *otlpGRPC) encode(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	for i := 0; i < len(spans); {
		res, scope := spans[i].Resource(), spans[i].InstrumentationScope()
		j := i + 1
		for j < len(spans) && spans[j].Resource() == res && spans[j].InstrumentationScope() == scope {
			j++
		}
		b = e.resourceSpans(b, res, scope, spans[i:j])
		i = j
	}
	return b
}

func (e *otlpGRPC) resourceSpans(b []byte, res *resource.Resource, scope instrumentation.Scope, spans []sdktrace.ReadOnlySpan) []byte {
	// ScopeSpans: the scope, then each span; its length is known once
	// the spans are encoded, so they go to the end of b first and the
	// headers are inserted before them.
	start := len(b)
	for _, s := range spans {
		e.span = e.encodeSpan(e.span[:0], s)
		b = protowire.AppendTag(b, fSSSpans, protowire.BytesType)
		b = protowire.AppendBytes(b, e.span)
	}
	scopeAttrs := scope.Attributes.ToSlice()
	scopeLen := protowire.SizeTag(fScopeName) + protowire.SizeBytes(len(scope.Name))
	if scope.Version != "" {
		scopeLen += protowire.SizeTag(fScopeVersion) + protowire.SizeBytes(len(scope.Version))
	}
	for _, kv := range scopeAttrs {
		scopeLen += protowire.SizeTag(fScopeAttributes) + protowire.SizeBytes(kvSize(kv))
	}
	ssLen := len(b) - start
	if scope != (instrumentation.Scope{}) { // the SDK's exporter sends no scope then
		ssLen += protowire.SizeTag(fSSScope) + protowire.SizeBytes(scopeLen)
	}
	if scope.SchemaURL != "" {
		ssLen += protowire.SizeTag(fSSSchemaURL) + protowire.SizeBytes(len(scope.SchemaURL))
	}
	var resLen int
	var attrs []attribute.KeyValue
	rsLen := protowire.SizeTag(fRSScopeSpans) + protowire.SizeBytes(ssLen)
	if res != nil {
		attrs = res.Attributes()
		for _, kv := range attrs {
			resLen += protowire.SizeTag(fResAttributes) + protowire.SizeBytes(kvSize(kv))
		}
		rsLen += protowire.SizeTag(fRSResource) + protowire.SizeBytes(resLen)
		if u := res.SchemaURL(); u != "" {
			rsLen += protowire.SizeTag(fRSSchemaURL) + protowire.SizeBytes(len(u))
		}
	}

	var h []byte
	h = protowire.AppendTag(h, fReqResourceSpans, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(rsLen))
	if res != nil {
		h = protowire.AppendTag(h, fRSResource, protowire.BytesType)
		h = protowire.AppendVarint(h, uint64(resLen))
		for _, kv := range attrs {
			h = appendKV(h, fResAttributes, kv)
		}
	}
	h = protowire.AppendTag(h, fRSScopeSpans, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(ssLen))
	if scope != (instrumentation.Scope{}) {
		h = protowire.AppendTag(h, fSSScope, protowire.BytesType)
		h = protowire.AppendVarint(h, uint64(scopeLen))
		h = protowire.AppendTag(h, fScopeName, protowire.BytesType)
		h = protowire.AppendString(h, scope.Name)
		if scope.Version != "" {
			h = protowire.AppendTag(h, fScopeVersion, protowire.BytesType)
			h = protowire.AppendString(h, scope.Version)
		}
		for _, kv := range scopeAttrs {
			h = appendKV(h, fScopeAttributes, kv)
		}
	}
	// Insert h before the spans; the schema URLs, fields after the spans,
	// go at the end.
	b = append(b, h...)
	copy(b[start+len(h):], b[start:len(b)-len(h)])
	copy(b[start:], h)
	if scope.SchemaURL != "" {
		b = protowire.AppendTag(b, fSSSchemaURL, protowire.BytesType)
		b = protowire.AppendString(b, scope.SchemaURL)
	}
	if res != nil && res.SchemaURL() != "" {
		b = protowire.AppendTag(b, fRSSchemaURL, protowire.BytesType)
		b = protowire.AppendString(b, res.SchemaURL())
	}
	return b
}

func (e *otlpGRPC) encodeSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = protowire.AppendTag(b, fSpanTraceID, protowire.BytesType)
	b = protowire.AppendBytes(b, tid[:])
	b = protowire.AppendTag(b, fSpanSpanID, protowire.BytesType)
	b = protowire.AppendBytes(b, sid[:])
	if ts := sc.TraceState().String(); ts != "" {
		b = protowire.AppendTag(b, fSpanTraceState, protowire.BytesType)
		b = protowire.AppendString(b, ts)
	}
	flags := uint32(sc.TraceFlags()) | flagHasIsRemote
	if p := s.Parent(); p.IsValid() {
		pid := p.SpanID()
		b = protowire.AppendTag(b, fSpanParentID, protowire.BytesType)
		b = protowire.AppendBytes(b, pid[:])
		if p.IsRemote() {
			flags |= flagIsRemote
		}
	}
	b = protowire.AppendTag(b, fSpanName, protowire.BytesType)
	b = protowire.AppendString(b, s.Name())
	if k := s.SpanKind(); k != trace.SpanKindUnspecified {
		b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(k)) // the same numbers as OTLP's
	}
	b = protowire.AppendTag(b, fSpanStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.StartTime()))
	b = protowire.AppendTag(b, fSpanEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.EndTime()))
	for _, kv := range s.Attributes() {
		b = appendKV(b, fSpanAttributes, kv)
	}
	b = appendCount(b, fSpanDroppedAttr, s.DroppedAttributes())
	for _, ev := range s.Events() {
		e.ev = protowire.AppendTag(e.ev[:0], fEvTime, protowire.Fixed64Type)
		e.ev = protowire.AppendFixed64(e.ev, unixNano(ev.Time))
		e.ev = protowire.AppendTag(e.ev, fEvName, protowire.BytesType)
		e.ev = protowire.AppendString(e.ev, ev.Name)
		for _, kv := range ev.Attributes {
			e.ev = appendKV(e.ev, fEvAttributes, kv)
		}
		e.ev = appendCount(e.ev, fEvDropped, ev.DroppedAttributeCount)
		b = protowire.AppendTag(b, fSpanEvents, protowire.BytesType)
		b = protowire.AppendBytes(b, e.ev)
	}
	b = appendCount(b, fSpanDroppedEv, s.DroppedEvents())
	for _, l := range s.Links() {
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		e.ev = protowire.AppendTag(e.ev[:0], fLinkTraceID, protowire.BytesType)
		e.ev = protowire.AppendBytes(e.ev, ltid[:])
		e.ev = protowire.AppendTag(e.ev, fLinkSpanID, protowire.BytesType)
		e.ev = protowire.AppendBytes(e.ev, lsid[:])
		if ts := l.SpanContext.TraceState().String(); ts != "" {
			e.ev = protowire.AppendTag(e.ev, fLinkTraceState, protowire.BytesType)
			e.ev = protowire.AppendString(e.ev, ts)
		}
		for _, kv := range l.Attributes {
			e.ev = appendKV(e.ev, fLinkAttributes, kv)
		}
		e.ev = appendCount(e.ev, fLinkDropped, l.DroppedAttributeCount)
		lflags := uint32(l.SpanContext.TraceFlags()) | flagHasIsRemote
		if l.SpanContext.IsRemote() {
			lflags |= flagIsRemote
		}
		e.ev = protowire.AppendTag(e.ev, fLinkFlags, protowire.Fixed32Type)
		e.ev = protowire.AppendFixed32(e.ev, lflags)
		b = protowire.AppendTag(b, fSpanLinks, protowire.BytesType)
		b = protowire.AppendBytes(b, e.ev)
	}
	b = appendCount(b, fSpanDroppedLink, s.DroppedLinks())
	// The status always goes, as the SDK's exporter sends it: code
	// UNSET (0, not written) and no message is an empty Status.
	st := s.Status()
	var code uint64 // STATUS_CODE_UNSET
	switch st.Code {
	case codes.Ok:
		code = 1 // STATUS_CODE_OK
	case codes.Error:
		code = 2 // STATUS_CODE_ERROR
	}
	n := 0
	if st.Description != "" {
		n += protowire.SizeTag(fStatusMessage) + protowire.SizeBytes(len(st.Description))
	}
	if code != 0 {
		n += protowire.SizeTag(fStatusCode) + protowire.SizeVarint(code)
	}
	b = protowire.AppendTag(b, fSpanStatus, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	if st.Description != "" {
		b = protowire.AppendTag(b, fStatusMessage, protowire.BytesType)
		b = protowire.AppendString(b, st.Description)
	}
	if code != 0 {
		b = protowire.AppendTag(b, fStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, code)
	}
	b = protowire.AppendTag(b, fSpanFlags, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, flags)
}

func appendCount(b []byte, field protowire.Number, n int) []byte {
	if n <= 0 {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(n))
}

// unixNano is t in OTLP's fixed64 nanoseconds; times before 1970 are 0,
// as the SDK's exporter sends them.
func unixNano(t time.Time) uint64 { return uint64(max(0, t.UnixNano())) }

// anyValue returns the AnyValue field and payload of v: strings, bools,
// integers and floats as themselves; bytes, slices and maps (weft
// proxy's spans have none: they are encoded here, with allocations) as
// their encoded payload in s. Field 0 is an empty AnyValue.
func anyValue(v attribute.Value) (field protowire.Number, s string, u uint64) {
	switch v.Type() {
	case attribute.BOOL:
		if v.AsBool() {
			return fAnyBool, "", 1
		}
		return fAnyBool, "", 0
	case attribute.INT64:
		return fAnyInt, "", uint64(v.AsInt64())
	case attribute.FLOAT64:
		return fAnyDouble, "", math.Float64bits(v.AsFloat64())
	case attribute.STRING:
		return fAnyString, v.AsString(), 0
	case attribute.BYTESLICE:
		return fAnyBytes, string(v.AsByteSlice()), 0
	case attribute.BOOLSLICE:
		return fAnyArray, string(appendArray(nil, v.AsBoolSlice(), attribute.BoolValue)), 0
	case attribute.INT64SLICE:
		return fAnyArray, string(appendArray(nil, v.AsInt64Slice(), attribute.Int64Value)), 0
	case attribute.FLOAT64SLICE:
		return fAnyArray, string(appendArray(nil, v.AsFloat64Slice(), attribute.Float64Value)), 0
	case attribute.STRINGSLICE:
		return fAnyArray, string(appendArray(nil, v.AsStringSlice(), attribute.StringValue)), 0
	case attribute.SLICE:
		return fAnyArray, string(appendArray(nil, v.AsSlice(), func(v attribute.Value) attribute.Value { return v })), 0
	case attribute.MAP:
		var l []byte // KeyValueList
		for _, kv := range v.AsMap() {
			l = appendKV(l, fListValues, kv)
		}
		return fAnyKVList, string(l), 0
	case attribute.EMPTY:
		return 0, "", 0
	}
	return fAnyString, "INVALID", 0 // as the SDK's exporter
}

// appendArray appends the values of an ArrayValue to b.
func appendArray[T any](b []byte, vs []T, val func(T) attribute.Value) []byte {
	for _, x := range vs {
		f, s, u := anyValue(val(x))
		b = protowire.AppendTag(b, fListValues, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(anySize(f, s, u)))
		b = appendAny(b, f, s, u)
	}
	return b
}

func anySize(field protowire.Number, s string, u uint64) int {
	switch field {
	case 0:
		return 0
	case fAnyBool, fAnyInt:
		return protowire.SizeTag(field) + protowire.SizeVarint(u)
	case fAnyDouble:
		return protowire.SizeTag(field) + protowire.SizeFixed64()
	}
	return protowire.SizeTag(field) + protowire.SizeBytes(len(s))
}

// appendAny appends the fields of an AnyValue (anyValue's result) to b.
func appendAny(b []byte, field protowire.Number, s string, u uint64) []byte {
	switch field {
	case 0:
		return b
	case fAnyBool, fAnyInt:
		b = protowire.AppendTag(b, field, protowire.VarintType)
		return protowire.AppendVarint(b, u)
	case fAnyDouble:
		b = protowire.AppendTag(b, field, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, u)
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func kvSize(kv attribute.KeyValue) int {
	f, s, u := anyValue(kv.Value)
	return protowire.SizeTag(fKVKey) + protowire.SizeBytes(len(kv.Key)) + protowire.SizeTag(fKVValue) + protowire.SizeBytes(anySize(f, s, u))
}

// appendKV appends kv as a KeyValue in field of its message.
func appendKV(b []byte, field protowire.Number, kv attribute.KeyValue) []byte {
	f, s, u := anyValue(kv.Value)
	an := anySize(f, s, u)
	n := protowire.SizeTag(fKVKey) + protowire.SizeBytes(len(kv.Key)) + protowire.SizeTag(fKVValue) + protowire.SizeBytes(an)
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, fKVKey, protowire.BytesType)
	b = protowire.AppendString(b, string(kv.Key))
	b = protowire.AppendTag(b, fKVValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(an))
	return appendAny(b, f, s, u)
}
