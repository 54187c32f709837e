package proxy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

func TestControlPlaneLoss(t *testing.T) {
	h := newHarness(t)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", a.addr()))
	c := newClient(t)
	addr := h.addr("egress")
	if h.stat("control_plane.connected_state") != 1 {
		t.Fatal("connected_state is not 1 while connected")
	}
	h.xds.Stop()
	waitUntil(t, 10*time.Second, "connected_state 0", func() bool { return h.stat("control_plane.connected_state") == 0 })
	if s := h.admin("/stats?filter=control_plane.connected_state&format=json"); !strings.Contains(s, `"value": 0`) && !strings.Contains(s, `"value":0`) {
		t.Errorf("/stats json while disconnected: %s", s)
	}
	// The last good configuration keeps serving.
	for i := 0; i < 5; i++ {
		resp, e, _ := get(t, c, addr, "x", "/")
		if resp.StatusCode != 200 || e.Backend != "a" {
			t.Fatalf("while disconnected: %d %q", resp.StatusCode, e.Backend)
		}
	}
	if !strings.Contains(h.admin("/server_info"), `"state": "LIVE"`) {
		t.Error("server_info is not LIVE while disconnected")
	}
	// The control plane comes back (same address) with a change: the
	// proxy reconnects and applies it.
	h.xds.Restart()
	waitUntil(t, 30*time.Second, "reconnect", func() bool { return h.stat("control_plane.connected_state") == 1 })
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", b.addr()))
	waitUntil(t, 10*time.Second, "the new endpoint", func() bool {
		_, e, _ := get(t, c, addr, "x", "/")
		return e.Backend == "b"
	})
}

func TestNACKKeepsOldConfig(t *testing.T) {
	h := newHarness(t)
	a := newBackend(t, "a")
	v1 := h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", a.addr()))
	c := newClient(t)
	addr := h.addr("egress")

	cases := []struct {
		name string
		mut  func(l *listenerv3.Listener)
		want string
	}{
		{"unsupported listener field", func(l *listenerv3.Listener) { l.Transparent = wrapBool(true) }, "field transparent is not supported"},
		{"unsupported socket option", func(l *listenerv3.Listener) {
			l.SocketOptions = []*corev3.SocketOption{{Level: 1, Name: 2}}
		}, "field socket_options is not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := httpListener("egress", httpManager("egress", "rds"))
			tc.mut(l)
			mark := h.xds.Mark()
			v := h.xds.Set(l, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), edsCluster("c"), cla("c", a.addr()))
			nack := h.xds.WaitSince(mark, 10*time.Second, "LDS NACK", func(r xdstestRequest) bool {
				return r.TypeURL == xdsclient.ListenerType && r.Error != ""
			})
			if !strings.Contains(nack.Error, tc.want) || nack.Version == v {
				t.Fatalf("NACK %+v; want error containing %q and the previous version", nack, tc.want)
			}
			resp, e, _ := get(t, c, addr, "x", "/")
			if resp.StatusCode != 200 || e.Backend != "a" {
				t.Fatalf("old config no longer serves: %d", resp.StatusCode)
			}
		})
	}
	if got := h.stat("listener_manager.lds.update_rejected"); got != 2 {
		t.Errorf("lds.update_rejected = %d, want 2", got)
	}
	var dump struct {
		Configs []struct {
			VersionInfo string `json:"version_info"`
			Type        string `json:"@type"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(h.admin("/config_dump")), &dump); err != nil {
		t.Fatal(err)
	}
	for _, c := range dump.Configs {
		if strings.HasSuffix(c.Type, "ListenersConfigDump") && c.VersionInfo != v1 {
			t.Errorf("config_dump listeners at version %q, want the last accepted %q", c.VersionInfo, v1)
		}
	}
	t.Run("bad route in RDS", func(t *testing.T) {
		rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
		rc.VirtualHosts[0].Routes[0].Match.PathSpecifier = nil
		mark := h.xds.Mark()
		h.xds.Set(httpListener("egress", httpManager("egress", "rds")), rc, edsCluster("c"), cla("c", a.addr()))
		nack := h.xds.WaitSince(mark, 10*time.Second, "RDS NACK", func(r xdstestRequest) bool {
			return r.TypeURL == xdsclient.RouteType && r.Error != ""
		})
		if !strings.Contains(nack.Error, "path specifier") {
			t.Fatalf("NACK %q", nack.Error)
		}
		resp, _, _ := get(t, c, addr, "x", "/")
		if resp.StatusCode != 200 {
			t.Fatalf("old routes no longer serve: %d", resp.StatusCode)
		}
	})
}

func TestAccessLogFormats(t *testing.T) {
	h := newHarness(t)
	a := newBackend(t, "a")
	dir := t.TempDir()
	def, text, js := filepath.Join(dir, "default.log"), filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log")
	jsonFmt, _ := structpb.NewStruct(map[string]any{
		"start": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"code": "%RESPONSE_CODE%", "proto": "%PROTOCOL%", "bytes": "%BYTES_SENT%", "upstream": "%UPSTREAM_HOST%",
		"flags": "%RESPONSE_FLAGS%", "missing": "%REQ(X-NOPE)%", "mixed": "code=%RESPONSE_CODE%",
	})
	h.push(
		httpListener("egress", httpManager("egress", "rds",
			withAccessLog(def, nil),
			withAccessLog(text, &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
				TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
					InlineString: "%START_TIME(%Y/%m/%d)% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DURATION% %UPSTREAM_CLUSTER% %REQ(USER-AGENT):4%\n"}}}}),
			withAccessLog(js, &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: jsonFmt}}))),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
		edsCluster("c"), cla("c", a.addr()))
	c := newClient(t)
	get(t, c, h.addr("egress"), "colors.local", "/color?x=1", "User-Agent", "curl/8.0", "X-Request-Id", "rid-1")
	read := func(p string) string {
		var s string
		waitUntil(t, 5*time.Second, "a line in "+p, func() bool {
			b, _ := os.ReadFile(p)
			s = string(b)
			return strings.HasSuffix(s, "\n")
		})
		return s
	}
	wantDef := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /color\?x=1 HTTP/1\.1" 200 - 0 \d+ \d+ \d+ "-" "curl/8\.0" "rid-1" "colors\.local" "` + regexp.QuoteMeta(a.addr()) + `"\n$`)
	if got := read(def); !wantDef.MatchString(got) {
		t.Errorf("default format:\n%q", got)
	}
	wantText := regexp.MustCompile(`^\d{4}/\d\d/\d\d GET /color\?x=1 200 \d+ c curl\n$`)
	if got := read(text); !wantText.MatchString(got) {
		t.Errorf("text format:\n%q", got)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(read(js)), &m); err != nil {
		t.Fatalf("json format: %v", err)
	}
	if m["code"] != float64(200) || m["method"] != "GET" || m["path"] != "/color?x=1" || m["proto"] != "HTTP/1.1" ||
		m["upstream"] != a.addr() || m["flags"] != "-" || m["missing"] != nil || m["mixed"] != "code=200" {
		t.Errorf("json format: %v", m)
	}
	if _, ok := m["bytes"].(float64); !ok {
		t.Errorf("BYTES_SENT is not a number: %v", m["bytes"])
	}
}

// TestGeneratedRequestID: a request without x-request-id gets one, as
// Envoy's generate_request_id does, on the downstream request itself, so
// the access log's %REQ(X-REQUEST-ID)% and the upstream see the same ID.
func TestGeneratedRequestID(t *testing.T) {
	h := newHarness(t)
	a := newBackend(t, "a")
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "%REQ(:PATH)% %REQ(X-REQUEST-ID)%\n"}}}}
	tests := []struct {
		name     string
		generate *wrapperspb.BoolValue
		hdr      []string
		want     func(up, logged string) bool
	}{
		{"generated when absent", nil, nil, func(up, logged string) bool { return uuid.MatchString(up) && logged == up }},
		{"kept when present", nil, []string{"X-Request-Id", "rid-7"}, func(up, logged string) bool { return up == "rid-7" && logged == "rid-7" }},
		{"not generated when disabled", wrapBool(false), nil, func(up, logged string) bool { return up == "" && logged == "-" }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "access.log")
			h.push(
				httpListener("egress", httpManager("egress", "rds", withAccessLog(logPath, format),
					func(m *hcmv3.HttpConnectionManager) { m.GenerateRequestId = tc.generate })),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))),
				edsCluster("c"), cla("c", a.addr()))
			path := fmt.Sprintf("/rid/%d", i)
			// A new client: connections keep the configuration they started with.
			_, e, _ := get(t, newClient(t), h.addr("egress"), "x", path, tc.hdr...)
			up := e.Header.Get("X-Request-Id")
			var logged string
			waitUntil(t, 5*time.Second, "the access log line", func() bool {
				b, _ := os.ReadFile(logPath)
				for _, l := range strings.Split(string(b), "\n") {
					if p, id, ok := strings.Cut(l, " "); ok && p == path {
						logged = id
						return true
					}
				}
				return false
			})
			if !tc.want(up, logged) {
				t.Errorf("upstream saw x-request-id %q, the access log %q", up, logged)
			}
		})
	}
}

func TestAdmin(t *testing.T) {
	h := newHarness(t)
	if got := h.admin("/ready"); got != "PRE_INITIALIZING\n" {
		t.Errorf("/ready before config: %q", got)
	}
	a := newBackend(t, "a")
	h.push(
		httpListener("lds_ingress_0.0.0.0_15000", httpManager("ingress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "cds_ingress_m_n_http_9080"))),
		edsCluster("cds_ingress_m_n_http_9080"), cla("cds_ingress_m_n_http_9080", a.addr()))
	if err := h.p.WaitLive(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	for i := 0; i < 3; i++ {
		get(t, c, h.addr("lds_ingress_0.0.0.0_15000"), "x", "/")
	}
	if got := h.admin("/ready"); got != "LIVE\n" {
		t.Errorf("/ready: %q", got)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(h.admin("/server_info")), &info); err != nil || info["state"] != "LIVE" {
		t.Errorf("/server_info: %v %v", info, err)
	}
	if node, _ := info["node"].(map[string]any); node["id"] != testNode {
		t.Errorf("/server_info node: %v", info["node"])
	}
	stats := h.admin("/stats")
	for _, want := range []string{"control_plane.connected_state: 1", "cluster.cds_ingress_m_n_http_9080.upstream_rq_total: 3",
		"cluster.cds_ingress_m_n_http_9080.upstream_rq_200: 3", "cluster.cds_ingress_m_n_http_9080.upstream_rq_2xx: 3",
		"http.ingress.downstream_rq_total: 3", "http.ingress.downstream_rq_2xx: 3", "server.live: 1"} {
		if !strings.Contains(stats, want+"\n") {
			t.Errorf("/stats lacks %q", want)
		}
	}
	prom := h.admin("/stats/prometheus")
	for _, want := range []string{
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="cds_ingress_m_n_http_9080"} 3`,
		`envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="cds_ingress_m_n_http_9080"} 3`,
		`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="cds_ingress_m_n_http_9080"} 3`,
		`envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"} 3`,
		`envoy_control_plane_connected_state 1`, "# TYPE envoy_cluster_upstream_rq_total counter",
	} {
		if !strings.Contains(prom, want+"\n") {
			t.Errorf("/stats/prometheus lacks %q", want)
		}
	}
	if !regexp.MustCompile(`envoy_listener_downstream_cx_total\{envoy_listener_address="127\.0\.0\.1_\d+"\} 1`).MatchString(prom) {
		t.Errorf("/stats/prometheus lacks the listener stats")
	}
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(h.admin("/config_dump")), &dump); err != nil || len(dump.Configs) != 5 || dump.Configs[4]["@type"] != "type.googleapis.com/envoy.admin.v3.SecretsConfigDump" {
		t.Fatalf("/config_dump: %v (%d configs)", err, len(dump.Configs))
	}
	if !regexp.MustCompile(`"name":\s*"lds_ingress_0.0.0.0_15000"`).MatchString(h.admin("/config_dump")) {
		t.Error("/config_dump lacks the listener")
	}
	cl := h.admin("/clusters")
	for _, want := range []string{"cds_ingress_m_n_http_9080::default_priority::max_connections::1024",
		"cds_ingress_m_n_http_9080::" + a.addr() + "::rq_total::3", "cds_ingress_m_n_http_9080::" + a.addr() + "::health_flags::healthy"} {
		if !strings.Contains(cl, want+"\n") {
			t.Errorf("/clusters lacks %q:\n%s", want, cl)
		}
	}
}
