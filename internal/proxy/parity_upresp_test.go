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
	"golang.org/x/net/http2"
)

// scriptedHTTP1Upstream answers each request it reads with scripts[its
// path], as is, then closes the connection.
func scriptedHTTP1Upstream(t *testing.T, scripts map[string]string) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { // ends once the script is written or the proxy closed the connection
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, scripts[req.URL.Path])
	})
}

// TestUpstreamBadResponseSamePaths: an upstream response the proxy cannot
// take is answered alike on every path, as Envoy answers its codec's
// protocol error (route.UpstreamProtocolError*): 502, "... reset reason:
// protocol error", flagged UPE with details
// upstream_reset_before_response_started{protocol_error}. An HTTP/1.1
// head over 60 KiB (max_response_headers_kb's default), a 1xx head's
// included, each head counted on its own; a 101 to a request that asked
// no upgrade; a status line that does not parse; an HTTP/2 1xx ending its
// stream. An HTTP/2 upstream's RST_STREAM before the response is Envoy's
// remote reset: 503 "... reset reason: remote reset", UR.
// The goroutine path relayed a head of any size (its HTTP/1.1 client had
// no limit) and answered the others 503 UC "connection termination"; the
// loops answered them 502 "upstream sent a malformed response". (Both
// then answered 503 for a protocol error, until Envoy 1.18's 502 was
// found: route.UpstreamProtocolErrorStatus.)
func TestUpstreamBadResponseSamePaths(t *testing.T) {
	big := func(n int) string { return "X-Big: " + strings.Repeat("a", n) + "\r\n" }
	h1 := scriptedHTTP1Upstream(t, map[string]string{
		"/h1/big":      "HTTP/1.1 200 OK\r\n" + big(100<<10) + "Content-Length: 2\r\n\r\nok",
		"/h1/big1xx":   "HTTP/1.1 103 Early Hints\r\n" + big(100<<10) + "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/h1/under":    "HTTP/1.1 103 Early Hints\r\n" + big(50<<10) + "\r\nHTTP/1.1 200 OK\r\n" + big(50<<10) + "Content-Length: 2\r\n\r\nok",
		"/h1/switch":   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
		"/h1/status":   "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
		"/h1/garbage":  "garbage\r\n\r\n",
		"/h1/headline": "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 2\r\n\r\nok",
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		switch strings.Join(r.values(":path"), "") {
		case "/h2/end1xx":
			w.headers(id, true, 0, ":status", "103")
		case "/h2/reset":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		}
	})
	const (
		upe = "502 upstream connect error or disconnect/reset before headers. reset reason: protocol error"
		ur  = "503 upstream connect error or disconnect/reset before headers. reset reason: remote reset"
	)
	// A chunked request body goes through the goroutine path's fallback
	// client (net/http's Transport), bounded alike.
	requests := []struct {
		path    string
		chunked bool
		want    string
	}{
		{"/h1/big", false, upe},
		{"/h1/big", true, upe},
		{"/h1/under", true, "200 ok"},
		{"/h1/garbage", true, upe},
		{"/h1/switch", true, upe},
		{"/h1/big1xx", false, upe},
		{"/h1/under", false, "200 ok"},
		{"/h1/switch", false, upe},
		{"/h1/status", false, upe},
		{"/h1/garbage", false, upe},
		{"/h1/headline", false, upe},
		{"/h2/end1xx", false, upe},
		{"/h2/reset", false, ur},
	}
	name := func(path string, chunked bool) string {
		if chunked {
			return path + " chunked"
		}
		return path
	}
	var names []string
	for _, r := range requests {
		names = append(names, name(r.path, r.chunked))
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) {
			c.Goroutines, c.H2Goroutines = p.goroutines, p.h2Goroutines
			c.AccessLogBuffering.FlushInterval = time.Millisecond
		})
		logFile := filepath.Join(t.TempDir(), "access.log")
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1/", "h1"), routeTo("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			c := dialRaw(t, h.addr("egress"))
			if r.chunked {
				_, _ = io.WriteString(c, "POST "+r.path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
			} else {
				_, _ = io.WriteString(c, "GET "+r.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			}
			var got string
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				got = err.Error()
			} else {
				b, _ := io.ReadAll(resp.Body)
				got = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			_ = c.Close()
			res.answers[name(r.path, r.chunked)] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %.200s; want %s", p.name, name(r.path, r.chunked), got, r.want)
			}
		}
		res.log = awaitLog(t, logFile, len(requests))
		var stats []string
		for _, n := range []string{"downstream_rq_2xx", "downstream_rq_5xx", "downstream_rq_completed"} {
			stats = append(stats, fmt.Sprintf("%s %d", n, h.stat("http.egress."+n)))
		}
		res.stats = strings.Join(stats, "\n")
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}
