package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
)

// scriptedHTTP1Upstream answers each request it reads with scripts[its
// path], as is, then closes the connection. A script the proxy would take
// as keeping the connection says Connection: close, or the proxy's pool
// may race the close with the next request on that connection (a POST's
// retry-free round trip then fails as the closed connection's).
func scriptedHTTP1Upstream(t *testing.T, scripts map[string]string) string {
	t.Helper()
	return h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, scripts[req.URL.Path])
		return false
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
		"/h1/under":    "HTTP/1.1 103 Early Hints\r\n" + big(50<<10) + "\r\nHTTP/1.1 200 OK\r\n" + big(50<<10) + "Content-Length: 2\r\nConnection: close\r\n\r\nok",
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
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
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
		res.stats = h.counts("http.egress.", []string{"downstream_rq_2xx", "downstream_rq_5xx", "downstream_rq_completed"})
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// closeDelimitedUpstream answers each request with a 200 whose body (none
// to HEAD) has no Content-Length and is not chunked, then closes the
// connection: a body delimited by the close (RFC 9112 section 6.3, rule 8).
func closeDelimitedUpstream(t *testing.T) string {
	t.Helper()
	return h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool {
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\n"); err != nil || req.Method == http.MethodHead {
			return false
		}
		_, _ = io.WriteString(c, "hello ")
		_, _ = io.WriteString(c, "world")
		return false
	})
}

// framedAnswer reads an HTTP/1.x response to method from br: its status
// line, the lines that frame it (transfer-encoding, content-length,
// connection) and its body as the client decodes it.
func framedAnswer(br *bufio.Reader, method string) string {
	var head strings.Builder
	var framing []string
	status := ""
	for {
		line, err := br.ReadString('\n')
		if errors.Is(err, syscall.ECONNRESET) {
			// The proxy closed the connection and the next request, sent
			// before the client saw the close, drew the kernel's reset:
			// the same close, seen later.
			err = io.EOF
		}
		if err != nil {
			return "closed: " + err.Error()
		}
		head.WriteString(line)
		l := strings.TrimRight(line, "\r\n")
		if l == "" {
			break
		}
		if status == "" {
			status = l
			continue
		}
		name, v, _ := strings.Cut(l, ":")
		switch name = strings.ToLower(name); name {
		case "transfer-encoding", "content-length", "connection":
			framing = append(framing, name+": "+strings.ToLower(strings.TrimSpace(v)))
		}
	}
	slices.Sort(framing)
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(head.String()), br)), &http.Request{Method: method})
	if err != nil {
		return "unreadable: " + err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%s %v body %q, then %v", status, framing, body, err)
	}
	return fmt.Sprintf("%s %v body %q", status, framing, body)
}

// TestCloseDelimitedResponseSamePaths: an HTTP/1.1 upstream's response
// whose body ends with the upstream's close (neither Content-Length nor
// chunked) reaches the client alike on every path, as Envoy's codecs
// frame it (http1/codec_impl.cc, StreamEncoderImpl::encodeHeadersBase;
// conn_manager_impl.cc for HTTP/1.0): to an HTTP/1.1 client chunked, its
// connection kept for the next request; to HTTP/1.0 unframed, with
// "connection: close", and closed; over HTTP/2 as DATA ending with
// END_STREAM when the upstream closes. A HEAD request's answer carries
// the "transfer-encoding: chunked" Envoy's encoder writes to an HTTP/1.1
// client for a response without content-length (no body follows), and
// over HTTP/1.0 closes the connection as any response without
// content-length does. The loops closed an HTTP/1.1 client's connection
// after such a body; both paths left out a HEAD answer's
// transfer-encoding, and kept an HTTP/1.0 HEAD answer's connection.
func TestCloseDelimitedResponseSamePaths(t *testing.T) {
	up := closeDelimitedUpstream(t)
	type exchange struct {
		name, listener, proto, method string
		h2                            bool
	}
	exchanges := []exchange{
		{name: "HTTP/1.1 GET", listener: "egress10", proto: "HTTP/1.1", method: http.MethodGet},
		{name: "HTTP/1.1 HEAD", listener: "egress10", proto: "HTTP/1.1", method: http.MethodHead},
		{name: "HTTP/1.0 GET", listener: "egress10", proto: "HTTP/1.0", method: http.MethodGet},
		{name: "HTTP/1.0 HEAD", listener: "egress10", proto: "HTTP/1.0", method: http.MethodHead},
		{name: "HTTP/2 GET", listener: "egress", h2: true, method: http.MethodGet},
		{name: "HTTP/2 HEAD", listener: "egress", h2: true, method: http.MethodHead},
	}
	want := map[string]string{
		"HTTP/1.1 GET": `HTTP/1.1 200 OK [transfer-encoding: chunked] body "hello world"; ` +
			`then HTTP/1.1 200 OK [transfer-encoding: chunked] body "hello world"`,
		"HTTP/1.1 HEAD": `HTTP/1.1 200 OK [transfer-encoding: chunked] body ""; ` +
			`then HTTP/1.1 200 OK [transfer-encoding: chunked] body "hello world"`,
		"HTTP/1.0 GET":  `HTTP/1.0 200 OK [connection: close] body "hello world"; then closed: EOF`,
		"HTTP/1.0 HEAD": `HTTP/1.0 200 OK [connection: close] body ""; then closed: EOF`,
		"HTTP/2 GET":    `200 body "hello world" <nil>; then 200 body "hello world" <nil> reused true`,
		"HTTP/2 HEAD":   `200 body "" <nil>; then 200 body "hello world" <nil> reused true`,
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% %PROTOCOL% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %RESP(TRANSFER-ENCODING)% %RESP(CONTENT-LENGTH)%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		accept10 := func(m *hcmv3.HttpConnectionManager) {
			m.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AcceptHttp_10: true}
		}
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
			httpListener("egress10", httpManager("egress10", "rds", withAccessLog(logFile, format), accept10)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "up"))), edsCluster("up"), cla("up", up))
		res := pathResult{answers: map[string]string{}}
		for _, x := range exchanges {
			var answers []string
			if x.h2 {
				c := h2cClient(t)
				for i, method := range []string{x.method, http.MethodGet} {
					reused := false
					trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
					req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method,
						"http://"+h.addr(x.listener)+"/close", nil)
					resp, err := c.Do(req)
					if err != nil {
						answers = append(answers, err.Error())
						break
					}
					body, err := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					a := fmt.Sprintf("%d body %q %v", resp.StatusCode, body, err)
					if i > 0 {
						a += fmt.Sprintf(" reused %v", reused)
					}
					answers = append(answers, a)
				}
			} else {
				c := dialRaw(t, h.addr(x.listener))
				br := bufio.NewReader(c)
				keep := ""
				if x.proto == "HTTP/1.0" {
					keep = "Connection: keep-alive\r\n"
				}
				_, _ = io.WriteString(c, x.method+" /close "+x.proto+"\r\nHost: x\r\n"+keep+"\r\n")
				answers = append(answers, framedAnswer(br, x.method))
				if _, err := io.WriteString(c, "GET /close "+x.proto+"\r\nHost: x\r\n"+keep+"\r\n"); err != nil {
					answers = append(answers, "closed: "+err.Error())
				} else {
					answers = append(answers, framedAnswer(br, http.MethodGet))
				}
				_ = c.Close()
			}
			got := strings.Join(answers, "; then ")
			res.answers[x.name] = got
			if got != want[x.name] {
				t.Errorf("%s, %s: answered\n%s\nwant\n%s", p.name, x.name, got, want[x.name])
			}
		}
		res.log = awaitLog(t, logFile, 10)
		res.stats = h.countsBy("http", []string{"egress", "egress10"}, []string{"downstream_rq_2xx", "downstream_rq_completed", "downstream_cx_total"})
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestH2UpstreamHeadAnswerSamePaths: an HTTP/2 upstream's answer to HEAD
// without content-length reaches an HTTP/1.1 client announced
// "transfer-encoding: chunked" without a body, as Envoy's HTTP/1.1
// encoder announces it (route.HeadChunked), but for a 204 or a 304; with
// a content-length, that length.
func TestH2UpstreamHeadAnswerSamePaths(t *testing.T) {
	up := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		path := strings.Join(r.values(":path"), "")
		switch {
		case strings.HasSuffix(path, "/nolen"):
			w.headers(id, true, 0, ":status", "200")
		case strings.HasSuffix(path, "/len"):
			w.headers(id, true, 0, ":status", "200", "content-length", "5")
		case strings.HasSuffix(path, "/304"):
			w.headers(id, true, 0, ":status", "304")
		}
	})
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))), edsCluster("h2", h2Upstream), cla("h2", up))
		c, err := net.Dial("tcp", h.addr("egress"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for _, x := range []struct{ path, want string }{
			{"/nolen", "200 te=chunked cl="},
			{"/len", "200 te= cl=5"},
			{"/304", "304 te= cl="},
		} {
			fmt.Fprintf(c, "HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n", x.path)
			resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, x.path, err)
			}
			resp.Body.Close()
			got := fmt.Sprintf("%d te=%s cl=%s", resp.StatusCode, strings.Join(resp.TransferEncoding, ","), resp.Header.Get("Content-Length"))
			if resp.StatusCode == 200 && x.path == "/len" {
				got = fmt.Sprintf("%d te=%s cl=%d", resp.StatusCode, strings.Join(resp.TransferEncoding, ","), resp.ContentLength)
			}
			if got != x.want {
				t.Errorf("%s, HEAD %s: got %s; want %s", p.name, x.path, got, x.want)
			}
		}
		c.Close()
	}
}
