package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// interimBody is what the interim upstreams answer finally: the Expect
// values they were sent (joined by |) and the body.
func interimBody(expect []string, body []byte) string {
	return fmt.Sprintf("expect=%s body=%s", strings.Join(expect, "|"), body)
}

// interimHTTP1Upstream answers every request with 100 Continue and 103
// Early Hints as soon as its head is read, then, once it read the body,
// with 200 and interimBody.
func interimHTTP1Upstream(t *testing.T) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"+
				"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"); err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			out := interimBody(req.Header["Expect"], body)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(out), out); err != nil {
				return
			}
		}
	})
}

// interimH2Upstream is interimHTTP1Upstream over h2c, but for the 1xx
// responses coming once the request's END_STREAM came. It sees the
// expect fields as they were sent (x/net's server would drop one holding
// the 100-continue token).
func interimH2Upstream(t *testing.T) string {
	return rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		w.headers(id, false, 0, ":status", "100")
		w.headers(id, false, 0, ":status", "103", "link", "</a.css>; rel=preload")
		out := interimBody(r.values("expect"), r.body)
		w.headers(id, false, 0, ":status", "200", "content-length", strconv.Itoa(len(out)))
		w.data(id, []byte(out))
	})
}

// TestExpectOtherSamePaths: over HTTP/1.1 an Expect other than
// 100-continue (the value as a whole, case aside, its lines joined by
// commas as Envoy's header map joins them) is forwarded to the upstream,
// HTTP/1.1 or HTTP/2, and the client gets no 100 from the proxy, as Envoy
// forwards it (decodeHeaders handles only a value of 100-continue); both
// paths answered it 417. An upstream's 1xx responses (100 Continue, 103
// Early Hints) before its final one are dropped, as Envoy drops them
// without proxy_100_continue (encode1xxHeaders; UpstreamRequest's
// decodeHeaders for the rest but 101), on every path alike: the
// connection carries the next request. The goroutine path and the
// loops relayed them (the loops not a 100 of an HTTP/2 upstream), so
// that a client whose 100-continue the proxy had answered got a second
// 100.
func TestExpectOtherSamePaths(t *testing.T) {
	h1 := interimHTTP1Upstream(t)
	h2 := interimH2Upstream(t)
	type request struct {
		name, expect string // expect: the Expect lines, each ending in CRLF
		wait100      bool   // the client waits for the proxy's 100 before the body
		want         string
	}
	var requests []request
	for _, up := range []string{"/h1", "/h2"} {
		requests = append(requests,
			request{up + " foo", "Expect: foo\r\n", false,
				"200 expect=foo body=hello close false, then 200 close false"},
			request{up + " 100-continue in a list", "Expect: 100-continue, foo\r\n", false,
				"200 expect=100-continue, foo body=hello close false, then 200 close false"},
			request{up + " 100-continue on two lines", "Expect: 100-continue\r\nExpect: 100-continue\r\n", false,
				"200 expect=100-continue|100-continue body=hello close false, then 200 close false"},
			request{up + " empty", "Expect:\r\n", false,
				"200 expect= body=hello close false, then 200 close false"},
			request{up + " 100-continue", "Expect: 100-Continue\r\n", true,
				"100, then 200 expect= body=hello close false, then 200 close false"},
			request{up + " none", "", false,
				"200 expect= body=hello close false, then 200 close false"},
		)
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %REQ(EXPECT)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1", "h1"), routeTo("/h2", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			path, _, _ := strings.Cut(r.name, " ")
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			_, _ = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\n"+r.expect+"Content-Length: 5\r\n\r\n")
			var answer []string
			if r.wait100 {
				// As a client does: the body only once the 100 came.
				resp, err := http.ReadResponse(br, nil)
				switch {
				case err != nil:
					answer = append(answer, err.Error())
				case resp.StatusCode != http.StatusContinue:
					answer = append(answer, fmt.Sprintf("%d before the body", resp.StatusCode))
				default:
					answer = append(answer, "100")
				}
			}
			_, _ = io.WriteString(c, "hello"+"GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			for i := range 2 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					answer = append(answer, err.Error())
					break
				}
				body, _ := io.ReadAll(resp.Body)
				if i == 0 {
					// The POST's, whose body says what went upstream.
					answer = append(answer, fmt.Sprintf("%d %s close %v", resp.StatusCode, body, resp.Close))
				} else {
					answer = append(answer, fmt.Sprintf("%d close %v", resp.StatusCode, resp.Close))
				}
			}
			_ = c.Close()
			got := strings.Join(answer, ", then ")
			res.answers[r.name] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.name, got, r.want)
			}
		}
		res.log = awaitLog(t, logFile, 2*len(requests))
		var stats []string
		for _, name := range []string{"http.egress.downstream_rq_total", "http.egress.downstream_rq_1xx",
			"http.egress.downstream_rq_2xx", "http.egress.downstream_rq_4xx", "http.egress.downstream_rq_completed",
			"http.egress.downstream_cx_protocol_error", "http.egress.downstream_cx_total",
			"cluster.h1.upstream_rq_2xx", "cluster.h2.upstream_rq_2xx"} {
			stats = append(stats, fmt.Sprintf("%s %d", name, h.stat(name)))
		}
		res.stats = strings.Join(stats, "\n")
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestUpstreamInterimH2SamePaths: an upstream's 1xx responses (100
// Continue, 103 Early Hints) are dropped before an HTTP/2 client too, from
// an HTTP/1.1 upstream and an HTTP/2 one, as Envoy drops them without
// proxy_100_continue: the client gets the final response alone, on every
// path alike. The goroutine path relayed both, the loops the 103 only.
func TestUpstreamInterimH2SamePaths(t *testing.T) {
	h1 := interimHTTP1Upstream(t)
	h2 := interimH2Upstream(t)
	paths := []string{"/h1", "/h2"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1", "h1"), routeTo("/h2", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		cl := dialH2(t, h.addr("egress"))
		for i, path := range paths {
			id := uint32(2*i + 1)
			cl.hbuf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path},
				{"content-length", "5"}} {
				_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true})
			_ = cl.fr.WriteData(id, true, []byte("hello"))
			_ = cl.bw.Flush()
			var answer []string
			timeout := time.After(5 * time.Second)
		frames:
			for {
				select {
				case f, ok := <-cl.frames:
					switch {
					case !ok:
						answer = append(answer, "the connection ended")
						break frames
					case f.typ == http2.FrameGoAway:
						answer = append(answer, "GOAWAY "+f.code.String())
						break frames
					case f.stream != id:
					case f.typ == http2.FrameRSTStream:
						answer = append(answer, "RST_STREAM "+f.code.String())
						break frames
					case f.typ == http2.FrameHeaders:
						answer = append(answer, f.status)
						if f.end {
							break frames
						}
					case f.end:
						break frames
					}
				case <-timeout:
					answer = append(answer, "no end")
					break frames
				}
			}
			res.answers[path] = strings.Join(answer, ", then ")
			if res.answers[path] != "200" {
				t.Errorf("%s, %s: answered %s; want 200", p.name, path, res.answers[path])
			}
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, paths)
}

// TestRetryAfterInterimSamePaths: an upstream's 1xx response, dropped,
// ends the request's retries on every path, as Envoy's router resets its
// retry state at one (Filter::onUpstream1xxHeaders; maybeRetryReset
// retries nothing once the response started): a retriable status or a
// reset after it goes to the client unretried, from an HTTP/1.1 upstream
// and an HTTP/2 one, and neither upstream_rq_retry nor
// upstream_rq_retry_limit_exceeded counts it; without the 1xx the same
// answers are retried, and after a 1xx Envoy's router does not take (199,
// which its upstream request drops unseen: route.Special1xx) too. The
// goroutine path retried an HTTP/1.1 upstream's
// 1xx and close (the loops did not: a response byte had come), and both
// paths retried the rest. A 199 or part of a head, then a close, is a
// reset before the response started (a termination, or for part of a
// head the codec's protocol error, answered 502 in the end:
// TestH1UpstreamProtocolErrorSamePaths), retried under 5xx,reset and
// under reset alone, as Envoy's router retries it (maybeRetryReset): the
// loops retried neither once a response byte had come.
func TestRetryAfterInterimSamePaths(t *testing.T) {
	var attempts atomic.Int64
	h1Scripts := map[string]string{
		"/h1/status":  "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
		"/h1/reset":   "HTTP/1.1 100 Continue\r\n\r\n", // then closed
		"/h1/status0": "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
		"/h1/other":   "HTTP/1.1 199 Other\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
		"/h1/garbage": "garbage\r\n\r\n", // a protocol error: a reset, retried
		// A 1xx the router never sees, or part of a head, then closed: a
		// reset before the response started, retried.
		"/h1/199/reset":      "HTTP/1.1 199 Other\r\n\r\n",
		"/h1/partial/reset":  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", // its blank line never comes
		"/h1r/199/reset":     "HTTP/1.1 199 Other\r\n\r\n",
		"/h1r/partial/reset": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		"/h1r/reset":         "HTTP/1.1 100 Continue\r\n\r\n",
	}
	h1 := h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool { // a reset script closes the connection
		attempts.Add(1)
		_, err := io.WriteString(c, h1Scripts[req.URL.Path])
		return err == nil && !strings.HasSuffix(req.URL.Path, "/reset")
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		attempts.Add(1)
		switch strings.Join(r.values(":path"), "") {
		case "/h2/status":
			w.headers(id, false, 0, ":status", "103", "link", "</a.css>; rel=preload")
			w.headers(id, false, 0, ":status", "503", "content-length", "4")
			w.data(id, []byte("busy"))
		case "/h2/reset":
			w.headers(id, false, 0, ":status", "100")
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/status0":
			w.headers(id, false, 0, ":status", "503", "content-length", "4")
			w.data(id, []byte("busy"))
		case "/h2/other":
			w.headers(id, false, 0, ":status", "199")
			w.headers(id, false, 0, ":status", "503", "content-length", "4")
			w.data(id, []byte("busy"))
		case "/h2/reset0":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/199/reset":
			w.headers(id, false, 0, ":status", "199")
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/end1xx": // a protocol error: a reset, retried
			w.headers(id, true, 0, ":status", "103")
		}
	})
	retried := func(prefix, cluster, on string) *routev3.Route {
		r := retryRoute(cluster, on, 2)
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
		return r
	}
	type request struct{ path, want string }
	requests := []request{
		{"/h1/status", "503 attempts 1"},
		{"/h1/reset", "503 attempts 1"},
		{"/h1/status0", "503 attempts 3"},
		{"/h1/other", "503 attempts 3"},
		{"/h2/status", "503 attempts 1"},
		{"/h2/reset", "503 attempts 1"},
		{"/h2/status0", "503 attempts 3"},
		{"/h2/reset0", "503 attempts 3"},
		{"/h2/other", "503 attempts 3"},
		{"/h1/garbage", "502 attempts 3"},
		{"/h2/end1xx", "502 attempts 3"},
		{"/h1/199/reset", "503 attempts 3"},
		{"/h1/partial/reset", "502 attempts 3"},
		{"/h1r/199/reset", "503 attempts 3"},
		{"/h1r/partial/reset", "502 attempts 3"},
		{"/h1r/reset", "503 attempts 1"},
		{"/h2/199/reset", "503 attempts 3"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, retried("/h1/", "h1", "5xx,reset"), retried("/h2/", "h2", "5xx,reset"),
				retried("/h1r/", "h1", "reset"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			attempts.Store(0)
			// A connection each: a pooled HTTP/1.1 connection the
			// upstream closed would be replaced once, not as a retry.
			c := dialRaw(t, h.addr("egress"))
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "GET "+r.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			var got string
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				got = err.Error()
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				// The status only: the reason a reset's 503 gives is
				// TestUpstreamBadResponseSamePaths'.
				got = fmt.Sprintf("%d attempts %d", resp.StatusCode, attempts.Load())
			}
			_ = c.Close()
			res.answers[r.path] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.path, got, r.want)
			}
		}
		res.stats = h.countsBy("cluster", []string{"h1", "h2"}, []string{"upstream_rq_retry", "upstream_rq_retry_limit_exceeded", "upstream_rq_retry_success"})
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}
