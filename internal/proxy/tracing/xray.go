package tracing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// xrayHeader starts every datagram sent to the X-Ray daemon.
const xrayHeader = "{\"format\":\"json\",\"version\":1}\n"

// xrayExporter sends each span as an X-Ray segment document to the X-Ray
// daemon over UDP, as Envoy's X-Ray tracer does: one datagram per
// segment, named after the mesh resource, with App Mesh's origin and aws
// fields.
type xrayExporter struct {
	cfg  Config
	conn net.Conn
}

func newXRayExporter(cfg Config) (*xrayExporter, error) {
	host, _, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("daemon address %q: %w", cfg.Endpoint, err)
	}
	if net.ParseIP(host) == nil {
		// As the App Mesh image requires of AWS_XRAY_DAEMON_ADDRESS.
		return nil, fmt.Errorf("daemon address %q: the host must be an IP address", cfg.Endpoint)
	}
	conn, err := net.Dial("udp", cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	return &xrayExporter{cfg: cfg, conn: conn}, nil
}

type xrayHTTP struct {
	Request  map[string]any `json:"request,omitempty"`
	Response map[string]any `json:"response,omitempty"`
}

// Segment is an X-Ray segment document (the fields weft proxy sends).
type Segment struct {
	Name        string                    `json:"name"`
	ID          string                    `json:"id"`
	TraceID     string                    `json:"trace_id"`
	ParentID    string                    `json:"parent_id,omitempty"`
	StartTime   float64                   `json:"start_time"`
	EndTime     float64                   `json:"end_time"`
	Origin      string                    `json:"origin"`
	AWS         map[string]map[string]any `json:"aws"`
	HTTP        xrayHTTP                  `json:"http"`
	Error       bool                      `json:"error,omitempty"`
	Fault       bool                      `json:"fault,omitempty"`
	Throttle    bool                      `json:"throttle,omitempty"`
	Annotations map[string]string         `json:"annotations,omitempty"`
}

// XRayTraceID renders a 16-byte trace ID as X-Ray does: 1-<8 hex>-<24 hex>.
func XRayTraceID(hex32 string) string {
	return "1-" + hex32[:8] + "-" + hex32[8:]
}

func secs(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (e *xrayExporter) segment(s sdktrace.ReadOnlySpan) Segment {
	sc := s.SpanContext()
	seg := Segment{Name: e.cfg.ServiceName, ID: sc.SpanID().String(), TraceID: XRayTraceID(sc.TraceID().String()),
		StartTime: secs(s.StartTime()), EndTime: secs(s.EndTime()), Origin: "AWS::AppMesh::Proxy",
		AWS:  map[string]map[string]any{"app_mesh": {"mesh_name": e.cfg.Mesh, e.cfg.ResourceType + "_name": e.cfg.Resource}},
		HTTP: xrayHTTP{Request: map[string]any{}, Response: map[string]any{}}, Annotations: map[string]string{}}
	if p := s.Parent(); p.IsValid() {
		seg.ParentID = p.SpanID().String()
	}
	for _, kv := range s.Attributes() {
		v := kv.Value.Emit()
		switch kv.Key {
		case "http.method":
			seg.HTTP.Request["method"] = v
		case "http.url":
			seg.HTTP.Request["url"] = v
		case "user_agent":
			seg.HTTP.Request["user_agent"] = v
		case "peer.address":
			if h, _, err := net.SplitHostPort(v); err == nil {
				seg.HTTP.Request["client_ip"] = h
			}
		case "http.status_code":
			code, _ := strconv.Atoi(v)
			seg.HTTP.Response["status"] = code
			seg.Fault = code >= 500 || code == 0
			seg.Error = code >= 400 && code < 500
			seg.Throttle = code == 429
		case "response_size":
			if kv.Value.Type() == attribute.INT64 {
				seg.HTTP.Response["content_length"] = kv.Value.AsInt64()
			}
		case "response_flags", "upstream_cluster", "upstream_address", "guid:x-request-id":
			seg.Annotations[annotationKey(string(kv.Key))] = v
		}
	}
	return seg
}

// annotationKey makes an X-Ray annotation key (letters, digits, _).
func annotationKey(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func (e *xrayExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	var errs []error
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultExportTimeout)
	}
	_ = e.conn.SetWriteDeadline(deadline)
	for _, s := range spans {
		b, err := json.Marshal(e.segment(s))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := e.conn.Write(append([]byte(xrayHeader), b...)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *xrayExporter) Shutdown(context.Context) error { return e.conn.Close() }
