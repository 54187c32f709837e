package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// cutHTTP1Upstream answers each connection's request with head, then
// closes the connection: a response cut after its head.
func cutHTTP1Upstream(t *testing.T, head string) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_, _ = io.WriteString(c, head)
	})
}

// histogramCount is how many values the histogram family (Prometheus
// name) with the labels given has recorded, read from the admin's
// /stats/prometheus.
func histogramCount(t *testing.T, h *harness, family, labels string) string {
	t.Helper()
	prefix := family + "_count{" + labels + "} "
	for _, line := range strings.Split(h.admin("/stats/prometheus"), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0" // a histogram never recorded to is not written
}

// h2Exchanges asks for each path on a stream of its own of one h2c
// connection, the client's stream window window (SETTINGS_INITIAL_WINDOW_SIZE;
// the default when negative), and tells how each stream ended: END_STREAM,
// or RST_STREAM and its code. (What came before is
// TestBodySentOnAsItComesSamePaths's.)
func h2Exchanges(t *testing.T, addr string, window int, paths ...string) map[string]string {
	t.Helper()
	cl := dialH2(t, addr)
	defer cl.c.Close()
	if window >= 0 {
		if err := cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(window)}); err != nil {
			t.Fatal(err)
		}
	}
	_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, path := range paths {
		if err := cl.headers(uint32(2*i+1), path); err != nil {
			t.Fatal(err)
		}
	}
	_ = cl.bw.Flush()
	res := map[string]string{}
	for f := range cl.frames {
		i := int(f.stream-1) / 2
		if f.stream == 0 || i >= len(paths) || res[paths[i]] != "" {
			continue
		}
		switch {
		case f.typ == http2.FrameRSTStream:
			res[paths[i]] = "RST_STREAM " + f.code.String()
		case f.end:
			res[paths[i]] = "END_STREAM"
		}
		if len(res) == len(paths) {
			return res
		}
	}
	for _, path := range paths {
		if res[path] == "" {
			res[path] = "the connection ended"
		}
	}
	return res
}

// h2ResetStalled asks for path on an h2c connection that gives the
// proxy no window (SETTINGS_INITIAL_WINDOW_SIZE 0), and resets the stream
// (CANCEL) once the response's HEADERS came: its end, waiting for the
// window, never goes out.
func h2ResetStalled(t *testing.T, addr, path string) string {
	t.Helper()
	cl := dialH2(t, addr)
	defer cl.c.Close()
	_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	if err := cl.headers(1, path); err != nil {
		t.Fatal(err)
	}
	_ = cl.bw.Flush()
	for f := range cl.frames {
		if f.stream != 1 {
			continue
		}
		if f.typ != http2.FrameHeaders || f.end {
			return fmt.Sprintf("%v (end %v) before the window opened", f.typ, f.end)
		}
		_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = cl.bw.Flush()
		return "HEADERS, then reset by the client"
	}
	return "the connection ended"
}

// TestRequestTimeSamePaths: downstream_rq_time records a request whose
// response went out whole, and none whose response was cut: an upstream
// that closes or resets in the middle of its response (HTTP/1.1 chunked
// or sized, HTTP/2), a request body that turns malformed after the
// response started, and over HTTP/2 (h2c) a stream reset by
// stream_flush_timeout while its end waits for the window the client
// does not give (its whole response came from the upstream, HTTP/1.1 or
// HTTP/2), or reset by the client then. Envoy's connection manager completes the request's
// timespan only once the codec has sent the response's end (endStream,
// maybeEndEncode, onCodecEncodeComplete: HTTP/2's frame with END_STREAM
// sent); a reset stream never completes it. The goroutine path recorded
// every request; the loops recorded none of the HTTP/1.1 cuts, and the
// stream reset by the flush timeout, recorded when its upstream's
// response ended. Alike on every path, with the counters and the access
// log. Without a flush timeout (stream_flush_timeout and
// stream_idle_timeout 0: listener noflush) a stream reset by the client
// while its end waits is not recorded either: the goroutine path recorded
// it, as its handler returned before x/net sent the end.
func TestRequestTimeSamePaths(t *testing.T) {
	whole := newBackend(t, "whole")
	chunked := cutHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	sized := cutHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
	h2, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM after part of the body
	}))
	h2whole, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	early := earlyHTTP1Upstream(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}
	gets := []string{"/whole", "/chunked", "/sized", "/h2"}
	h2Gets := []string{"h2 /whole", "h2 /full2", "h2 /sized", "h2 /h2", "h2 stalled /whole", "h2 stalled /full2",
		"h2 stalled, reset by the client"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		noFlushLog := filepath.Join(t.TempDir(), "noflush.log")
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format), func(m *hcmv3.HttpConnectionManager) {
			m.StreamFlushTimeout = durationpb.New(200 * time.Millisecond)
		})), httpListener("noflush", httpManager("noflush", "rds", withAccessLog(noFlushLog, format), func(m *hcmv3.HttpConnectionManager) {
			m.StreamFlushTimeout, m.StreamIdleTimeout = durationpb.New(0), durationpb.New(0)
		})),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/whole", "whole"), routeTo("/chunked", "chunked"),
				routeTo("/sized", "sized"), routeTo("/h2", "h2"), routeTo("/early", "early"), routeTo("/full2", "h2whole"))),
			edsCluster("whole"), cla("whole", whole.addr()), edsCluster("chunked"), cla("chunked", chunked),
			edsCluster("sized"), cla("sized", sized), edsCluster("h2", h2Upstream), cla("h2", h2),
			edsCluster("early"), cla("early", early), edsCluster("h2whole", h2Upstream), cla("h2whole", h2whole))
		res := pathResult{answers: map[string]string{}}
		for _, path := range gets {
			c := dialRaw(t, h.addr("egress"))
			_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				res.answers[path] = err.Error()
			} else {
				b, err := io.ReadAll(resp.Body)
				if path == "/whole" {
					b = b[:0] // it echoes the request's ID
				}
				res.answers[path] = fmt.Sprintf("%d %q, cut %v", resp.StatusCode, b, err != nil)
			}
			_ = c.Close()
		}
		// A chunked body malformed once the response started.
		c := dialRaw(t, h.addr("egress"))
		_, _ = io.WriteString(c, "POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatalf("%s, /early: %v", p.name, err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
			t.Fatalf("%s, /early: the response's first bytes: %v", p.name, err)
		}
		_, _ = io.WriteString(c, "zz\r\nabc\r\n")
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = c.Close()

		// Over h2c: whole, cut by the upstream, and stalled on a window
		// the client keeps at 0 until the flush timeout resets it.
		for path, how := range h2Exchanges(t, h.addr("egress"), -1, "/whole", "/full2", "/sized", "/h2") {
			res.answers["h2 "+path] = how
		}
		for path, how := range h2Exchanges(t, h.addr("egress"), 0, "/whole", "/full2") {
			res.answers["h2 stalled "+path] = how
		}
		res.answers["h2 stalled, reset by the client"] = h2ResetStalled(t, h.addr("egress"), "/whole")
		res.answers["h2 stalled, reset by the client, no flush timeout"] = h2ResetStalled(t, h.addr("noflush"), "/whole")
		res.log = awaitLog(t, logFile, len(gets)+1+len(h2Gets)) + "\nnoflush: " + awaitLog(t, noFlushLog, 1)
		var stats []string
		for _, name := range []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx",
			"downstream_rq_5xx", "downstream_cx_protocol_error"} {
			stats = append(stats, fmt.Sprintf("%s %d", name, h.stat("http.egress."+name)))
		}
		stats = append(stats, "downstream_rq_time count "+
			histogramCount(t, h, "envoy_http_downstream_rq_time", `envoy_http_conn_manager_prefix="egress"`))
		// After its log line: the stream is done.
		stats = append(stats, "noflush: downstream_rq_time count "+
			histogramCount(t, h, "envoy_http_downstream_rq_time", `envoy_http_conn_manager_prefix="noflush"`))
		res.stats = strings.Join(stats, "\n")
		if p.goroutines && !strings.Contains(res.stats, "downstream_rq_time count 3\nnoflush: downstream_rq_time count 0") {
			t.Errorf("the goroutine path's counters\n%s\nwant downstream_rq_time count 3: the whole responses', and none on noflush", res.stats)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, append(gets, append(h2Gets, "h2 stalled, reset by the client, no flush timeout")...))
}
