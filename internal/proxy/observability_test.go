package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/tracing"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestObservabilityFromAppMeshVariables(t *testing.T) {
	arn := "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualGateway/gw"
	o, err := ObservabilityFromEnv(envOf(map[string]string{
		"ENABLE_ENVOY_STATS_TAGS": "1", "ENABLE_ENVOY_DOG_STATSD": "1", "STATSD_PORT": "9125",
		"ENVOY_STATS_FLUSH_INTERVAL": "2000ms", "ENABLE_ENVOY_XRAY_TRACING": "1"}), arn)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.StatsTags) != 2 || o.StatsTags[0].Name != "appmesh.mesh" || o.StatsTags[0].Value != "m" ||
		o.StatsTags[1].Name != "appmesh.virtual_gateway" || o.StatsTags[1].Value != "gw" {
		t.Errorf("tags %v", o.StatsTags)
	}
	if s := o.StatsSink; s == nil || !s.Dog || s.Network != "udp" || s.Address != "127.0.0.1:9125" || s.FlushInterval != 2*time.Second {
		t.Errorf("sink %+v", s)
	}
	if tr := o.Tracing; tr == nil || tr.Exporter != tracing.ExporterXRay || tr.Endpoint != "127.0.0.1:2000" ||
		tr.SampleRate != 0.05 || tr.ServiceName != "m/gw" || !o.TracingRateFixed {
		t.Errorf("tracing %+v", tr)
	}
	o, err = ObservabilityFromEnv(envOf(map[string]string{"ENABLE_ENVOY_DOG_STATSD": "1", "STATSD_SOCKET_PATH": "/run/dsd.sock",
		"ENABLE_ENVOY_JAEGER_TRACING": "1", "JAEGER_TRACER_ADDRESS": "jaeger"}), arn)
	if err != nil {
		t.Fatal(err)
	}
	if o.StatsSink.Network != "unixgram" || o.StatsSink.Address != "/run/dsd.sock" {
		t.Errorf("sink %+v", o.StatsSink)
	}
	if tr := o.Tracing; tr.Exporter != tracing.ExporterOTLPGRPC || tr.Endpoint != "jaeger:4317" {
		t.Errorf("jaeger %+v", tr)
	}
	for env, want := range map[string]string{
		"ENABLE_ENVOY_XRAY_TRACING=1 ENABLE_ENVOY_DATADOG_TRACING=1": "at most one tracer",
		"ENABLE_ENVOY_DATADOG_TRACING=1 DATADOG_TRACER_PORT=8126":    "does not speak the Datadog trace protocol",
		"ENABLE_ENVOY_JAEGER_TRACING=1 JAEGER_TRACER_PORT=9411":      "does not speak Zipkin",
		"ENVOY_TRACING_CFG_FILE=/x.yaml":                             "ENVOY_TRACING_CFG_FILE: Envoy configuration files",
		"ENABLE_ENVOY_XRAY_TRACING=1 XRAY_SAMPLING_RATE=5":           "XRAY_SAMPLING_RATE",
	} {
		m := map[string]string{}
		for _, kv := range strings.Fields(env) {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		if _, err := ObservabilityFromEnv(envOf(m), arn); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", env, err, want)
		}
	}
}
