// Package tracing is weft proxy's distributed tracing, built on the
// OpenTelemetry Go SDK. It plugs into the HTTP connection manager as the
// first HTTP filter of every connection manager whose configuration has a
// tracing block (weft server always sends one, as App Mesh did), and
// records one span per request, as Envoy does: a server span on ingress,
// a client span on egress, with Envoy's span names and tags.
//
// Context arrives in any of W3C traceparent/tracestate, B3 (single or
// multiple headers) and X-Ray's X-Amzn-Trace-Id, and leaves in the
// configured formats; every trace header weft proxy knows is replaced, so
// that the upstream never sees a stale context next to the new one.
// Sampling is head based and parent based: a request with a sampled (or
// unsampled) parent follows it, a new trace is sampled at the configured
// rate. Spans are exported over OTLP (gRPC or HTTP) or as X-Ray segments
// to the X-Ray daemon, from a bounded queue: a slow or absent collector
// costs dropped spans (counted in tracing.spans_dropped), never request
// latency.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/propagators/aws/xray"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Exporters.
const (
	ExporterOTLPGRPC = "otlp-grpc"
	ExporterOTLPHTTP = "otlp-http"
	ExporterXRay     = "xray"
)

// Propagation formats.
const (
	FormatTraceContext = "tracecontext" // W3C traceparent, tracestate
	FormatB3           = "b3"           // B3 single header
	FormatB3Multi      = "b3multi"      // X-B3-TraceId, X-B3-SpanId, X-B3-Sampled ...
	FormatXRay         = "xray"         // X-Amzn-Trace-Id
)

// Limits.
const (
	// DefaultQueueSize bounds the finished spans waiting for export; more
	// are dropped and counted. (The exporter holds at most as many again:
	// those it took and is sending.)
	DefaultQueueSize = 2048
	// DefaultBatchSize is the most spans sent in one export.
	DefaultBatchSize = 256
	// DefaultExportTimeout bounds one export call.
	DefaultExportTimeout = 10 * time.Second
	// batchDelay is the longest a finished span waits for a batch.
	batchDelay = time.Second
	// shutdownFlush bounds the last export when the proxy stops.
	shutdownFlush = 2 * time.Second
)

// Config configures tracing for one proxy.
type Config struct {
	// Exporter is ExporterOTLPGRPC, ExporterOTLPHTTP or ExporterXRay.
	Exporter string
	// Endpoint: host:port for OTLP gRPC and the X-Ray daemon (UDP);
	// a URL (http://host:4318/v1/traces) or host:port for OTLP HTTP.
	Endpoint string
	// Insecure sends OTLP without TLS. Without it, OTLP uses TLS with the
	// system roots.
	Insecure bool
	// SampleRate is the fraction (0..1) of new traces sampled; requests
	// with a parent follow the parent's decision.
	SampleRate float64
	// Propagation lists the formats injected upstream; all known formats
	// are extracted. Empty: tracecontext, plus xray with the X-Ray exporter.
	Propagation []string
	// ServiceName is the OpenTelemetry service.name and the X-Ray
	// segment name; Mesh and Resource name the App Mesh resource
	// (Resource is the virtual node or gateway), ResourceType is
	// "virtual_node" or "virtual_gateway"; NodeID is Envoy's node_id tag.
	ServiceName, Mesh, Resource, ResourceType, NodeID string
	// QueueSize, BatchSize and ExportTimeout default to DefaultQueueSize,
	// DefaultBatchSize and DefaultExportTimeout.
	QueueSize     int
	BatchSize     int
	ExportTimeout time.Duration
}

// Validate checks c, naming the bad setting.
func (c *Config) Validate() error {
	switch c.Exporter {
	case ExporterOTLPGRPC, ExporterOTLPHTTP, ExporterXRay:
	default:
		return fmt.Errorf("tracing exporter %q: want %s, %s or %s", c.Exporter, ExporterOTLPGRPC, ExporterOTLPHTTP, ExporterXRay)
	}
	if c.Endpoint == "" {
		return fmt.Errorf("tracing exporter %s: no endpoint", c.Exporter)
	}
	if math.IsNaN(c.SampleRate) || c.SampleRate < 0 || c.SampleRate > 1 {
		return fmt.Errorf("tracing sample rate %v: want a fraction in [0, 1]", c.SampleRate)
	}
	for _, f := range c.Propagation {
		switch f {
		case FormatTraceContext, FormatB3, FormatB3Multi, FormatXRay:
		default:
			return fmt.Errorf("tracing propagation %q: want %s, %s, %s or %s", f, FormatTraceContext, FormatB3, FormatB3Multi, FormatXRay)
		}
	}
	return nil
}

// ParsePropagation splits a comma-separated list of formats.
func ParsePropagation(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(strings.ToLower(f)); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Tracer records and exports the spans of one proxy.
type Tracer struct {
	cfg         Config
	tp          *sdktrace.TracerProvider
	tracer      trace.Tracer
	extract     propagation.TextMapPropagator
	inject      propagation.TextMapPropagator
	clear       []string    // every trace header weft knows, canonical form
	statusCodes [600]string // status codes as text, for the status_code tag
	queue       *queue
	log         *slog.Logger
	// spans counts spans started, sampled or not.
	spans *stats.Counter
	// root samples new traces at the proxy's rate; filters may have
	// their connection manager's.
	root ratio
	// xrayIDs: new trace IDs begin with the epoch second (X-Ray's rule).
	xrayIDs bool
	// rootValues is how many header values an unsampled new trace gets.
	rootValues int
}

// New builds a tracer. Nothing is dialled: exporters connect when they
// first export, so an absent collector never delays start-up.
func New(ctx context.Context, cfg Config, st *stats.Store, log *slog.Logger) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = DefaultExportTimeout
	}
	if len(cfg.Propagation) == 0 {
		cfg.Propagation = []string{FormatTraceContext}
		if cfg.Exporter == ExporterXRay {
			cfg.Propagation = []string{FormatXRay}
		}
	}
	var exp sdktrace.SpanExporter
	var err error
	switch cfg.Exporter {
	case ExporterOTLPGRPC:
		exp, err = newOTLPGRPC(cfg) // otlpgrpc.go: why not otlptracegrpc
	case ExporterOTLPHTTP:
		opts := []otlptracehttp.Option{otlptracehttp.WithTimeout(cfg.ExportTimeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false})}
		if strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
		} else {
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure && !strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlptracehttp.WithInsecure()) // a URL's scheme decides
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case ExporterXRay:
		exp, err = newXRayExporter(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing exporter %s: %w", cfg.Exporter, err)
	}
	sc := st.Scope("tracing.", "envoy_tracing_")
	q := newQueue(exp, cfg.QueueSize, cfg.BatchSize, cfg.ExportTimeout, sc, log)
	// Envoy's tags that are the same on every span of the proxy
	// (component, node_id, zone) are the resource's: sent once per
	// export rather than with every span.
	res := resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName),
		attribute.String("aws.appmesh.mesh", cfg.Mesh), attribute.String("aws.appmesh."+cfg.ResourceType, cfg.Resource),
		attribute.String("component", "proxy"), attribute.String("node_id", cfg.NodeID), attribute.String("zone", ""))
	// No span processor: Tracer.end hands finished spans to the queue.
	// The filter decides sampling before it starts a span (filter.start)
	// and asks the SDK only for the spans it samples: a sampled parent's
	// child, or a new trace the rate picked.
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))}
	xrayIDs := cfg.Exporter == ExporterXRay || contains(cfg.Propagation, FormatXRay)
	if xrayIDs {
		// X-Ray trace IDs begin with the epoch second; the daemon refuses
		// others.
		opts = append(opts, sdktrace.WithIDGenerator(xray.NewIDGenerator()))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t := &Tracer{cfg: cfg, tp: tp, tracer: tp.Tracer("weft-proxy"), queue: q, log: log, spans: sc.Counter("spans_started"),
		root: newRatio(cfg.SampleRate), xrayIDs: xrayIDs, rootValues: rootValues(cfg.Propagation)}
	for i := range t.statusCodes {
		t.statusCodes[i] = strconv.Itoa(i)
	}
	// Extraction tries every format; a later one wins, so the most
	// common, W3C, goes last.
	all := map[string]propagation.TextMapPropagator{
		FormatXRay: xray.Propagator{}, FormatB3: b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)),
		FormatB3Multi: b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)), FormatTraceContext: propagation.TraceContext{},
	}
	// B3's extraction allocates even when the request has no B3 header:
	// it runs only when one is there.
	b3In := ifPresent{all[FormatB3Multi], []string{"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"}}
	t.extract = propagation.NewCompositeTextMapPropagator(all[FormatXRay], b3In, all[FormatTraceContext])
	var inj []propagation.TextMapPropagator
	for _, f := range cfg.Propagation {
		inj = append(inj, all[f])
	}
	t.inject = propagation.NewCompositeTextMapPropagator(inj...)
	for _, f := range t.extract.Fields() {
		t.clear = append(t.clear, http.CanonicalHeaderKey(f))
	}
	t.clear = append(t.clear, "B3") // b3's Fields lists the single header under "b3"
	return t, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Run exports finished spans until ctx ends, then flushes what is queued
// and shuts the exporter down, each for at most shutdownFlush (2 s),
// whatever the export timeout.
func (t *Tracer) Run(ctx context.Context) {
	t.queue.run(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
	defer cancel()
	if err := errors.Join(t.queue.exp.Shutdown(sctx), t.tp.Shutdown(sctx)); err != nil && !errors.Is(err, context.Canceled) {
		t.log.Debug("tracing shutdown", "err", err)
	}
}

// Config returns the tracer's configuration after defaults.
func (t *Tracer) Config() Config { return t.cfg }

// end ends span and queues it for export with the attributes in ap,
// which the queue owns from then on.
//
// The attributes stay out of the SDK's span, and the SDK has no span
// processor: the tracer provider hands a span's snapshot to processors,
// and the snapshot de-duplicates the span's attributes through a map
// built for every span (SDK v1.47), a cost for attributes that are
// distinct by construction. The span itself (IDs, sampling, name, kind,
// times, status, parent) is the SDK's: once ended it no longer changes,
// and the queue exports it as it is (sdktrace.ReadOnlySpan) with these
// attributes.
func (t *Tracer) end(span trace.Span, ap *[]attribute.KeyValue) {
	span.End()
	ro, ok := span.(sdktrace.ReadOnlySpan)
	if !ok || !ro.SpanContext().IsSampled() {
		if !ok && span.SpanContext().IsSampled() {
			t.queue.dropped.Inc() // not the SDK's span: nothing to export
		}
		t.queue.release(ap)
		return
	}
	t.queue.add(ended{ReadOnlySpan: ro, attrs: ap})
}

// statusText is strconv.Itoa(code) without an allocation for the codes
// HTTP uses.
func (t *Tracer) statusText(code int) string {
	if code >= 0 && code < len(t.statusCodes) {
		return t.statusCodes[code]
	}
	return strconv.Itoa(code)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
