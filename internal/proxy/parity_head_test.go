package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoHopUpstream answers every request with the names of its X-Hop-*,
// X-Keep, Http2-Settings, Forwarded, Keep-Alive, Te and Expect headers, sorted, Te's and
// Expect's with their values (Te=trailers): which of them the proxy
// forwarded.
func echoHopUpstream(t *testing.T) string {
	t.Helper()
	return h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool {
		var names []string
		for k := range req.Header {
			switch {
			case k == "Te", k == "Expect":
				names = append(names, k+"="+strings.Join(req.Header[k], ","))
			case strings.HasPrefix(k, "X-Hop"), k == "X-Keep", k == "Http2-Settings", k == "Forwarded", k == "Keep-Alive":
				names = append(names, k)
			}
		}
		slices.Sort(names)
		body := strings.Join(names, ",")
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return err == nil
	})
}

// TestHTTP1HeadSamePaths: what an HTTP/1.1 request head may hold is the
// same on every path, and Envoy's.
//
// Empty lines before a request line (RFC 9112 section 2.2) are skipped,
// as Envoy's codecs (llhttp's start state) skip any CR and LF there:
// before a connection's first request and between two. They count in the
// head's size, so that a client sending nothing else is answered 431 once
// the limit is read (the header timeout bounds a slow one). The goroutine
// path skipped them unbounded by nothing but the head limit; the loops
// refused them (400).
//
// A Connection header is refused (400, http1.connection_header_rejected)
// with 10 tokens or more over its lines, or naming X-Forwarded-For,
// X-Forwarded-Host or X-Forwarded-Proto, as Envoy's codec refuses it
// (Utility::sanitizeConnectionHeader); with 9, every header it names is
// dropped before forwarding, but for "TE: trailers", which Envoy keeps
// (the loops dropped it), and Forwarded (RFC 7239) is one like any other,
// which only the X-Forwarded-* are not (the goroutine path kept a named
// Forwarded). The tokens Envoy passes over name nothing removed:
// HTTP2-Settings is forwarded, keep-alive and connection remove no header
// of theirs (Keep-Alive goes as hop-by-hop whether named or not). The loops refused more than 8 names (400
// codec_error), the goroutine path took any number. An upgrade is one
// whatever its Connection token's place, as Envoy's isUpgrade finds it
// (the loops looked at 9 tokens only, and refused a tenth upgrade 400).
// A head with an Expect the proxy forwards is refused for its
// Connection header alike (the loops answered such an Expect first, 417,
// when the proxy refused it).
//
// max_request_headers_kb and common_http_protocol_options.max_headers_count
// are honoured (they were read and ignored: 60 KiB and 100 applied): a
// head over either is answered 431 with http1.headers_too_large or
// http1.too_many_headers, and a head over 60 KiB passes where the limit
// is higher.
func TestHTTP1HeadSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% " +
		"%UPSTREAM_CLUSTER% %RESP(CONTENT-TYPE)% %RESP(CONTENT-LENGTH)% %RESP(CONNECTION)%\n"}}
	type exchange struct {
		name, listener string
		send           []string
		// status and body are each answer as Envoy gives it; closes: the
		// connection closes after the last.
		status []int
		body   []string
		closes bool
		log    []string // the access log lines, as Envoy writes them
	}
	get := "GET /echo HTTP/1.1\r\nHost: x\r\n"
	refused := func(name, listener, head string, status int, details string) exchange {
		body := http.StatusText(status)
		return exchange{name: name, listener: listener, send: []string{head}, status: []int{status}, body: []string{body}, closes: true,
			log: []string{fmt.Sprintf("- - HTTP/1.1 %d DPE %s 0 %d - text/plain %d close", status, details, len(body), len(body))}}
	}
	served := func(name, listener string, send []string, body ...string) exchange {
		x := exchange{name: name, listener: listener, send: send, body: body}
		for _, b := range body {
			x.status = append(x.status, 200)
			method := "GET"
			if strings.HasPrefix(send[len(x.log)], "POST") || strings.Contains(send[len(x.log)], "\nPOST") {
				method = "POST"
			}
			received := 0
			if method == "POST" {
				received = 2
			}
			x.log = append(x.log, fmt.Sprintf("%s /echo HTTP/1.1 200 - via_upstream %d %d echo - %d -", method, received, len(b), len(b)))
		}
		return x
	}
	tokens := func(n int) string {
		var ts []string
		for i := range n {
			ts = append(ts, fmt.Sprintf("X-Hop-%d", i))
		}
		return strings.Join(ts, ", ")
	}
	hops := "X-Hop-0: a\r\nX-Hop-1: b\r\nX-Hop-5: c\r\nX-Keep: d\r\n"
	big := "X-Big: " + strings.Repeat("b", 70<<10) + "\r\n"
	exchanges := []exchange{
		served("empty lines before the request line", "egress", []string{"\r\n\r\n" + get + "\r\n"}, ""),
		served("bare CR and LF before the request line", "egress", []string{"\n\r\r\n\n" + get + "\r\n"}, ""),
		served("an empty line after a body", "egress",
			[]string{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab\r\n", get + "\r\n"}, "", ""),
		refused("empty lines past the head limit", "egress", strings.Repeat("\r\n", 31<<10)+get+"\r\n", 431,
			"http1.headers_too_large"),
		served("nine connection tokens", "egress", []string{get + "Connection: " + tokens(8) + ", keep-alive\r\n" + hops + "\r\n"},
			"X-Keep"),
		served("nine connection tokens over two lines", "egress",
			[]string{get + "Connection: " + tokens(4) + "\r\nConnection: X-Hop-5,,,X-Hop-6, X-Hop-7, X-Hop-8, X-Hop-9\r\n" + hops + "\r\n"},
			"X-Keep"),
		served("TE: trailers named hop-by-hop", "egress", []string{get + "Connection: te, X-Hop-0\r\nTE: trailers\r\n" + hops + "\r\n"},
			"Te=trailers,X-Hop-1,X-Hop-5,X-Keep"),
		refused("ten connection tokens", "egress", get+"Connection: "+tokens(9)+", close\r\n"+hops+"\r\n", 400,
			"http1.connection_header_rejected"),
		refused("twelve connection tokens", "egress", get+"Connection: "+tokens(12)+"\r\n"+hops+"\r\n", 400,
			"http1.connection_header_rejected"),
		refused("ten connection tokens over two lines", "egress",
			get+"Connection: "+tokens(5)+"\r\nConnection: "+tokens(5)+"\r\n"+hops+"\r\n", 400, "http1.connection_header_rejected"),
		refused("X-Forwarded-For named hop-by-hop", "egress", get+"Connection: X-Hop-0, x-forwarded-for\r\n"+hops+"\r\n", 400,
			"http1.connection_header_rejected"),
		{name: "an upgrade naming X-Forwarded-For", listener: "up",
			send:   []string{get + "Connection: upgrade, x-forwarded-for\r\nUpgrade: websocket\r\n" + hops + "\r\n"},
			status: []int{403}, body: []string{""}, closes: true, log: []string{"GET /echo HTTP/1.1 403 - upgrade_failed 0 0 - - - close"}},
		{name: "an upgrade as the tenth connection token", listener: "up",
			send:   []string{get + "Connection: " + tokens(9) + ", upgrade\r\nUpgrade: websocket\r\n" + hops + "\r\n"},
			status: []int{403}, body: []string{""}, closes: true, log: []string{"GET /echo HTTP/1.1 403 - upgrade_failed 0 0 - - - close"}},
		refused("Expect: foo with X-Forwarded-For named hop-by-hop", "egress",
			get+"Expect: foo\r\nConnection: x-forwarded-for\r\n"+hops+"\r\n", 400, "http1.connection_header_rejected"),
		refused("TE named with a 256-byte value", "egress", get+"Connection: te\r\nTE: trailers, "+strings.Repeat("g", 256-10)+"\r\n\r\n",
			400, "http1.connection_header_rejected"),
		refused("TE named with 256 bytes over two lines", "egress",
			get+"Connection: te\r\nTE: trailers\r\nTE: "+strings.Repeat("g", 256-9)+"\r\n\r\n", 400, "http1.connection_header_rejected"),
		served("TE named with a 255-byte value", "egress",
			[]string{get + "Connection: te\r\nTE: gzip, trailers, " + strings.Repeat("g", 255-16) + "\r\n\r\n"}, "Te=trailers"),
		// Envoy's header map joins lines skipping empty ones: no comma
		// for them (HeaderMapImpl's append).
		served("TE named with a 255-byte value and an empty TE line", "egress",
			[]string{get + "Connection: te\r\nTE:\r\nTE: gzip, trailers, " + strings.Repeat("g", 255-16) + "\r\nTE: \r\n\r\n"}, "Te=trailers"),
		served("TE with trailers among its codings", "egress", []string{get + "TE: gzip;q=0.5, Trailers\r\n\r\n"}, "Te=trailers"),
		served("TE with trailers on its second line", "egress", []string{get + "TE: gzip\r\nTE: trailers\r\n\r\n"}, "Te=trailers"),
		served("TE without trailers", "egress", []string{get + "TE: gzip, trailers;q=1\r\n\r\n"}, ""),
		served("Forwarded named hop-by-hop", "egress",
			[]string{get + "Connection: keep-alive, Forwarded\r\nForwarded: for=1.2.3.4\r\n" + hops + "\r\n"},
			"X-Hop-0,X-Hop-1,X-Hop-5,X-Keep"),
		served("Forwarded not named", "egress",
			[]string{get + "Connection: keep-alive, X-Hop-0\r\nForwarded: for=1.2.3.4\r\n" + hops + "\r\n"},
			"Forwarded,X-Hop-1,X-Hop-5,X-Keep"),
		served("connection and keep-alive named", "egress",
			[]string{get + "Connection: connection, keep-alive, X-Hop-1\r\nKeep-Alive: timeout=5\r\n" + hops + "\r\n"},
			"X-Hop-0,X-Hop-5,X-Keep"),
		served("HTTP2-Settings named", "egress",
			[]string{get + "Connection: HTTP2-Settings, X-Hop-0\r\nHTTP2-Settings: AAMAAABk\r\n" + hops + "\r\n"},
			"Http2-Settings,X-Hop-1,X-Hop-5,X-Keep"),
		served("five header lines where five are allowed", "small", []string{get + "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-Keep: 4\r\n\r\n"},
			"X-Keep"),
		refused("six header lines where five are allowed", "small", get+"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX-Keep: 5\r\n\r\n",
			431, "http1.too_many_headers"),
		refused("a head over 1 KiB where 1 KiB is allowed", "small", get+"X-Big: "+strings.Repeat("b", 1<<10)+"\r\n\r\n", 431,
			"http1.headers_too_large"),
		// Pipelined behind a request in the same write: the goroutine path
		// read it into its buffer with the first, and counted only what it
		// read after, so that it took a head of up to its buffer's size
		// over the limit.
		{name: "a pipelined head over 1 KiB where 1 KiB is allowed", listener: "small",
			send:   []string{get + "\r\n" + get + "X-Big: " + strings.Repeat("b", 1500) + "\r\n\r\n", ""},
			status: []int{200, 431}, body: []string{"", "Request Header Fields Too Large"}, closes: true,
			log: []string{"GET /echo HTTP/1.1 200 - via_upstream 0 0 echo - 0 -",
				"- - HTTP/1.1 431 DPE http1.headers_too_large 0 31 - text/plain 31 close"}},
		// Read into the buffer with the body before it: past the limit,
		// a line the reader refuses (400) or a Transfer-Encoding it does
		// not take (501) is not looked at, as when the head comes alone.
		{name: "a pipelined head over 1 KiB with a bad line past it", listener: "small",
			send: []string{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1500\r\n\r\n" + strings.Repeat("a", 1500) +
				get + "X-Big: " + strings.Repeat("b", 1500) + "\r\nBad Line\r\n\r\n", ""},
			status: []int{200, 431}, body: []string{"", "Request Header Fields Too Large"}, closes: true,
			log: []string{"POST /echo HTTP/1.1 200 - via_upstream 1500 0 echo - 0 -",
				"- - HTTP/1.1 431 DPE http1.headers_too_large 0 31 - text/plain 31 close"}},
		{name: "a pipelined head over 1 KiB with a Transfer-Encoding past it", listener: "small",
			send: []string{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1500\r\n\r\n" + strings.Repeat("a", 1500) +
				get + "X-Big: " + strings.Repeat("b", 1500) + "\r\nTransfer-Encoding: gzip\r\n\r\n", ""},
			status: []int{200, 431}, body: []string{"", "Request Header Fields Too Large"}, closes: true,
			log: []string{"POST /echo HTTP/1.1 200 - via_upstream 1500 0 echo - 0 -",
				"- - HTTP/1.1 431 DPE http1.headers_too_large 0 31 - text/plain 31 close"}},
		// Envoy's parser fails at the malformed line as it reads it, before
		// its callbacks count the head past the limit: 400, not 431.
		refused("a head over 1 KiB with a bad line before the limit", "small",
			get+"Bad Line\r\nX-Big: "+strings.Repeat("b", 1500)+"\r\n\r\n", 400, "http1.codec_error"),
		refused("a head over 60 KiB with a bad line before the limit", "egress", get+"Bad Line\r\n"+big+"\r\n", 400,
			"http1.codec_error"),
		served("a 70 KiB head where 100 KiB is allowed", "big", []string{get + big + "X-Keep: 1\r\n\r\n"}, "X-Keep"),
		refused("a 70 KiB head where 60 KiB is allowed", "egress", get+big+"\r\n", 431, "http1.headers_too_large"),
	}
	counters := []string{"downstream_rq_total", "downstream_rq_http1_total", "downstream_rq_completed", "downstream_rq_2xx",
		"downstream_rq_4xx", "downstream_rq_rx_reset", "downstream_cx_protocol_error", "downstream_cx_total"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		headers := func(m *hcmv3.HttpConnectionManager) { m.RequestHeadersTimeout = durationpb.New(5 * time.Second) }
		small := func(m *hcmv3.HttpConnectionManager) {
			m.MaxRequestHeadersKb = wrapperspb.UInt32(1)
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(5)}
		}
		large := func(m *hcmv3.HttpConnectionManager) { m.MaxRequestHeadersKb = wrapperspb.UInt32(100) }
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format), headers)),
			httpListener("small", httpManager("small", "rds", withAccessLog(logFile, format), headers, small)),
			httpListener("big", httpManager("big", "rds", withAccessLog(logFile, format), headers, large)),
			httpListener("up", httpManager("up", "rds", withAccessLog(logFile, format), headers)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		res := pathResult{answers: map[string]string{}}
		lines := 0
		for _, x := range exchanges {
			what := p.name + ", " + x.name
			res.answers[x.name] = h1Exchange(t, h.addr(x.listener), what, x.send, x.closes, func(i int, resp *http.Response, body []byte) {
				lines++
				if p.goroutines && (resp.StatusCode != x.status[i] || string(body) != x.body[i]) {
					t.Errorf("%s: the goroutine path answered %d %q; want %d %q", x.name, resp.StatusCode, body, x.status[i], x.body[i])
				}
			})
		}
		res.log = awaitLog(t, logFile, lines)
		res.stats = h.countsBy("http", []string{"egress", "small", "big"}, counters)
		if p.goroutines {
			loggedExactly(t, res.log, exchanges, func(x exchange) (string, []string) { return x.name, x.log })
		} else {
			// The loops serve and refuse every one of these themselves.
			for _, name := range []string{"egress", "small", "big"} {
				if l := h.listener(name); !l.OnLoops() || l.HandedOff() != 0 {
					t.Errorf("%s: %s on the loops %v, %d connections handed off; want true, 0", p.name, name, l.OnLoops(), l.HandedOff())
				}
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestTrailingEmptyLineIdlesSamePaths: CR and LF after a request (after a
// POST's body, say) open no request, as they open no stream in Envoy's
// codec: the connection idles (under its idle timeout) rather than
// having its header timeout run, on every path. Both paths started the
// header timeout at the first of them, and answered an idle keep-alive
// connection 408 after request_headers_timeout.
//
// They do not restart the idle timeout either, as bytes that open no
// stream do not restart Envoy's: a client sending CR LF every 100 ms to a
// connection whose idle timeout is 300 ms is closed at the idle timeout
// (drip). The loops restarted it at every read, and held the connection
// as long as they came.
func TestTrailingEmptyLineIdlesSamePaths(t *testing.T) {
	echo := echoHopUpstream(t)
	const headerTimeout = 100 * time.Millisecond
	const idle, dripEvery, dripFor = 300 * time.Millisecond, 100 * time.Millisecond, 3 * time.Second
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.RequestHeadersTimeout = durationpb.New(headerTimeout)
		})), httpListener("drip", httpManager("drip", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.RequestHeadersTimeout = durationpb.New(headerTimeout)
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)}
		})), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		c, err := net.Dial("tcp", h.addr("egress"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var answer []string
		read := func() {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				answer = append(answer, err.Error())
				return
			}
			body, _ := io.ReadAll(resp.Body)
			answer = append(answer, fmt.Sprintf("%d %q", resp.StatusCode, body))
		}
		_, _ = io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Keep: 1\r\n\r\nab\r\n")
		read()
		// Nothing comes for several header timeouts: no 408, no close.
		_ = c.SetReadDeadline(time.Now().Add(5 * headerTimeout))
		if _, err := br.ReadByte(); err != nil && !os.IsTimeout(err) {
			answer = append(answer, "then "+err.Error())
		} else if err == nil {
			answer = append(answer, "then a byte")
		}
		_, _ = io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Keep: 1\r\n\r\n")
		read()
		_ = c.Close()
		res := pathResult{answers: map[string]string{"answers": strings.Join(answer, "\n"), "drip": dripEmptyLines(t, h.addr("drip"), dripEvery, dripFor)}}
		res.stats = fmt.Sprintf("downstream_rq_header_timeout %d %d, downstream_cx_idle_timeout %d",
			h.stat("http.egress.downstream_rq_header_timeout"), h.stat("http.drip.downstream_rq_header_timeout"), h.stat("http.drip.downstream_cx_idle_timeout"))
		if want := "200 \"X-Keep\"\n200 \"X-Keep\""; p.goroutines && res.answers["answers"] != want {
			t.Errorf("the goroutine path answered\n%s\nwant\n%s", res.answers["answers"], want)
		}
		if want := "200, then closed"; p.goroutines && res.answers["drip"] != want {
			t.Errorf("the goroutine path answered the drip\n%s\nwant\n%s", res.answers["drip"], want)
		}
		if want := "downstream_rq_header_timeout 0 0, downstream_cx_idle_timeout 1"; p.goroutines && res.stats != want {
			t.Errorf("the goroutine path counted %s, want %s", res.stats, want)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, []string{"answers", "drip"})
}

// dripEmptyLines sends a request to addr, reads its answer, then sends
// CR LF every every until the proxy closes the connection or for has
// passed, and says which.
func dripEmptyLines(t *testing.T, addr string, every, until time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err.Error()
	}
	_, _ = io.ReadAll(resp.Body)
	answer := fmt.Sprint(resp.StatusCode)
	for end := time.Now().Add(until); time.Now().Before(end); {
		if _, err := io.WriteString(c, "\r\n"); err != nil {
			return answer + ", then closed" // reset: the proxy closed with CR LF unread
		}
		// The read's deadline paces the drip.
		_ = c.SetReadDeadline(time.Now().Add(every))
		switch _, err := br.ReadByte(); {
		case err == nil:
			return answer + ", then a byte"
		case errors.Is(err, io.EOF) || !os.IsTimeout(err):
			return answer + ", then closed"
		}
	}
	return fmt.Sprintf("%s, still open after %v", answer, until)
}

// TestIdleAfterSlowResponseSamePaths: a keep-alive connection's idle
// timeout runs from its last response's end, as Envoy's idle timer starts
// when the connection's last stream ends: a response slower than the
// idle timeout leaves the connection open for the next request, on every
// path. The loops ran it from the request's last read, and closed the
// connection (counted as an idle timeout) right after such a response.
func TestIdleAfterSlowResponseSamePaths(t *testing.T) {
	const idle = 300 * time.Millisecond
	slow := newBackend(t, "slow")
	slow.mu.Lock()
	slow.slow = 2 * idle
	slow.mu.Unlock()
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)}
		})), routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "slow"))), edsCluster("slow"), cla("slow", slow.addr()))
		c := dialRaw(t, h.addr("egress"))
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
		answer := ""
		if resp, err := http.ReadResponse(br, nil); err != nil {
			answer = err.Error()
		} else {
			_, _ = io.ReadAll(resp.Body)
			answer = resp.Status
			// A third of the idle timeout after the response: still open.
			_ = c.SetReadDeadline(time.Now().Add(idle / 3))
			switch _, err := br.ReadByte(); {
			case err == nil:
				answer += ", then a byte"
			case os.IsTimeout(err):
				answer += ", then open"
			default:
				answer += ", then closed"
			}
		}
		res := pathResult{answers: map[string]string{"answer": answer}}
		res.stats = fmt.Sprintf("downstream_cx_idle_timeout %d", h.stat("http.egress.downstream_cx_idle_timeout"))
		if p.goroutines && (answer != "200 OK, then open" || res.stats != "downstream_cx_idle_timeout 0") {
			t.Errorf("the goroutine path answered %q, counted %s", answer, res.stats)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, []string{"answer"})
}
