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
)

// cutHTTP1Upstream answers each connection's request with head, then
// closes the connection: a response cut after its head.
func cutHTTP1Upstream(t *testing.T, head string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // ends when Cleanup closes ln
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = io.WriteString(c, head)
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
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

// TestRequestTimeSamePaths: downstream_rq_time records a request whose
// response went out whole, and none whose response was cut: an upstream
// that closes or resets in the middle of its response (HTTP/1.1 chunked
// or sized, HTTP/2), a request body that turns malformed after the
// response started. Envoy's connection manager completes the request's
// timespan only once the codec has sent the response's end (endStream,
// maybeEndEncode, onCodecEncodeComplete); a reset stream never completes
// it. The goroutine path recorded every request; the loops recorded none
// of these. Alike on every path, with the counters and the access log.
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
	early := earlyHTTP1Upstream(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}
	gets := []string{"/whole", "/chunked", "/sized", "/h2"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) {
			c.Goroutines, c.H2Goroutines = p.goroutines, p.h2Goroutines
			c.AccessLogBuffering.FlushInterval = time.Millisecond
		})
		logFile := filepath.Join(t.TempDir(), "access.log")
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/whole", "whole"), routeTo("/chunked", "chunked"),
				routeTo("/sized", "sized"), routeTo("/h2", "h2"), routeTo("/early", "early"))),
			edsCluster("whole"), cla("whole", whole.addr()), edsCluster("chunked"), cla("chunked", chunked),
			edsCluster("sized"), cla("sized", sized), edsCluster("h2", h2Upstream), cla("h2", h2),
			edsCluster("early"), cla("early", early))
		res := pathResult{answers: map[string]string{}}
		for _, path := range gets {
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
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
		c, err := net.Dial("tcp", h.addr("egress"))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
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

		res.log = awaitLog(t, logFile, len(gets)+1)
		var stats []string
		for _, name := range []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx",
			"downstream_rq_5xx", "downstream_cx_protocol_error"} {
			stats = append(stats, fmt.Sprintf("%s %d", name, h.stat("http.egress."+name)))
		}
		stats = append(stats, "downstream_rq_time count "+
			histogramCount(t, h, "envoy_http_downstream_rq_time", `envoy_http_conn_manager_prefix="egress"`))
		res.stats = strings.Join(stats, "\n")
		if p.goroutines && !strings.HasSuffix(res.stats, "downstream_rq_time count 1") {
			t.Errorf("the goroutine path's counters\n%s\nwant downstream_rq_time count 1: the whole response's", res.stats)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, gets)
}
