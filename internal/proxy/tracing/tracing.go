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

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.opentelemetry.io/contrib/propagators/aws/xray"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/proxy/httpconn"
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
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(rootSampler{def: sdktrace.TraceIDRatioBased(cfg.SampleRate)}))}
	if cfg.Exporter == ExporterXRay || contains(cfg.Propagation, FormatXRay) {
		// X-Ray trace IDs begin with the epoch second; the daemon refuses
		// others.
		opts = append(opts, sdktrace.WithIDGenerator(xray.NewIDGenerator()))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t := &Tracer{cfg: cfg, tp: tp, tracer: tp.Tracer("weft-proxy"), queue: q, log: log, spans: sc.Counter("spans_started")}
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

type samplerKey struct{}

// rootSampler samples new traces at the rate the connection manager
// chose (its tracing.random_sampling), or at the proxy's rate.
type rootSampler struct{ def sdktrace.Sampler }

func (r rootSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if s, ok := p.ParentContext.Value(samplerKey{}).(sdktrace.Sampler); ok {
		return s.ShouldSample(p)
	}
	return r.def.ShouldSample(p)
}

func (r rootSampler) Description() string { return "weft-root(" + r.def.Description() + ")" }

// Filter returns the tracing filter for one connection manager, or nil
// when the connection manager has no tracing block. Its random_sampling,
// when set, replaces the proxy's rate for new traces unless the proxy's
// own configuration fixed it (override).
func (t *Tracer) Filter(info httpconn.HCMInfo, override bool) httpconn.Filter {
	if info.Tracing == nil {
		return nil
	}
	f := &filter{t: t, egress: info.Egress, kind: trace.WithSpanKind(trace.SpanKindServer), name: "ingress"}
	if info.Egress {
		f.kind, f.name = trace.WithSpanKind(trace.SpanKindClient), "egress"
	}
	if rs := info.Tracing.GetRandomSampling(); rs != nil && !override {
		f.sampler = sdktrace.TraceIDRatioBased(rs.GetValue() / 100)
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
// What it costs per request, measured with
// go test -run XXX -bench HTTPOneHopTracing -benchtime 3000x -benchmem ./internal/proxy/
// (client, proxy, backend and the OTLP collector's decoding in one
// process; allocations are stable, the ns/op of a shared machine are
// not): no tracer 172 allocs/op; 1 % sampling 182 (the header carrier
// fits the propagators' interface without an allocation; 195 before the
// propagators' header names stopped being canonicalized at every lookup,
// B3's extraction stopped running without any B3 header, and the egress
// span's name stopped being built for unsampled requests); 100 % sampling
// 256 allocs and 20.7 KB (Envoy's three tags that are the same on every
// span, component, node_id and zone, are resource attributes, sent once
// per export batch; the attributes skip the SDK's span and its snapshot,
// Tracer.end; their slices are recycled after export; status codes are
// not formatted).
type filter struct {
	t       *Tracer
	egress  bool
	sampler sdktrace.Sampler // nil: the proxy's rate
	// kind and name start every span: egress spans are named for the
	// host once they are known to record (Done), so that an unsampled
	// request builds no name.
	kind trace.SpanStartOption
	name string
}

func (f *filter) DecodeHeaders(x httpconn.Exchange, slot *any) *httpconn.LocalReply {
	r := x.Request()
	t := f.t
	ctx := t.extract.Extract(context.Background(), carrier(r.Header))
	if f.sampler != nil {
		ctx = context.WithValue(ctx, samplerKey{}, f.sampler)
	}
	ctx, span := t.tracer.Start(ctx, f.name, f.kind, trace.WithTimestamp(x.Start()))
	t.spans.Inc()
	for _, h := range t.clear {
		delete(r.Header, h) // canonical already: no need for Del's work
	}
	t.inject.Inject(ctx, carrier(r.Header))
	*slot = span
	return nil
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
