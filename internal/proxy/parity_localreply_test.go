package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestHTTP1LocalRepliesSamePaths: an HTTP/1.1 request the proxy answers
// itself (the upstream refuses the connection, or is too slow for the
// route's timeout, or the request's chunked body is malformed) is
// answered, counted and logged alike on every path. A gRPC request's
// answer is Envoy's: 200, content-type application/grpc, grpc-status
// (UNAVAILABLE for a 503 or a 504, INTERNAL for a 400), grpc-message with
// the reply's text, content-length 0 and no body; it counts as a 2xx and
// logs 200 with that grpc-status. The loops answered it as any other
// request (503 text/plain, say). A malformed chunked body is answered
// 400 "Bad Request", flagged DPE, and closes the connection (the loops
// answered their parser's error, unflagged, and counted the request
// twice); a route timeout leaves the connection open (the loops closed
// it); a HEAD request's answer has the length of the text and no body
// (the loops sent the body, which the client read as the next
// response). Each request goes on a connection of its own, followed on
// it by a GET the upstream answers unless the reply closed the
// connection.
func TestHTTP1LocalRepliesSamePaths(t *testing.T) {
	ok, slow := newBackend(t, "ok"), newBackend(t, "slow")
	slow.slow = 10 * time.Second
	dead := deadAddr(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_SENT% %UPSTREAM_CLUSTER% " +
		"%RESP(CONTENT-TYPE)% %RESP(CONTENT-LENGTH)% %GRPC_STATUS% %GRPC_STATUS_NUMBER% %RESP(GRPC-MESSAGE)% %RESP(SERVER)%\n"}}
	const grpcHeaders = "Content-Type: application/grpc\r\nTe: trailers\r\n"
	type request struct {
		name string
		head string // request line and headers, without the blank line
		body string
		// closes: the reply ends the connection (no request follows).
		closes bool
		// status and want are the goroutine path's answer's status and
		// some of its headers ("Name: value").
		status int
		want   []string
	}
	requests := []request{
		{name: "connection failure", head: "GET /dead HTTP/1.1\r\nHost: x\r\n",
			status: 503, want: []string{"Content-Type: text/plain"}},
		{name: "gRPC connection failure", head: "POST /dead HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + grpcHeaders,
			status: 200, want: []string{"Content-Type: application/grpc", "Grpc-Status: 14", "Content-Length: 0",
				"Grpc-Message: " + refusedBody}},
		{name: "gRPC upstream timeout", head: "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + grpcHeaders,
			status: 200, want: []string{"Grpc-Status: 14", "Grpc-Message: upstream request timeout", "Content-Length: 0"}},
		{name: "gRPC malformed chunked body", head: "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + grpcHeaders,
			body: "zz\r\nabc\r\n0\r\n\r\n", closes: true, status: 200, want: []string{"Grpc-Status: 13", "Grpc-Message: Bad Request"}},
		{name: "malformed chunked body", head: "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n",
			body: "zz\r\nabc\r\n0\r\n\r\n", closes: true, status: 400, want: []string{"Content-Type: text/plain"}},
		{name: "HEAD connection failure", head: "HEAD /dead HTTP/1.1\r\nHost: x\r\n",
			status: 503, want: []string{"Content-Type: text/plain"}},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		slowRoute := routeTo("/slow", "slow")
		slowRoute.GetRoute().Timeout = durationpb.New(100 * time.Millisecond)
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/dead", "dead"), slowRoute, routeTo("/", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("slow"), cla("slow", slow.addr()), edsCluster("dead"), cla("dead", dead))
		res := pathResult{answers: map[string]string{}}
		sent := 0
		for _, r := range requests {
			c := dialRaw(t, h.addr("egress"))
			_, _ = io.WriteString(c, r.head+"\r\n"+r.body)
			br := bufio.NewReader(c)
			method, _, _ := strings.Cut(r.head, " ")
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, r.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			answer := wireHead(resp, body, false)
			if resp.Close {
				answer += ", connection: close"
			}
			sent++
			if !r.closes {
				// The next request on the connection, after the reply.
				_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				next, err := http.ReadResponse(br, nil)
				if err != nil {
					answer += fmt.Sprintf(", then %v", err)
				} else {
					_, _ = io.Copy(io.Discard, next.Body)
					answer += fmt.Sprintf(", then %d", next.StatusCode)
					sent++
				}
			}
			_ = c.Close()
			res.answers[r.name] = answer
			if p.goroutines {
				if resp.StatusCode != r.status || resp.Close != r.closes {
					t.Errorf("%s: the goroutine path answered %d, closing %v; want %d, closing %v", r.name, resp.StatusCode, resp.Close,
						r.status, r.closes)
				}
				for _, w := range r.want {
					name, v, _ := strings.Cut(w, ": ")
					if got, has := resp.Header[name]; !has || strings.Join(got, ", ") != v {
						t.Errorf("%s: the goroutine path answered %s %q, want %q", r.name, name, got, v)
					}
				}
			}
		}
		// A line for each answer the client read (at least: a request
		// whose answer it could not read may be logged too).
		res.log = awaitLog(t, logFile, sent)
		res.stats = h.counts("http.egress.", []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx", "downstream_rq_4xx",
			"downstream_rq_5xx", "downstream_cx_protocol_error", "downstream_rq_http1_total"})
		if !p.goroutines {
			if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 {
				t.Errorf("%s: on the loops %v, %d connections handed off; want true, 0", p.name, l.OnLoops(), l.HandedOff())
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestHTTP1HeadLocalReplySamePaths: a local reply to an HTTP/1.1 HEAD
// request is framed as Envoy frames it (Utility::sendLocalReply, then its
// HTTP/1.1 encoder's StreamEncoderImpl::encodeHeadersBase), on every
// path: without a body (no route, a gRPC status, a missing Host, a
// direct response without one) it has no content-length and announces
// transfer-encoding: chunked, as a proxied HEAD answer without a length
// does (route.HeadChunked), and writes no body; with one (a connection
// failure, no healthy upstream) it has the body's content-length and
// content-type and writes no body. A GET's reply without a body has
// content-length 0, a direct response's too (the goroutine path began a
// chunked body for an empty direct response). Both paths answered a HEAD
// request without a body with content-length 0. Each request goes on a
// connection of its own, followed by a GET unless the reply closed it,
// whose answer shows that no body came before it.
func TestHTTP1HeadLocalReplySamePaths(t *testing.T) {
	ok := newBackend(t, "ok")
	dead := deadAddr(t)
	const grpcHeaders = "Content-Type: application/grpc\r\nTe: trailers\r\n"
	type request struct {
		name string
		head string // request line and headers, without the blank line
		want string // the goroutine path's answer
	}
	const chunked = "length [], transfer-encoding [chunked]"
	requests := []request{
		{"HEAD no route", "HEAD / HTTP/1.1\r\nHost: elsewhere\r\n", "404, " + chunked + ", type [], then 200"},
		{"GET no route", "GET / HTTP/1.1\r\nHost: elsewhere\r\n", "404, length [0], transfer-encoding [], type [], then 200"},
		{"HEAD connection failure", "HEAD /dead HTTP/1.1\r\nHost: x\r\n",
			fmt.Sprintf("503, length [%d], transfer-encoding [], type [text/plain], then 200", len(refusedBody))},
		{"HEAD no healthy upstream", "HEAD /empty HTTP/1.1\r\nHost: x\r\n",
			"503, length [19], transfer-encoding [], type [text/plain], then 200"},
		{"HEAD gRPC connection failure", "HEAD /dead HTTP/1.1\r\nHost: x\r\n" + grpcHeaders,
			"200, " + chunked + ", type [application/grpc], then 200"},
		{"HEAD missing host", "HEAD / HTTP/1.1\r\n", "400, " + chunked + ", type [], closed"},
		{"HEAD direct response without body", "HEAD /direct HTTP/1.1\r\nHost: x\r\n", "204, length [], transfer-encoding [], type [], then 200"},
		{"HEAD direct response", "HEAD /direct200 HTTP/1.1\r\nHost: x\r\n", "200, " + chunked + ", type [], then 200"},
		{"GET direct response", "GET /direct200 HTTP/1.1\r\nHost: x\r\n", "200, length [0], transfer-encoding [], type [], then 200"},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"x"}, directTo("/direct200", 200), directTo("/direct", 204), routeTo("/dead", "dead"),
				routeTo("/empty", "empty"), routeTo("/", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("dead"), cla("dead", dead), edsCluster("empty"), cla("empty"))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, r.head+"\r\n")
			br := bufio.NewReader(c)
			method, _, _ := strings.Cut(r.head, " ")
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, r.name, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			answer := fmt.Sprintf("%d, length [%s], transfer-encoding [%s], type [%s]", resp.StatusCode,
				strings.Join(resp.Header["Content-Length"], " "), strings.Join(resp.TransferEncoding, " "),
				strings.Join(resp.Header["Content-Type"], " "))
			if resp.Close {
				answer += ", closed"
			} else {
				_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				if next, err := http.ReadResponse(br, nil); err != nil {
					answer += fmt.Sprintf(", then %v", err)
				} else {
					_, _ = io.Copy(io.Discard, next.Body)
					answer += fmt.Sprintf(", then %d", next.StatusCode)
				}
			}
			_ = c.Close()
			res.answers[r.name] = answer
			if p.goroutines && answer != r.want {
				t.Errorf("%s: the goroutine path answered\n%s\nwant\n%s", r.name, answer, r.want)
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestH2LocalReplyBeforeBodySamePaths: over HTTP/2 (h2c), a local reply
// made before the request's END_STREAM came (no route, no healthy host,
// a connection failure, its body still to come) ends its stream, then
// resets it with RST_STREAM NO_ERROR (RFC 9113 8.1), as Envoy's
// connection manager resets a stream it ends before the request's end
// (doEndStream: resetStream(LocalReset), which its HTTP/2 codec defers
// until the response's frames are out and sends as NO_ERROR); the
// connection stays. A request that ended with its HEADERS is not reset.
// Alike on every path (x/net's server, on the goroutine path, resets a
// stream still open when its handler's response ends).
func TestH2LocalReplyBeforeBodySamePaths(t *testing.T) {
	dead := deadAddr(t)
	type request struct {
		name      string
		authority string
		path      string
		ended     bool // END_STREAM on the HEADERS: no body
	}
	requests := []request{
		{"no route, body to come", "elsewhere", "/", false},
		{"no healthy host, body to come", "x", "/empty", false},
		{"connection failure, body to come", "x", "/dead", false},
		{"connection failure, no body", "x", "/dead", true},
	}
	results := map[string]pathResult{}
	names := make([]string, 0, len(requests))
	for _, r := range requests {
		names = append(names, r.name)
	}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"x"}, routeTo("/dead", "dead"), routeTo("/empty", "empty"))),
			edsCluster("dead"), cla("dead", dead), edsCluster("empty"), cla("empty"))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			cl := dialH2(t, h.addr("egress"))
			cl.hbuf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", r.authority}, {":path", r.path},
				{"content-length", "5"}} {
				if r.ended && f[0] == "content-length" {
					continue
				}
				_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.hbuf.Bytes(), EndStream: r.ended, EndHeaders: true})
			_ = cl.bw.Flush()
			// The stream's frames, up to the answer to a PING sent once
			// it ended: a reset comes before that.
			var seen []string
			pinged := false
			for f := range cl.frames {
				if f.typ == http2.FramePing {
					break
				}
				if f.stream != 1 {
					continue
				}
				// How the response is cut in frames is not looked at
				// (x/net's server ends it with an empty DATA frame).
				switch {
				case f.typ == http2.FrameHeaders:
					seen = append(seen, "HEADERS "+f.status)
				case f.typ == http2.FrameRSTStream:
					seen = append(seen, fmt.Sprintf("RST_STREAM %v", f.code))
				}
				if f.end {
					seen = append(seen, "END_STREAM")
				}
				if f.end && !pinged {
					pinged = true
					_ = cl.fr.WritePing(false, [8]byte{1})
					_ = cl.bw.Flush()
				}
			}
			_ = cl.c.Close()
			res.answers[r.name] = strings.Join(seen, ", ")
		}
		results[p.name] = res
	}
	want := map[string]string{
		"no route, body to come":           "HEADERS 404, END_STREAM, RST_STREAM NO_ERROR",
		"no healthy host, body to come":    "HEADERS 503, END_STREAM, RST_STREAM NO_ERROR",
		"connection failure, body to come": "HEADERS 503, END_STREAM, RST_STREAM NO_ERROR",
		"connection failure, no body":      "HEADERS 503, END_STREAM",
	}
	for _, n := range names {
		if got := results["goroutines"].answers[n]; got != want[n] {
			t.Errorf("%s: the goroutine path sent %s; want %s", n, got, want[n])
		}
	}
	sameAsGoroutinePath(t, results, names)
}

// TestH2EmptyLocalReplySamePaths: over HTTP/2 (h2c), a local reply
// without a body (no route, to a GET or a HEAD; a gRPC request's status,
// trailers only; a direct response without a body) is a HEADERS frame
// that ends the stream, without content-length, on every path, as
// Envoy's: its local reply sets a length only for a body
// (Utility::prepareLocalReply) and its HTTP/2 codec adds none. One with
// a body (no healthy upstream) has the body's length. Both paths sent
// content-length 0 (the goroutine path: x/net's server adds it for a
// handler that wrote nothing; the loops wrote it and ended the stream
// with an empty DATA frame).
func TestH2EmptyLocalReplySamePaths(t *testing.T) {
	dead := deadAddr(t)
	type request struct {
		name, want string
		fields     [][2]string
		direct     bool // to the listener with a direct response, whose h2c the loops hand off
	}
	get := func(method, authority, path string, more ...[2]string) [][2]string {
		return append([][2]string{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}}, more...)
	}
	requests := []request{
		{"no route", "HEADERS 404 length [] END_STREAM", get("GET", "elsewhere", "/"), false},
		{"HEAD no route", "HEADERS 404 length [] END_STREAM", get("HEAD", "elsewhere", "/"), false},
		{"gRPC connection failure", "HEADERS 200 length [] END_STREAM",
			get("POST", "x", "/dead", [2]string{"content-type", "application/grpc"}, [2]string{"te", "trailers"}), false},
		{"no healthy upstream", "HEADERS 503 length [19], body 19 END_STREAM", get("GET", "x", "/empty"), false},
		{"direct response without body", "HEADERS 200 length [] END_STREAM", get("GET", "x", "/direct200"), true},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")), httpListener("direct", httpManager("direct", "rds-direct")),
			routeConfig("rds", vhost("v", []string{"x"}, routeTo("/dead", "dead"), routeTo("/empty", "empty"))),
			routeConfig("rds-direct", vhost("v", []string{"x"}, directTo("/direct200", 200))),
			edsCluster("dead"), cla("dead", dead), edsCluster("empty"), cla("empty"))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			ln := "egress"
			if r.direct {
				ln = "direct"
			}
			cl := dialH2(t, h.addr(ln))
			cl.hbuf.Reset()
			for _, f := range r.fields {
				_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.hbuf.Bytes(), EndStream: true, EndHeaders: true})
			_ = cl.bw.Flush()
			var seen []string // how the body is cut in DATA frames is not looked at
			timeout := time.After(10 * time.Second)
		frames:
			for {
				select {
				case f, ok := <-cl.frames:
					if !ok {
						seen = append(seen, "the connection ended")
						break frames
					}
					if f.stream != 1 {
						continue
					}
					switch f.typ {
					case http2.FrameHeaders:
						seen = append(seen, fmt.Sprintf("HEADERS %s length [%s]", f.status, strings.Join(f.lengths, " ")))
					case http2.FrameData:
						n := 0
						if len(seen) > 0 && strings.HasPrefix(seen[len(seen)-1], "body ") {
							n, _ = strconv.Atoi(strings.TrimPrefix(seen[len(seen)-1], "body "))
							seen = seen[:len(seen)-1]
						}
						seen = append(seen, fmt.Sprintf("body %d", n+len(f.data)))
					case http2.FrameRSTStream:
						seen = append(seen, fmt.Sprintf("RST_STREAM %v", f.code))
						break frames
					}
					if f.end {
						seen[len(seen)-1] += " END_STREAM"
						break frames
					}
				case <-timeout:
					seen = append(seen, "no end within 10 s")
					break frames
				}
			}
			_ = cl.c.Close()
			res.answers[r.name] = strings.Join(seen, ", ")
			if res.answers[r.name] != r.want {
				t.Errorf("%s, %s: sent %s; want %s", p.name, r.name, res.answers[r.name], r.want)
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// directTo is a route answering requests under prefix with status and no
// body (a direct response).
func directTo(prefix string, status uint32) *routev3.Route {
	return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status}}}
}
