package accesslog

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

func entry() *Entry {
	r := httptest.NewRequest("POST", "http://svc.local/api/v1/items?x=1", nil)
	r.Header.Set("User-Agent", "curl/8.0")
	r.Header.Set("X-Request-Id", "rid")
	r.Header.Set("X-Forwarded-For", "10.0.0.1")
	return &Entry{
		Start:    time.Date(2026, 11, 22, 4, 5, 6, 789_000_000, time.UTC),
		Duration: 12 * time.Millisecond, RequestDuration: -1, ResponseDuration: 3 * time.Millisecond,
		Request: r, Protocol: "HTTP/1.1", ResponseCode: 503,
		ResponseHeader: http.Header{"X-Envoy-Upstream-Service-Time": {"2"}, "Grpc-Status": {"14"}},
		Flags:          UpstreamConnectionFailure | UpstreamRetryLimitExceeded,
		BytesReceived:  10, BytesSent: 91, UpstreamHost: "10.1.1.1:8080", UpstreamCluster: "cds_egress_m_n_http_8080",
		DownstreamRemote: "10.0.0.2:5555", DownstreamLocal: "10.0.0.3:15001",
	}
}

func TestText(t *testing.T) {
	cases := []struct{ format, want string }{
		{DefaultFormat, `[2026-11-22T04:05:06.789Z] "POST /api/v1/items?x=1 HTTP/1.1" 503 UF,URX 10 91 12 2 "10.0.0.1" "curl/8.0" "rid" "svc.local" "10.1.1.1:8080"` + "\n"},
		{"%START_TIME(%Y/%m/%dT%H:%M:%S.%3f %s)%", "2026/11/22T04:05:06.789 1795320306"},
		{"%REQ(X-MISSING?USER-AGENT)% %REQ(X-NONE)% %REQ(USER-AGENT):4%", "curl/8.0 - curl"},
		{"%REQ_WITHOUT_QUERY(:PATH)% %RESPONSE_FLAGS_LONG%", "/api/v1/items UpstreamConnectionFailure,UpstreamRetryLimitExceeded"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT% %UPSTREAM_CLUSTER%", "10.0.0.2 15001 cds_egress_m_n_http_8080"},
		{"%GRPC_STATUS% %GRPC_STATUS_NUMBER% %RESPONSE_DURATION% %REQUEST_DURATION%", "Unavailable 14 3 -"},
		{"100%% %PROTOCOL%", "100% HTTP/1.1"},
	}
	for _, tc := range cases {
		f, err := CompileText(tc.format, false)
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if got := string(f.Append(nil, entry())); got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.format, got, tc.want)
		}
	}
}

// TestRequestedServerNameSanitized: %REQUESTED_SERVER_NAME% logs an SNI
// with a byte other than a letter, digit, '.', '-' or '_' as "invalid:"
// and the name with those bytes made '_', as Envoy 1.34
// (StringUtil::sanitizeInvalidHostname); a valid one as it is, none as
// "-". weft logged the SNI as the ClientHello had it.
func TestRequestedServerNameSanitized(t *testing.T) {
	f, err := CompileText("%REQUESTED_SERVER_NAME%", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sni, want string }{
		{"", "-"},
		{"svc.mesh.local", "svc.mesh.local"},
		{"My-Svc_1.example", "My-Svc_1.example"},
		{"a b", "invalid:a_b"},
		{"x\"\n\x00.io", "invalid:x___.io"},
		{"caf\u00e9.io", "invalid:caf__.io"}, // each byte of é
		{"a:443/b", "invalid:a_443_b"},
	} {
		e := entry()
		e.ServerName = tc.sni
		if got := string(f.Append(nil, e)); got != tc.want {
			t.Errorf("SNI %q logged %q; want %q", tc.sni, got, tc.want)
		}
	}
}

func TestTextErrors(t *testing.T) {
	for _, f := range []string{"%NOPE%", "%REQ%", "%START_TIME(%Q)%", "%BYTES_SENT(x)%", "%REQ(A):x%", "%PROTOCOL"} {
		if _, err := CompileText(f, false); err == nil {
			t.Errorf("%q compiled; Envoy rejects it", f)
		}
	}
}

func TestJSON(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{
		"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%", "missing": "%REQ(X-NONE)%",
		"text": "took %DURATION% ms", "lit": 7.0, "nested": map[string]any{"host": "%UPSTREAM_HOST%"},
	})
	j, err := CompileJSON(s, false)
	if err != nil {
		t.Fatal(err)
	}
	line := string(j.Append(nil, entry()))
	if !strings.HasSuffix(line, "\n") {
		t.Fatal("no newline")
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if m["code"] != 503.0 || m["path"] != "/api/v1/items?x=1" || m["missing"] != nil || m["text"] != "took 12 ms" ||
		m["lit"] != 7.0 || m["nested"].(map[string]any)["host"] != "10.1.1.1:8080" {
		t.Errorf("%s", line)
	}
	omit, _ := CompileJSON(s, true)
	if strings.Contains(string(omit.Append(nil, entry())), "missing") {
		t.Error("omit_empty_values kept an unavailable key")
	}
}

// FuzzCompileText: the parser never panics, and what compiles formats.
func FuzzCompileText(f *testing.F) {
	for _, s := range []string{DefaultFormat, "%REQ(A?B):3%", "%START_TIME(%s.%3f)%", "%%", "%(", "a%b%c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tf, err := CompileText(s, false)
		if err != nil {
			return
		}
		_ = tf.Append(nil, entry())
		_ = tf.Append(nil, &Entry{})
	})
}
