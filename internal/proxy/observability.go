package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tracing"
)

// Observability configures what weft proxy reports beyond its admin
// endpoints.
type Observability struct {
	// StatsTags are fixed tags on every metric (Prometheus labels,
	// DogStatsD tags): appmesh.mesh and appmesh.virtual_node or
	// appmesh.virtual_gateway with ENABLE_ENVOY_STATS_TAGS.
	StatsTags []stats.Label
	// StatsSink, when set, sends metrics to StatsD or DogStatsD.
	StatsSink *stats.SinkConfig
	// Tracing, when set, records a span per request on every connection
	// manager with a tracing block and exports them.
	Tracing *tracing.Config
	// TracingRateFixed makes Tracing.SampleRate win over a connection
	// manager's tracing.random_sampling (the sidecar's own setting
	// overrides the control plane's).
	TracingRateFixed bool
}

// maxProviderTracers bounds the tracers built from distinct
// tracing.provider blocks the control plane sends; more are NACKed.
const maxProviderTracers = 8

// obsState is what startObservability started.
type obsState struct {
	tracer *tracing.Tracer // the proxy's own (flags, variables): overrides the control plane's
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// spawn runs f in a goroutine until stopObservability.
	spawn func(f func(ctx context.Context))

	mu         sync.Mutex
	byProvider map[string]*tracing.Tracer // tracers for tracing.provider blocks; protected by mu
}

// startObservability starts the StatsD sink and the tracer. Their
// goroutines end when stopObservability cancels them.
func (p *Proxy) startObservability(ctx context.Context) error {
	o := p.cfg.Observability
	logObservability(p.log, o)
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.obs.cancel = cancel
	p.obs.spawn = func(f func(ctx context.Context)) {
		p.obs.wg.Add(1)
		go func() { // a tracer's exporter; ends when stopObservability cancels octx
			defer p.obs.wg.Done()
			f(octx)
		}()
	}
	if o.StatsSink != nil {
		k, err := p.Stats.NewSink(*o.StatsSink, p.log)
		if err != nil {
			cancel()
			return err
		}
		p.obs.wg.Add(1)
		go func() { // StatsD sink; ends when stopObservability cancels octx
			defer p.obs.wg.Done()
			k.Run(octx)
		}()
	}
	if o.Tracing != nil {
		t, err := tracing.New(ctx, *o.Tracing, p.Stats, p.log)
		if err != nil {
			cancel()
			p.obs.wg.Wait()
			return err
		}
		p.obs.tracer = t
		p.obs.spawn(t.Run)
	}
	return nil
}

// stopObservability flushes the sink and the span queue once and waits
// for them (an export is bounded by its timeout).
func (p *Proxy) stopObservability() {
	if p.obs.cancel != nil {
		p.obs.cancel()
	}
	p.obs.wg.Wait()
}

// tracingFilters is httpconn.Deps.Prepend: the tracing filter for a
// connection manager with a tracing block. The proxy's own tracer wins;
// without one, the block's provider (sent by the control plane) names
// the exporter; without either, there is no span.
func (p *Proxy) tracingFilters(info httpconn.HCMInfo) ([]httpconn.Filter, error) {
	if info.Tracing == nil {
		return nil, nil
	}
	if t := p.obs.tracer; t != nil {
		return []httpconn.Filter{t.Filter(info, p.cfg.Observability.TracingRateFixed)}, nil
	}
	if info.Tracing.GetProvider() == nil {
		return nil, nil
	}
	mesh, typ, name, _ := stats.ResourceOf(p.cfg.ResourceARN)
	svc := name
	if mesh != "" {
		svc = mesh + "/" + name
	}
	base := tracing.Config{ServiceName: svc, Mesh: mesh, Resource: name, ResourceType: typ, NodeID: p.cfg.ResourceARN}
	cfg, err := tracing.FromProvider(info.Tracing, base, "http_connection_manager "+info.StatPrefix)
	if err != nil {
		return nil, err
	}
	t, err := p.providerTracer(cfg)
	if err != nil {
		return nil, err
	}
	return []httpconn.Filter{t.Filter(info, false)}, nil
}

// providerTracer returns the tracer for cfg, building and starting it
// the first time.
func (p *Proxy) providerTracer(cfg tracing.Config) (*tracing.Tracer, error) {
	key := cfg
	key.SampleRate = 0 // each connection manager samples at its own rate
	k := fmt.Sprintf("%+v", key)
	p.obs.mu.Lock()
	defer p.obs.mu.Unlock()
	if t := p.obs.byProvider[k]; t != nil {
		return t, nil
	}
	if p.obs.spawn == nil {
		return nil, errors.New("tracing: the proxy is not running")
	}
	if len(p.obs.byProvider) >= maxProviderTracers {
		return nil, fmt.Errorf("tracing: more than %d distinct tracing providers", maxProviderTracers)
	}
	t, err := tracing.New(context.Background(), cfg, p.Stats, p.log)
	if err != nil {
		return nil, err
	}
	if p.obs.byProvider == nil {
		p.obs.byProvider = map[string]*tracing.Tracer{}
	}
	p.obs.byProvider[k] = t
	p.obs.spawn(t.Run)
	return t, nil
}

// Defaults of the App Mesh image's variables.
const (
	defaultStatsdAddress    = "127.0.0.1"
	defaultStatsdPort       = "8125"
	defaultXRayDaemonPort   = "2000"
	defaultXRaySamplingRate = 0.05
	otlpGRPCPort            = "4317"
)

// ObservabilityFromEnv reads the App Mesh Envoy image's observability
// variables (see docs/observability.md) through lookup (os.LookupEnv):
//
//	ENABLE_ENVOY_STATS_TAGS=1           fixed tags appmesh.mesh, appmesh.virtual_node|virtual_gateway
//	ENABLE_ENVOY_DOG_STATSD=1           DogStatsD to STATSD_ADDRESS:STATSD_PORT or STATSD_SOCKET_PATH
//	ENVOY_STATS_FLUSH_INTERVAL          StatsD flush interval ("5000ms", "5s")
//	ENABLE_ENVOY_XRAY_TRACING=1         X-Ray segments to 127.0.0.1:XRAY_DAEMON_PORT (or AWS_XRAY_DAEMON_ADDRESS),
//	                                    XRAY_SAMPLING_RATE (0.05), XRAY_SEGMENT_NAME
//	ENABLE_ENVOY_JAEGER_TRACING=1       OTLP gRPC to JAEGER_TRACER_ADDRESS:JAEGER_TRACER_PORT (4317), B3 + W3C
//	ENABLE_ENVOY_DATADOG_TRACING=1      OTLP gRPC to DATADOG_TRACER_ADDRESS:DATADOG_TRACER_PORT (4317), W3C; DD_SERVICE
//
// Settings weft proxy cannot honour are refused with an error naming the
// variable (Envoy configuration files, the Zipkin and Datadog wire
// protocols, two tracers at once), as the App Mesh image refused two
// tracers at start-up.
func ObservabilityFromEnv(lookup func(string) (string, bool), arn string) (Observability, error) {
	var o Observability
	get := func(k, def string) string {
		if v, ok := lookup(k); ok && v != "" {
			return v
		}
		return def
	}
	on := func(k string) bool {
		v := strings.ToLower(get(k, "0"))
		return v == "1" || v == "true"
	}
	var errs []error
	for _, k := range []string{"ENVOY_STATS_CONFIG_FILE", "ENVOY_STATS_SINKS_CFG_FILE", "ENVOY_TRACING_CFG_FILE"} {
		if get(k, "") != "" {
			errs = append(errs, fmt.Errorf("env %s: Envoy configuration files do not apply to weft proxy; use the variables or flags in docs/observability.md", k))
		}
	}
	mesh, typ, name, haveRes := stats.ResourceOf(arn)
	if on("ENABLE_ENVOY_STATS_TAGS") {
		if !haveRes {
			errs = append(errs, fmt.Errorf("env ENABLE_ENVOY_STATS_TAGS: the resource %q is not mesh/<mesh>/virtualNode|virtualGateway/<name>", arn))
		} else {
			o.StatsTags = []stats.Label{{Name: "appmesh.mesh", Value: mesh}, {Name: "appmesh." + typ, Value: name}}
		}
	}
	if on("ENABLE_ENVOY_DOG_STATSD") {
		sc := &stats.SinkConfig{Dog: true, Network: "udp",
			Address: net.JoinHostPort(get("STATSD_ADDRESS", defaultStatsdAddress), get("STATSD_PORT", defaultStatsdPort))}
		if p := get("STATSD_SOCKET_PATH", ""); p != "" {
			sc.Network, sc.Address = "unixgram", p
		}
		if v := get("ENVOY_STATS_FLUSH_INTERVAL", ""); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("env ENVOY_STATS_FLUSH_INTERVAL=%q: want a positive duration such as 5000ms", v))
			}
			sc.FlushInterval = d
		}
		o.StatsSink = sc
	}
	svc := name
	if haveRes {
		svc = mesh + "/" + name
	}
	var drivers []string
	if on("ENABLE_ENVOY_XRAY_TRACING") {
		drivers = append(drivers, "ENABLE_ENVOY_XRAY_TRACING")
		addr := net.JoinHostPort("127.0.0.1", get("XRAY_DAEMON_PORT", defaultXRayDaemonPort))
		if a := get("AWS_XRAY_DAEMON_ADDRESS", ""); a != "" {
			addr = a
		}
		rate := defaultXRaySamplingRate
		if v := get("XRAY_SAMPLING_RATE", ""); v != "" {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				errs = append(errs, fmt.Errorf("env XRAY_SAMPLING_RATE=%q: want a fraction in [0, 1]", v))
			}
			rate = r
		}
		if get("XRAY_SAMPLING_RULE_MANIFEST", "") != "" {
			errs = append(errs, errors.New("env XRAY_SAMPLING_RULE_MANIFEST: sampling rule manifests are not supported; set XRAY_SAMPLING_RATE"))
		}
		o.Tracing = &tracing.Config{Exporter: tracing.ExporterXRay, Endpoint: addr, SampleRate: rate,
			ServiceName: get("XRAY_SEGMENT_NAME", svc), Propagation: []string{tracing.FormatXRay}}
		o.TracingRateFixed = true
	}
	if on("ENABLE_ENVOY_JAEGER_TRACING") {
		drivers = append(drivers, "ENABLE_ENVOY_JAEGER_TRACING")
		port := get("JAEGER_TRACER_PORT", otlpGRPCPort)
		if port == "9411" {
			errs = append(errs, errors.New("env JAEGER_TRACER_PORT=9411: weft proxy does not speak Zipkin; Jaeger receives OTLP gRPC on 4317 (set JAEGER_TRACER_PORT=4317)"))
		}
		if v := get("JAEGER_TRACER_VERSION", ""); v != "" {
			errs = append(errs, fmt.Errorf("env JAEGER_TRACER_VERSION=%s: Zipkin encodings do not apply; weft proxy sends OTLP", v))
		}
		o.Tracing = &tracing.Config{Exporter: tracing.ExporterOTLPGRPC, Insecure: true, SampleRate: 1,
			Endpoint:    net.JoinHostPort(get("JAEGER_TRACER_ADDRESS", "127.0.0.1"), port),
			ServiceName: svc, Propagation: []string{tracing.FormatB3Multi, tracing.FormatTraceContext}}
	}
	if on("ENABLE_ENVOY_DATADOG_TRACING") {
		drivers = append(drivers, "ENABLE_ENVOY_DATADOG_TRACING")
		port := get("DATADOG_TRACER_PORT", otlpGRPCPort)
		if port == "8126" {
			errs = append(errs, errors.New("env DATADOG_TRACER_PORT=8126: weft proxy does not speak the Datadog trace protocol; enable OTLP ingest on the Datadog Agent (gRPC, 4317) and set DATADOG_TRACER_PORT=4317"))
		}
		o.Tracing = &tracing.Config{Exporter: tracing.ExporterOTLPGRPC, Insecure: true, SampleRate: 1,
			Endpoint:    net.JoinHostPort(get("DATADOG_TRACER_ADDRESS", "127.0.0.1"), port),
			ServiceName: get("DD_SERVICE", "envoy-"+svc), Propagation: []string{tracing.FormatTraceContext}}
	}
	if len(drivers) > 1 {
		errs = append(errs, fmt.Errorf("env %s: at most one tracer can be enabled", strings.Join(drivers, ", ")))
	}
	if o.Tracing != nil {
		o.Tracing.Mesh, o.Tracing.Resource, o.Tracing.ResourceType, o.Tracing.NodeID = mesh, name, typ, arn
	}
	return o, errors.Join(errs...)
}

// logObservability says what is on, once, at start.
func logObservability(log *slog.Logger, o Observability) {
	if o.Tracing != nil {
		log.Info("tracing", "exporter", o.Tracing.Exporter, "endpoint", o.Tracing.Endpoint, "sample_rate", o.Tracing.SampleRate)
	}
	if o.StatsSink != nil {
		log.Info("stats sink", "network", o.StatsSink.Network, "address", o.StatsSink.Address, "dogstatsd", o.StatsSink.Dog)
	}
}
