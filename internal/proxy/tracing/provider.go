package tracing

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Provider type URLs weft proxy understands in an HCM's tracing.provider.
const (
	otelConfigURL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
	xrayConfigURL = "type.googleapis.com/envoy.config.trace.v3.XRayConfig"
)

// FromProvider turns an HCM's tracing.provider, as a control plane sends
// it to Envoy, into a Config: envoy.tracers.opentelemetry with a Google
// gRPC target (OTLP gRPC, TLS when channel credentials ask for it) or an
// HTTP service URI (OTLP HTTP), or envoy.tracers.xray with a daemon
// endpoint. The sampling rate is the HCM's random_sampling (100 % when
// unset, as in Envoy). base fills the resource names. path names the HCM
// in errors; other providers are refused.
func FromProvider(tr *hcmv3.HttpConnectionManager_Tracing, base Config, path string) (Config, error) {
	c := base
	c.SampleRate = 1
	if r, ok := SamplingOf(tr); ok {
		c.SampleRate = r
	}
	p := tr.GetProvider()
	fp := path + ".tracing.provider"
	switch url := p.GetTypedConfig().GetTypeUrl(); url {
	case otelConfigURL:
		var oc tracev3.OpenTelemetryConfig
		if err := p.GetTypedConfig().UnmarshalTo(&oc); err != nil {
			return c, fmt.Errorf("%s: %w", fp, err)
		}
		if oc.GetServiceName() != "" {
			c.ServiceName = oc.GetServiceName()
		}
		switch {
		case oc.GetGrpcService().GetGoogleGrpc() != nil:
			g := oc.GetGrpcService().GetGoogleGrpc()
			c.Exporter, c.Endpoint = ExporterOTLPGRPC, g.GetTargetUri()
			c.Insecure = g.GetChannelCredentials().GetSslCredentials() == nil
		case oc.GetHttpService().GetHttpUri().GetUri() != "":
			c.Exporter, c.Endpoint = ExporterOTLPHTTP, oc.GetHttpService().GetHttpUri().GetUri()
			c.Insecure = !strings.HasPrefix(c.Endpoint, "https://")
		default:
			return c, fmt.Errorf("%s: weft proxy exports OTLP to a google_grpc target_uri or an http_service uri (envoy_grpc clusters are not supported)", fp)
		}
	case xrayConfigURL:
		var xc tracev3.XRayConfig
		if err := p.GetTypedConfig().UnmarshalTo(&xc); err != nil {
			return c, fmt.Errorf("%s: %w", fp, err)
		}
		if xc.GetSamplingRuleManifest() != nil {
			return c, fmt.Errorf("%s.sampling_rule_manifest: not supported by weft proxy; use random_sampling", fp)
		}
		ep := xc.GetDaemonEndpoint()
		host, port := "127.0.0.1", uint32(2000)
		if ep != nil {
			host, port = ep.GetAddress(), ep.GetPortValue()
		}
		c.Exporter, c.Endpoint = ExporterXRay, net.JoinHostPort(host, strconv.Itoa(int(port)))
		c.Propagation = []string{FormatXRay}
		if xc.GetSegmentName() != "" {
			c.ServiceName = xc.GetSegmentName()
		}
	default:
		return c, fmt.Errorf("%s: tracer %s (%s) is not supported by weft proxy; use envoy.tracers.opentelemetry or envoy.tracers.xray", fp, p.GetName(), url)
	}
	return c, c.Validate()
}
