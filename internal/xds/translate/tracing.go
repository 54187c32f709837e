package translate

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// splitHostPort splits host:port (the translator may not import net).
func splitHostPort(s string) (string, string, bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return strings.Trim(s[:i], "[]"), s[i+1:], true
}

// MeshTracing is the tracing weft server gives every proxy (weft server's
// --proxy-tracing flags). Envoy takes a tracer either from its bootstrap
// or from each HTTP connection manager's tracing.provider; the second is
// what xDS can carry, so weft server fills the tracing block App Mesh
// always sent (empty, for the bootstrap's tracer) with the provider and
// the sampling rate. A tracer set on the sidecar itself overrides it in
// weft proxy (Envoy prefers the HCM's provider over its bootstrap).
type MeshTracing struct {
	// Exporter is "otlp-grpc" (Endpoint host:port), "otlp-http"
	// (Endpoint a URL) or "xray" (Endpoint the daemon's ip:port).
	Exporter string
	Endpoint string
	// SampleRate is the fraction of new traces sampled, 0..1.
	SampleRate float64
}

// Validate checks t, naming the bad setting.
func (t *MeshTracing) Validate() error {
	switch t.Exporter {
	case "otlp-grpc", "otlp-http", "xray":
	default:
		return fmt.Errorf("proxy tracing exporter %q: want otlp-grpc, otlp-http or xray", t.Exporter)
	}
	if t.Endpoint == "" {
		return errors.New("proxy tracing: no endpoint")
	}
	if t.Exporter == "otlp-http" && !strings.Contains(t.Endpoint, "://") {
		return fmt.Errorf("proxy tracing endpoint %q: OTLP HTTP needs a URL such as http://collector:4318/v1/traces", t.Endpoint)
	}
	if t.Exporter == "xray" {
		host, port, ok := splitHostPort(t.Endpoint)
		if !ok || strings.Trim(host, "0123456789.:abcdefABCDEF") != "" {
			return fmt.Errorf("proxy tracing endpoint %q: the X-Ray daemon is ip:port", t.Endpoint)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("proxy tracing endpoint %q: bad port", t.Endpoint)
		}
	}
	if math.IsNaN(t.SampleRate) || t.SampleRate < 0 || t.SampleRate > 1 {
		return fmt.Errorf("proxy tracing sample rate %v: want a fraction in [0, 1]", t.SampleRate)
	}
	return nil
}

// provider is the tracing.provider for one proxy.
func (t *MeshTracing) provider(id Identity) *tracev3.Tracing_Http {
	svc := id.Mesh + "/" + id.Name
	var name string
	var cfg proto.Message
	switch t.Exporter {
	case "otlp-grpc":
		name = "envoy.tracers.opentelemetry"
		cfg = &tracev3.OpenTelemetryConfig{ServiceName: svc, GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
				TargetUri: t.Endpoint, StatPrefix: "otlp"}}}}
	case "otlp-http":
		name = "envoy.tracers.opentelemetry"
		cfg = &tracev3.OpenTelemetryConfig{ServiceName: svc, HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri: t.Endpoint, Timeout: &durationpb.Duration{Seconds: 10},
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "otlp_collector"}}}}
	case "xray":
		name = "envoy.tracers.xray"
		host, port, _ := splitHostPort(t.Endpoint)
		p, _ := strconv.ParseUint(port, 10, 16)
		cfg = &tracev3.XRayConfig{SegmentName: svc, DaemonEndpoint: &corev3.SocketAddress{Protocol: corev3.SocketAddress_UDP,
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}
	}
	v, _ := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	return &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: &anypb.Any{
		TypeUrl: "type.googleapis.com/" + string(cfg.ProtoReflect().Descriptor().FullName()), Value: v}}}
}

// TranslateWithTracing wraps TranslateWith: every HTTP connection
// manager that has a tracing block gets t's provider and sampling rate.
// Resources are copied before they change (translations share them).
func TranslateWithTracing(t *MeshTracing) func(v *View, id Identity, m *Memo) (*Resources, error) {
	return func(v *View, id Identity, m *Memo) (*Resources, error) {
		r, err := TranslateWith(v, id, m)
		if err != nil || r == nil || t == nil {
			return r, err
		}
		return withTracing(r, t, id)
	}
}

const hcmTypeURL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

func withTracing(r *Resources, t *MeshTracing, id Identity) (*Resources, error) {
	out := *r
	out.Listeners = make([]*listenerv3.Listener, len(r.Listeners))
	prov := t.provider(id)
	for i, l := range r.Listeners {
		out.Listeners[i] = l
		var cl *listenerv3.Listener
		for ci, fc := range l.GetFilterChains() {
			for fi, f := range fc.GetFilters() {
				if f.GetTypedConfig().GetTypeUrl() != hcmTypeURL {
					continue
				}
				var h hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				if h.GetTracing() == nil {
					continue // gRPC flavor: no tracing block
				}
				h.Tracing = &hcmv3.HttpConnectionManager_Tracing{Provider: prov,
					RandomSampling: &typev3.Percent{Value: t.SampleRate * 100}}
				v, err := proto.MarshalOptions{Deterministic: true}.Marshal(&h)
				if err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				if cl == nil {
					cl = proto.Clone(l).(*listenerv3.Listener)
					out.Listeners[i] = cl
				}
				cl.FilterChains[ci].Filters[fi].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: hcmTypeURL, Value: v}}
			}
		}
	}
	return &out, nil
}
