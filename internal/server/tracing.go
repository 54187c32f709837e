package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/weftmesh/weft/internal/store"
)

// Limits of the span exporter: spans wait in a queue of
// DefaultTraceQueue and leave in batches every DefaultTraceBatchTimeout;
// when the collector is slow or away, the queue drops spans rather than
// slowing the API.
const (
	DefaultTraceQueue        = 2048
	DefaultTraceBatchTimeout = time.Second
	traceExportTimeout       = 10 * time.Second
)

// tracerName is the instrumentation scope of weft server's spans.
const tracerName = "github.com/weftmesh/weft/internal/server"

// newTracing returns the tracer provider of the API's spans, exporting
// over OTLP/gRPC to endpoint, and its shutdown (which flushes). endpoint
// is a URL (http:// for plaintext, https:// for TLS) or host:port (TLS,
// plaintext on loopback); "" gives a provider that records nothing.
func newTracing(ctx context.Context, endpoint string) (trace.TracerProvider, func(context.Context) error, error) {
	if endpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	var opt []otlptracegrpc.Option
	if u, err := url.Parse(endpoint); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		opt = append(opt, otlptracegrpc.WithEndpointURL(endpoint))
	} else {
		host, _, err := net.SplitHostPort(endpoint)
		if err != nil {
			return nil, nil, fmt.Errorf("otlp endpoint %q: want http(s)://host:port or host:port", endpoint)
		}
		opt = append(opt, otlptracegrpc.WithEndpoint(endpoint))
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			opt = append(opt, otlptracegrpc.WithInsecure())
		}
	}
	opt = append(opt, otlptracegrpc.WithTimeout(traceExportTimeout))
	exp, err := otlptracegrpc.New(ctx, opt...)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("weft-server"))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(DefaultTraceQueue), sdktrace.WithBatchTimeout(DefaultTraceBatchTimeout)),
		sdktrace.WithResource(res),
	)
	return tp, tp.Shutdown, nil
}

// traceWrites starts one trace per API write (any method but GET and
// HEAD): its root span is the request; the spans of validation and of the
// store commit are its children, found through the request's context.
func traceWrites(tp trace.TracerProvider, next http.Handler) http.Handler {
	tr := tp.Tracer(tracerName)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		ctx, span := tr.Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.URLPath(r.URL.Path)))
		defer span.End()
		if t := r.Header.Get("X-Amz-Target"); t != "" {
			span.SetAttributes(attribute.String("rpc.method", t))
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// statusWriter remembers the response status.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// tracedStore is a store whose writes are spans ("store commit") of the
// trace in their context; reads and watches pass through.
type tracedStore struct {
	store.Store
	tr     trace.Tracer
	pushes *pushTracer // nil: pushes are not traced
}

func (t tracedStore) Update(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
		return t.Store.Update(ctx, fn)
	}
	parent, began := ctx, time.Now()
	ctx, span := t.tr.Start(ctx, "store commit")
	defer span.End()
	rev, err := t.Store.Update(ctx, fn)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(attribute.Int64("weft.store.revision", int64(rev)))
		if t.pushes != nil {
			t.pushes.wrote(parent, rev, began)
		}
	}
	return rev, err
}
