package proxycmd

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/proxy"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tracing"
)

// proxyObsFlags are weft proxy's observability flags. The App Mesh
// image's variables (ENABLE_ENVOY_XRAY_TRACING, ENABLE_ENVOY_DOG_STATSD,
// ...) are read first; a flag, or its WEFT_ variable, overrides them.
type proxyObsFlags struct {
	exporter, endpoint, propagation, statsd string
	rate                                    float64
	insecure, tags                          bool
	set                                     map[string]bool
	fs                                      *flag.FlagSet
}

func addObservabilityFlags(fs *flag.FlagSet) *proxyObsFlags {
	f := &proxyObsFlags{fs: fs}
	fs.StringVar(&f.exporter, "tracing", envvar.Or("WEFT_TRACING", ""), "span exporter: otlp-grpc, otlp-http or xray; empty: as App Mesh's ENABLE_ENVOY_*_TRACING variables say, else off (env WEFT_TRACING)")
	fs.StringVar(&f.endpoint, "tracing-endpoint", envvar.Or("WEFT_TRACING_ENDPOINT", ""), "collector: host:port (OTLP gRPC, X-Ray daemon UDP) or URL (OTLP HTTP) (env WEFT_TRACING_ENDPOINT)")
	fs.Float64Var(&f.rate, "tracing-sample-rate", 1, "fraction of new traces sampled, 0..1; requests with a parent follow it (env WEFT_TRACING_SAMPLE_RATE)")
	fs.StringVar(&f.propagation, "tracing-propagation", envvar.Or("WEFT_TRACING_PROPAGATION", ""), "trace header formats sent upstream, comma-separated: tracecontext, b3, b3multi, xray; all are read (env WEFT_TRACING_PROPAGATION)")
	fs.BoolVar(&f.insecure, "tracing-insecure", true, "send OTLP without TLS (env WEFT_TRACING_INSECURE)")
	fs.BoolVar(&f.tags, "stats-tags", false, "tag every metric with appmesh.mesh and appmesh.virtual_node/virtual_gateway, as ENABLE_ENVOY_STATS_TAGS=1 (env ENABLE_ENVOY_STATS_TAGS)")
	fs.StringVar(&f.statsd, "statsd", envvar.Or("WEFT_STATSD", ""), "StatsD sink: statsd://host:port, dogstatsd://host:port, or statsd+unix:///path, dogstatsd+unix:///path; ENABLE_ENVOY_DOG_STATSD=1 sets a DogStatsD one (env WEFT_STATSD)")
	return f
}

// resolve reads the App Mesh variables, then applies the flags.
func (f *proxyObsFlags) resolve(arn string) (proxy.Observability, error) {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	o, err := proxy.ObservabilityFromEnv(os.LookupEnv, arn)
	if err != nil {
		return o, err
	}
	if v, ok := os.LookupEnv("WEFT_TRACING_SAMPLE_RATE"); ok && !set["tracing-sample-rate"] {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return o, fmt.Errorf("env WEFT_TRACING_SAMPLE_RATE=%q: not a number", v)
		}
		f.rate, set["tracing-sample-rate"] = r, true
	}
	if v, ok := os.LookupEnv("WEFT_TRACING_INSECURE"); ok && !set["tracing-insecure"] {
		f.insecure = v == "1" || v == "true"
	}
	if f.tags {
		mesh, typ, name, ok := stats.ResourceOf(arn)
		if !ok {
			return o, fmt.Errorf("--stats-tags: the resource %q is not mesh/<mesh>/virtualNode|virtualGateway/<name>", arn)
		}
		o.StatsTags = []stats.Label{{Name: "appmesh.mesh", Value: mesh}, {Name: "appmesh." + typ, Value: name}}
	}
	if f.statsd != "" {
		u, err := url.Parse(f.statsd)
		if err != nil {
			return o, fmt.Errorf("--statsd %q: %w", f.statsd, err)
		}
		sc := &stats.SinkConfig{Network: "udp", Address: u.Host}
		switch u.Scheme {
		case "statsd":
		case "dogstatsd":
			sc.Dog = true
		case "statsd+unix":
			sc.Network, sc.Address = "unixgram", u.Path
		case "dogstatsd+unix":
			sc.Network, sc.Address, sc.Dog = "unixgram", u.Path, true
		default:
			return o, fmt.Errorf("--statsd %q: want statsd://, dogstatsd://, statsd+unix:// or dogstatsd+unix://", f.statsd)
		}
		if o.StatsSink != nil {
			sc.FlushInterval = o.StatsSink.FlushInterval
		}
		o.StatsSink = sc
	}
	if f.exporter != "" {
		mesh, typ, name, _ := stats.ResourceOf(arn)
		svc := name
		if mesh != "" {
			svc = mesh + "/" + name
		}
		o.Tracing = &tracing.Config{Exporter: f.exporter, Endpoint: f.endpoint, Insecure: f.insecure, SampleRate: f.rate,
			Propagation: tracing.ParsePropagation(f.propagation), ServiceName: svc, Mesh: mesh, Resource: name, ResourceType: typ, NodeID: arn}
		o.TracingRateFixed = set["tracing-sample-rate"]
	} else if o.Tracing != nil {
		if set["tracing-sample-rate"] {
			o.Tracing.SampleRate, o.TracingRateFixed = f.rate, true
		}
		if f.endpoint != "" {
			o.Tracing.Endpoint = f.endpoint
		}
		if f.propagation != "" {
			o.Tracing.Propagation = tracing.ParsePropagation(f.propagation)
		}
	}
	if o.Tracing != nil {
		if err := o.Tracing.Validate(); err != nil {
			return o, err
		}
	}
	return o, nil
}
