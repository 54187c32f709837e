package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestEvloopH2AccessLogSameLines: with --h2loops, h2c streams of a
// logged listener are served by the loops (its connection is not handed
// off), and each writes the line the goroutine path writes for the same
// request, in Envoy's default format, a text format and App Mesh's JSON
// one: %PROTOCOL% HTTP/2, the bytes of each stream, response headers,
// upstream hosts, flags and details, to HTTP/1.1 and HTTP/2 clusters, a
// cluster that cannot be reached, one with no host, a path merge_slashes
// changes and a request no route matches; and an HTTP/1.1 request to the
// HTTP/2 cluster.
func TestEvloopH2AccessLogSameLines(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops need Linux") // CI runs Linux
	}
	ok := newBackend(t, "ok")
	up, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/x-h2")
		if r.URL.Path == "/h2/t" {
			w.Header().Set("Trailer", "X-Sum")
		}
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(body))
		w.Header().Set("X-Sum", fmt.Sprint(len(body)))
		if r.URL.Path == "/h2/d" {
			w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u") // then no trailer is logged
		}
	}))
	dead := deadAddr(t)
	text := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% " +
		"%RESP(CONTENT-TYPE)% %RESP(CONTENT-LENGTH)% %RESP(SERVER)% %REQ(:AUTHORITY)% %PROTOCOL% " +
		"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %RESPONSE_CODE_DETAILS% " +
		"%UPSTREAM_REQUEST_ATTEMPT_COUNT% %ROUTE_NAME% %CONNECTION_ID% %REQ(X-REQUEST-ID)% %REQ(USER-AGENT)% " +
		"%REQ(CONTENT-TYPE)% %REQ(COOKIE)% %REQ(:SCHEME)% %RESP(X-SUM)% %TRAILER(X-SUM)% %RESP(TRAILER)%\n"}}
	// The JSON shape App Mesh users write (times left out: they differ).
	jsonFmt, _ := structpb.NewStruct(map[string]any{
		"method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "protocol": "%PROTOCOL%",
		"response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%", "bytes_received": "%BYTES_RECEIVED%",
		"bytes_sent": "%BYTES_SENT%", "upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
		"authority": "%REQ(:AUTHORITY)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%", "user_agent": "%REQ(USER-AGENT)%",
		"request_id": "%REQ(X-REQUEST-ID)%", "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	})
	js := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: jsonFmt}}
	run := func(loops bool) []string {
		h := newHarness(t, func(c *Config) { c.Goroutines, c.H2Goroutines = !loops, !loops })
		dir := t.TempDir()
		files := []string{filepath.Join(dir, "default.log"), filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log")}
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(files[0], nil),
			withAccessLog(files[1], text), withAccessLog(files[2], js), func(m *hcmv3.HttpConnectionManager) { m.MergeSlashes = true })),
			routeConfig("rds", vhost("only", []string{"only.local"}, routeTo("/only", "ok")),
				vhost("v", []string{"*"}, routeTo("/dead", "dead"), routeTo("/none", "none"), routeTo("/h2", "h2"), routeTo("/", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("h2", h2Upstream), cla("h2", up),
			edsCluster("dead"), cla("dead", dead), edsCluster("none"), cla("none"))
		c := h2cClient(t)
		addr := h.addr("egress")
		send := func(method, host, path, body string, hdr ...string) {
			t.Helper()
			var rd io.Reader
			if body != "" {
				rd = strings.NewReader(body)
			}
			req, _ := http.NewRequest(method, "http://"+addr+path, rd)
			req.Host = host
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Add(hdr[i], hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s %s: HTTP/%d", method, path, resp.ProtoMajor)
			}
		}
		send("GET", "svc.local", "/a?q=1", "", "User-Agent", "ua-1", "X-Forwarded-For", "10.0.0.1", "X-Request-Id", "id-1",
			"Cookie", "a=1", "Cookie", "b=2")
		send("POST", "svc.local:8080", "/b", "hello", "Content-Type", "text/plain", "X-Request-Id", "id-2")
		send("POST", "svc.local", "/h2/c", strings.Repeat("x", 70000), "X-Request-Id", "id-3")
		send("GET", "svc.local", "/h2/d", "")
		send("PUT", "svc.local", "/h2/t", "abc", "X-Request-Id", "id-t")
		send("GET", "svc.local", "/dead", "", "X-Request-Id", "id-5")
		send("GET", "only.local", "/nowhere", "", "X-Request-Id", "id-6")
		send("GET", "svc.local", "/none/x", "", "X-Request-Id", "id-7")
		send("GET", "svc.local", "//a//b?q=2", "", "X-Request-Id", "id-8")
		// An HTTP/1.1 request to the HTTP/2 cluster (on the loops, a
		// stream of their HTTP/2 connections too).
		req, _ := http.NewRequest("POST", "http://"+addr+"/h2/h1", strings.NewReader("xyz"))
		req.Host = "svc.local"
		req.Header.Set("X-Request-Id", "id-h1")
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		const lines = 10
		out := make([]string, len(files))
		waitUntil(t, 5*time.Second, "the access log lines", func() bool {
			for i, f := range files {
				b, _ := os.ReadFile(f)
				if bytes.Count(b, []byte("\n")) != lines {
					return false
				}
				out[i] = string(b)
			}
			return true
		})
		l := h.listener("egress")
		if l.OnLoops() != loops || l.HandedOff() != 0 {
			t.Fatalf("on the loops %v (want %v), %d connections handed off", l.OnLoops(), loops, l.HandedOff())
		}
		if loops && (l.LoopH2Conns() != 1 || l.LoopH2UpstreamStreams() != 4) {
			t.Fatalf("%d h2c connections on the loops (want 1), %d streams to HTTP/2 upstreams (want 4)",
				l.LoopH2Conns(), l.LoopH2UpstreamStreams())
		}
		return out
	}
	g, l := run(false), run(true)
	for i, name := range []string{"default", "text", "json"} {
		gs, ls := sortLines(normalizeH2Log(g[i])), sortLines(normalizeH2Log(l[i]))
		if gs != ls {
			t.Errorf("%s format:\ngoroutine path:\n%s\nloops:\n%s", name, g[i], l[i])
		}
	}
	if !strings.Contains(l[0], `HTTP/2" 200`) || !strings.Contains(l[1], " 3 3 X-Sum\n") {
		t.Errorf("loops: no HTTP/2 line, or no declared trailer:\n%s\n%s", l[0], l[1])
	}
}

// logServiceTime is the JSON format's upstream service time.
var logServiceTime = regexp.MustCompile(`"upstream_service_time":"\d+"`)

// normalizeH2Log is normalizeLog, and the JSON line's service time.
func normalizeH2Log(s string) string {
	return logServiceTime.ReplaceAllString(normalizeLog(s), `"upstream_service_time":"N"`)
}
