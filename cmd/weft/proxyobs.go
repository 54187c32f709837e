package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/server"
	"github.com/weftmesh/weft/internal/xds/bootstrap"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// proxyTracingFlags are weft server's mesh-wide tracing flags: every
// proxy's connection managers get the tracer in their tracing block.
func proxyTracingFlags(fs *flag.FlagSet, cfg *server.Config) func() error {
	exp := fs.String("proxy-tracing", envOr("WEFT_PROXY_TRACING", ""), "tracer for every proxy, sent over xDS in each HTTP connection manager: otlp-grpc, otlp-http or xray; a sidecar's own tracing settings win (env WEFT_PROXY_TRACING)")
	ep := fs.String("proxy-tracing-endpoint", envOr("WEFT_PROXY_TRACING_ENDPOINT", ""), "collector the proxies send spans to: host:port (OTLP gRPC), URL (OTLP HTTP) or ip:port (X-Ray daemon) (env WEFT_PROXY_TRACING_ENDPOINT)")
	rate := fs.String("proxy-tracing-sample-rate", envOr("WEFT_PROXY_TRACING_SAMPLE_RATE", "1"), "fraction of new traces the proxies sample, 0..1 (env WEFT_PROXY_TRACING_SAMPLE_RATE)")
	return func() error {
		if *exp == "" {
			return nil
		}
		r, err := strconv.ParseFloat(*rate, 64)
		if err != nil {
			return fmt.Errorf("--proxy-tracing-sample-rate %q: not a number", *rate)
		}
		t := &translate.MeshTracing{Exporter: *exp, Endpoint: *ep, SampleRate: r}
		if err := t.Validate(); err != nil {
			return fmt.Errorf("--proxy-tracing: %w", err)
		}
		cfg.ProxyTracing = t
		return nil
	}
}

// envoyStatsFromEnv reads App Mesh's stats variables for an Envoy
// bootstrap, as the App Mesh agent did: ENABLE_ENVOY_STATS_TAGS, and
// ENABLE_ENVOY_DOG_STATSD with STATSD_ADDRESS (an IP), STATSD_PORT,
// STATSD_SOCKET_PATH and ENVOY_STATS_FLUSH_INTERVAL.
func envoyStatsFromEnv(cfg *bootstrap.Config) error {
	on := func(k string) bool { v := strings.ToLower(envOr(k, "0")); return v == "1" || v == "true" }
	cfg.StatsTags = on("ENABLE_ENVOY_STATS_TAGS")
	if !on("ENABLE_ENVOY_DOG_STATSD") {
		return nil
	}
	port, err := strconv.ParseUint(envOr("STATSD_PORT", "8125"), 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("env STATSD_PORT=%q: not a port", envOr("STATSD_PORT", ""))
	}
	d := &bootstrap.DogStatsD{Address: envOr("STATSD_ADDRESS", "127.0.0.1"), Port: uint32(port), SocketPath: envOr("STATSD_SOCKET_PATH", "")}
	if v := envOr("ENVOY_STATS_FLUSH_INTERVAL", ""); v != "" {
		if d.FlushInterval, err = time.ParseDuration(v); err != nil || d.FlushInterval <= 0 {
			return fmt.Errorf("env ENVOY_STATS_FLUSH_INTERVAL=%q: want a positive duration such as 5000ms", v)
		}
	}
	cfg.DogStatsD = d
	return nil
}
