package proxy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/otlptest"
	"github.com/weftmesh/weft/internal/proxy/tracing"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// otlpReceiver is a real OTLP/gRPC trace collector.
type otlpReceiver struct {
	*otlptest.Collector
	addr string
}

type recvSpan struct {
	service  string
	span     *tracepb.Span
	resource map[string]string // the resource's string attributes
}

func startOTLP(t *testing.T) *otlpReceiver {
	c := otlptest.Start(t)
	return &otlpReceiver{c, c.Addr}
}

// received returns the spans received so far, with their resources.
func (r *otlpReceiver) received() []recvSpan {
	var out []recvSpan
	for _, req := range r.Requests() {
		for _, rs := range req.GetResourceSpans() {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, recvSpan{res["service.name"], s, res})
				}
			}
		}
	}
	return out
}

// waitSpans waits until spans of the trace arrived from n services.
func (r *otlpReceiver) waitSpans(t *testing.T, traceID []byte, n int) []recvSpan {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		var out []recvSpan
		for _, s := range r.received() {
			if bytes.Equal(s.span.GetTraceId(), traceID) {
				out = append(out, s)
			}
		}
		if len(out) >= n {
			return out
		}
		select {
		case <-r.Got():
		case <-deadline:
			t.Fatalf("got %d spans of trace %x, want %d", len(out), traceID, n)
		}
	}
}

func tracingOn(h *hcmv3.HttpConnectionManager) { h.Tracing = &hcmv3.HttpConnectionManager_Tracing{} }

func withTracing(service, endpoint, format string) func(*Config) {
	return func(c *Config) {
		c.Observability.Tracing = &tracing.Config{Exporter: tracing.ExporterOTLPGRPC, Endpoint: endpoint, Insecure: true,
			SampleRate: 1, Propagation: []string{format}, ServiceName: service, Mesh: "test-mesh", Resource: service,
			ResourceType: "virtual_node", NodeID: testNode}
	}
}

// traceHeaders are the headers an application forwards to keep a trace.
var traceHeaders = []string{"Traceparent", "Tracestate", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid",
	"X-B3-Sampled", "X-B3-Flags", "X-Amzn-Trace-Id"}

// mesh3 is gateway -> node n1 -> (n1's app calls n2 through n1's egress) -> node n2.
type mesh3 struct {
	gw, n1, n2 *harness
	entry      string // the gateway's listener
}

func newMesh3(t *testing.T, gwOpt, n1Opt, n2Opt func(*Config)) *mesh3 {
	t.Helper()
	app2 := newBackend(t, "app2")
	n2 := newHarness(t, n2Opt)
	n2.push(httpListener("ingress", httpManager("ingress", "rds_ingress", tracingOn)),
		routeConfig("rds_ingress", vhost("all", []string{"*"}, routeTo("/", "local"))),
		staticCluster("local", app2.addr()))
	n1 := newHarness(t, n1Opt)
	var n1Egress string
	app1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The application forwards the trace headers, as instrumented
		// applications (or ones that copy them) do.
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+n1Egress+"/downstream", nil)
		req.Host = "n2.test"
		for _, h := range traceHeaders {
			if v := r.Header.Values(h); len(v) > 0 {
				req.Header[h] = v
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(app1.Close)
	n1.push(httpListener("ingress", httpManager("ingress", "rds_ingress", tracingOn)),
		httpListener("egress", httpManager("egress", "rds_egress", tracingOn)),
		routeConfig("rds_ingress", vhost("all", []string{"*"}, routeTo("/", "local"))),
		routeConfig("rds_egress", vhost("n2", []string{"n2.test"}, routeTo("/", "n2"))),
		staticCluster("local", strings.TrimPrefix(app1.URL, "http://")),
		staticCluster("n2", n2.addr("ingress")))
	n1Egress = n1.addr("egress")
	gw := newHarness(t, gwOpt)
	gw.push(httpListener("ingress", httpManager("ingress", "rds_ingress", tracingOn)),
		routeConfig("rds_ingress", vhost("all", []string{"*"}, routeTo("/", "n1"))),
		staticCluster("n1", n1.addr("ingress")))
	return &mesh3{gw: gw, n1: n1, n2: n2, entry: gw.addr("ingress")}
}

func TestTracingAcrossGatewayAndNodes(t *testing.T) {
	rx := startOTLP(t)
	for _, tc := range []struct {
		format string
		header func(traceID, spanID string) (string, string)
	}{
		{tracing.FormatTraceContext, func(tr, sp string) (string, string) { return "traceparent", "00-" + tr + "-" + sp + "-01" }},
		{tracing.FormatB3, func(tr, sp string) (string, string) { return "b3", tr + "-" + sp + "-1" }},
		{tracing.FormatB3Multi, nil},
		{tracing.FormatXRay, func(tr, sp string) (string, string) {
			return "X-Amzn-Trace-Id", "Root=1-" + tr[:8] + "-" + tr[8:] + ";Parent=" + sp + ";Sampled=1"
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			m := newMesh3(t, withTracing("gw", rx.addr, tc.format), withTracing("n1", rx.addr, tc.format), withTracing("n2", rx.addr, tc.format))
			// The client's own span: a trace ID with a current epoch
			// second up front, so that it is a valid X-Ray ID as well.
			traceID := fmt.Sprintf("%08x", time.Now().Unix()) + "0123456789abcdef01234567"
			clientSpan := "00f067aa0ba902b7"
			var hdr []string
			if tc.header != nil {
				k, v := tc.header(traceID, clientSpan)
				hdr = []string{k, v}
			} else {
				hdr = []string{"X-B3-TraceId", traceID, "X-B3-SpanId", clientSpan, "X-B3-Sampled", "1"}
			}
			resp, e, body := get(t, http.DefaultClient, m.entry, "gw.test", "/hello", hdr...)
			if resp.StatusCode != 200 || e.Backend != "app2" {
				t.Fatalf("status %d body %s", resp.StatusCode, body)
			}
			tid, _ := hex.DecodeString(traceID)
			spans := rx.waitSpans(t, tid, 4)
			byName := map[string]*tracepb.Span{}
			for _, s := range spans {
				key := s.service + " " + s.span.GetName()
				if byName[key] != nil {
					t.Fatalf("two spans %q", key)
				}
				byName[key] = s.span
				// Envoy's tags that every span of a proxy shares are its
				// resource's.
				if s.resource["component"] != "proxy" || s.resource["node_id"] == "" {
					t.Errorf("%s: resource %v, want component=proxy and the node_id", key, s.resource)
				}
			}
			var names []string
			for k := range byName {
				names = append(names, k)
			}
			sort.Strings(names)
			want := []string{"gw ingress", "n1 egress n2.test", "n1 ingress", "n2 ingress"}
			if strings.Join(names, ",") != strings.Join(want, ",") {
				t.Fatalf("spans %v, want %v", names, want)
			}
			parentOf := func(child, parent string) {
				t.Helper()
				c := byName[child]
				var p []byte
				if parent == "client" {
					p, _ = hex.DecodeString(clientSpan)
				} else {
					p = byName[parent].GetSpanId()
				}
				if !bytes.Equal(c.GetParentSpanId(), p) {
					t.Errorf("%s: parent %x, want %s's %x", child, c.GetParentSpanId(), parent, p)
				}
			}
			parentOf("gw ingress", "client")
			parentOf("n1 ingress", "gw ingress")
			parentOf("n1 egress n2.test", "n1 ingress")
			parentOf("n2 ingress", "n1 egress n2.test")
			if k := byName["n1 egress n2.test"].GetKind(); k != tracepb.Span_SPAN_KIND_CLIENT {
				t.Errorf("egress span kind %v", k)
			}
			attrs := map[string]string{}
			for _, kv := range byName["n2 ingress"].GetAttributes() {
				attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for k, v := range map[string]string{"http.method": "GET", "http.status_code": "200", "upstream_cluster": "local",
				"http.url": "http://n2.test/downstream", "response_flags": "-"} {
				if attrs[k] != v {
					t.Errorf("n2 ingress span: %s=%q, want %q (all: %v)", k, attrs[k], v, attrs)
				}
			}
		})
	}
}

func TestTracingUnsampledParentIsFollowed(t *testing.T) {
	rx := startOTLP(t)
	h := newHarness(t, withTracing("n", rx.addr, tracing.FormatTraceContext))
	app := newBackend(t, "app")
	h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	_, e, _ := get(t, http.DefaultClient, h.addr("ingress"), "x", "/", "traceparent", "00-"+traceID+"-00f067aa0ba902b7-00")
	// The upstream gets the proxy's span as parent, still unsampled.
	tp := e.Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-00") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent %q", tp)
	}
	// A sampled request after it reaches the collector; the unsampled one never does.
	sampled := "0af7651916cd43dd8448eb211c80319c"
	get(t, http.DefaultClient, h.addr("ingress"), "x", "/", "traceparent", "00-"+sampled+"-b7ad6b7169203331-01")
	sid, _ := hex.DecodeString(sampled)
	rx.waitSpans(t, sid, 1)
	uid, _ := hex.DecodeString(traceID)
	for _, s := range rx.received() {
		if bytes.Equal(s.span.GetTraceId(), uid) {
			t.Errorf("an unsampled trace was exported")
		}
	}
}

// TestTracingUnsampledInEveryFormat: through a real proxy, a parent with
// the sampled flag off, in each format, yields no span, and the upstream
// gets the same trace ID with a new span ID and the flag off; a new trace
// that the rate leaves out (0 %) still reaches the upstream with a trace
// ID and the flag off, as Envoy forwards an unsampled request's context.
func TestTracingUnsampledInEveryFormat(t *testing.T) {
	const traceID, parent = "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
	// parse reads the upstream's header in one format: trace ID, span ID, sampled.
	xray := func(v string) (string, string, string) {
		var tr, sp, smp string
		for _, kv := range strings.Split(v, ";") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "Root":
				tr = strings.ReplaceAll(strings.TrimPrefix(val, "1-"), "-", "")
			case "Parent":
				sp = val
			case "Sampled":
				smp = val
			}
		}
		return tr, sp, smp
	}
	for _, tc := range []struct {
		format string
		in     []string
		parse  func(h http.Header) (string, string, string)
	}{
		{tracing.FormatTraceContext, []string{"traceparent", "00-" + traceID + "-" + parent + "-00"}, func(h http.Header) (string, string, string) {
			p := strings.Split(h.Get("Traceparent"), "-")
			if len(p) != 4 {
				return "", "", ""
			}
			return p[1], p[2], strings.TrimPrefix(p[3], "0") // flags 00 or 01
		}},
		{tracing.FormatB3, []string{"b3", traceID + "-" + parent + "-0"}, func(h http.Header) (string, string, string) {
			p := strings.Split(h.Get("B3"), "-")
			if len(p) != 3 {
				return "", "", ""
			}
			return p[0], p[1], p[2]
		}},
		{tracing.FormatB3Multi, []string{"X-B3-TraceId", traceID, "X-B3-SpanId", parent, "X-B3-Sampled", "0"}, func(h http.Header) (string, string, string) {
			return h.Get("X-B3-Traceid"), h.Get("X-B3-Spanid"), h.Get("X-B3-Sampled")
		}},
		{tracing.FormatXRay, []string{"X-Amzn-Trace-Id", "Root=1-" + traceID[:8] + "-" + traceID[8:] + ";Parent=" + parent + ";Sampled=0"},
			func(h http.Header) (string, string, string) { return xray(h.Get("X-Amzn-Trace-Id")) }},
	} {
		t.Run(tc.format, func(t *testing.T) {
			rx := startOTLP(t)
			app := newBackend(t, "app")
			for _, rate := range []float64{1, 0} {
				h := newHarness(t, func(c *Config) {
					withTracing("n", rx.addr, tc.format)(c)
					c.Observability.Tracing.SampleRate = rate
				})
				h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
					routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
				if rate == 1 { // every new trace sampled: only the parent says no
					_, e, _ := get(t, http.DefaultClient, h.addr("ingress"), "x", "/", tc.in...)
					if tr, sp, smp := tc.parse(e.Header); tr != traceID || sp == parent || len(sp) != 16 || smp != "0" {
						t.Errorf("unsampled parent: upstream got trace %q span %q sampled %q (headers %v), want %s, a new span, 0",
							tr, sp, smp, e.Header, traceID)
					}
					continue
				}
				_, e, _ := get(t, http.DefaultClient, h.addr("ingress"), "x", "/")
				if tr, sp, smp := tc.parse(e.Header); len(tr) != 32 || tr == strings.Repeat("0", 32) || len(sp) != 16 || smp != "0" {
					t.Errorf("new trace at 0 %%: upstream got trace %q span %q sampled %q (headers %v)", tr, sp, smp, e.Header)
				}
				if n := h.stat("tracing.spans_started"); n != 1 {
					t.Errorf("tracing.spans_started = %d, want 1", n)
				}
			}
			// A sampled request after them reaches the collector; the
			// unsampled ones never do.
			h := newHarness(t, withTracing("n", rx.addr, tracing.FormatTraceContext))
			h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
				routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
			sampled := "0af7651916cd43dd8448eb211c80319c"
			get(t, http.DefaultClient, h.addr("ingress"), "x", "/", "traceparent", "00-"+sampled+"-b7ad6b7169203331-01")
			sid, _ := hex.DecodeString(sampled)
			rx.waitSpans(t, sid, 1)
			if got := len(rx.received()); got != 1 {
				t.Errorf("the collector received %d spans, want only the sampled one", got)
			}
		})
	}
}

func TestTracingCollectorThatNeverAnswersDropsSpans(t *testing.T) {
	// A collector that accepts connections and never answers: exports
	// hang, the bounded queue fills, later spans are dropped and counted,
	// and every request is still served.
	ln := otlptest.NeverAnswers(t)
	h := newHarness(t, func(c *Config) {
		withTracing("n", ln.Addr().String(), tracing.FormatTraceContext)(c)
		c.Observability.Tracing.QueueSize = 4
		c.Observability.Tracing.BatchSize = 1
		c.Observability.Tracing.ExportTimeout = time.Hour
	})
	app := newBackend(t, "app")
	h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	for i := range 50 {
		resp, _, body := get(t, http.DefaultClient, h.addr("ingress"), "x", "/")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	waitUntil(t, 10*time.Second, "dropped spans", func() bool { return h.stat("tracing.spans_dropped") > 0 })
	if n := h.stat("tracing.spans_started"); n != 50 {
		t.Errorf("tracing.spans_started = %d, want 50", n)
	}
}

func TestXRaySegments(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	env := map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1", "XRAY_DAEMON_PORT": port, "XRAY_SAMPLING_RATE": "1"}
	obs, err := ObservabilityFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, testNode)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.Observability = obs })
	app := newBackend(t, "app")
	h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	root := fmt.Sprintf("1-%08x-0123456789abcdef01234567", time.Now().Unix())
	_, e, _ := get(t, http.DefaultClient, h.addr("ingress"), "x.test", "/items?id=1", "X-Amzn-Trace-Id", "Root="+root+";Parent=53995c3f42cd8ad8;Sampled=1")
	up := e.Header.Get("X-Amzn-Trace-Id")
	if !strings.HasPrefix(up, "Root="+root+";Parent=") || !strings.HasSuffix(up, ";Sampled=1") {
		t.Errorf("upstream X-Amzn-Trace-Id %q", up)
	}
	buf := make([]byte, 65536)
	_ = pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	head, doc, ok := strings.Cut(string(buf[:n]), "\n")
	if !ok || head != `{"format":"json","version":1}` {
		t.Fatalf("datagram %q", buf[:n])
	}
	var seg map[string]any
	if err := json.Unmarshal([]byte(doc), &seg); err != nil {
		t.Fatal(err)
	}
	check := func(path string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("segment %s = %v, want %v\n%s", path, got, want, doc)
		}
	}
	check("name", seg["name"], "test-mesh/test-node")
	check("trace_id", seg["trace_id"], root)
	check("parent_id", seg["parent_id"], "53995c3f42cd8ad8")
	check("origin", seg["origin"], "AWS::AppMesh::Proxy")
	check("aws", seg["aws"], map[string]any{"app_mesh": map[string]any{"mesh_name": "test-mesh", "virtual_node_name": "test-node"}})
	httpm, _ := seg["http"].(map[string]any)
	req, _ := httpm["request"].(map[string]any)
	resp, _ := httpm["response"].(map[string]any)
	check("http.request.method", req["method"], "GET")
	check("http.request.url", req["url"], "http://x.test/items?id=1")
	check("http.response.status", resp["status"], 200)
	if id, _ := seg["id"].(string); len(id) != 16 || !strings.Contains(up, "Parent="+id) {
		t.Errorf("segment id %q is not the parent sent upstream (%s)", id, up)
	}
	st, _ := seg["start_time"].(float64)
	et, _ := seg["end_time"].(float64)
	if st <= 0 || et < st {
		t.Errorf("start_time %v end_time %v", st, et)
	}
}

func TestTracingProviderFromControlPlane(t *testing.T) {
	// No tracer of its own: the HCM's tracing.provider (what weft server
	// sends with --proxy-tracing) names the collector and the rate.
	rx := startOTLP(t)
	h := newHarness(t)
	app := newBackend(t, "app")
	withProvider := func(m *hcmv3.HttpConnectionManager) {
		m.Tracing = &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 100},
			Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{
				TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{ServiceName: "from-xds", GrpcService: &corev3.GrpcService{
					TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: rx.addr, StatPrefix: "otlp"}}}})}}}
	}
	h.push(httpListener("ingress", httpManager("ingress", "rds", withProvider)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	traceID := "5bf92f3577b34da6a3ce929d0e0e4736"
	get(t, http.DefaultClient, h.addr("ingress"), "x", "/", "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	tid, _ := hex.DecodeString(traceID)
	if s := rx.waitSpans(t, tid, 1); s[0].service != "from-xds" {
		t.Errorf("service.name %q", s[0].service)
	}
	// A tracer weft proxy does not speak is NACKed, naming the field.
	zipkin := func(m *hcmv3.HttpConnectionManager) {
		m.Tracing = &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.ZipkinConfig{CollectorCluster: "z"})}}}
	}
	mark := h.xds.Mark()
	h.xds.Set(httpListener("ingress", httpManager("ingress", "rds", zipkin)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	r := h.xds.WaitSince(mark, 10*time.Second, "an LDS NACK", func(r xdstest.Request) bool { return r.Error != "" })
	if !strings.Contains(r.Error, "tracing.provider: tracer envoy.tracers.zipkin") {
		t.Errorf("NACK %q", r.Error)
	}
}

func TestTracingOverOTLPHTTP(t *testing.T) {
	got := make(chan *collectortrace.ExportTraceServiceRequest, 16)
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(b, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		select {
		case got <- &req:
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer col.Close()
	h := newHarness(t, func(c *Config) {
		c.Observability.Tracing = &tracing.Config{Exporter: tracing.ExporterOTLPHTTP, Endpoint: col.URL + "/v1/traces",
			SampleRate: 1, ServiceName: "http-export"}
	})
	app := newBackend(t, "app")
	h.push(httpListener("ingress", httpManager("ingress", "rds", tracingOn)),
		routeConfig("rds", vhost("all", []string{"*"}, routeTo("/", "local"))), staticCluster("local", app.addr()))
	get(t, http.DefaultClient, h.addr("ingress"), "x", "/")
	select {
	case req := <-got:
		s := req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()[0]
		if s.GetName() != "ingress" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("span %s kind %v", s.GetName(), s.GetKind())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no OTLP HTTP export within 20s")
	}
}
