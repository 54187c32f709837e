package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// healthChecks turns the target listener's health check into an active
// health check on every caller's cluster, as App Mesh did (reference §2.3).
// A different health-check port is set on the endpoints instead (see
// lbEndpoint): HealthCheck.alt_port is not implemented by Envoy.
func healthChecks(l *appmesh.Listener, host string) []*corev3.HealthCheck {
	if l == nil || l.HealthCheck == nil {
		return nil
	}
	h := l.HealthCheck
	hc := &corev3.HealthCheck{
		Timeout:            durationOr(&appmesh.Duration{Unit: appmesh.DurationUnitMs, Value: h.TimeoutMillis}, 2000),
		Interval:           durationOr(&appmesh.Duration{Unit: appmesh.DurationUnitMs, Value: h.IntervalMillis}, 5000),
		HealthyThreshold:   u32of(h.HealthyThreshold, 2),
		UnhealthyThreshold: u32of(h.UnhealthyThreshold, 2),
	}
	switch h.Protocol {
	case appmesh.PortProtocolHttp, appmesh.PortProtocolHttp2:
		hh := &corev3.HealthCheck_HttpHealthCheck{Host: host, Path: str(h.Path)}
		if hh.Path == "" {
			hh.Path = "/"
		}
		if h.Protocol == appmesh.PortProtocolHttp2 {
			hh.CodecClientType = typev3.CodecClientType_HTTP2
		}
		hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hh}
	case appmesh.PortProtocolGrpc:
		hc.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}}
	default:
		// A TCP check with no payload succeeds when the connection opens.
		hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return []*corev3.HealthCheck{hc}
}

// outlierDetection maps the target listener's outlier detection one to one;
// Envoy's 50 % panic threshold is left as App Mesh left it.
func outlierDetection(l *appmesh.Listener) *clusterv3.OutlierDetection {
	if l == nil || l.OutlierDetection == nil {
		return nil
	}
	o := l.OutlierDetection
	od := &clusterv3.OutlierDetection{
		Consecutive_5Xx:    u32of(o.MaxServerErrors, 5),
		MaxEjectionPercent: u32of(o.MaxEjectionPercent, 10),
	}
	if v, ok := millis(o.Interval); ok {
		od.Interval = ms(v)
	}
	if v, ok := millis(o.BaseEjectionDuration); ok {
		od.BaseEjectionTime = ms(v)
	}
	return od
}
