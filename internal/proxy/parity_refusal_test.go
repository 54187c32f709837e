package proxy

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestHTTP1RefusalsSamePaths: an HTTP/1.1 request head the proxy refuses
// before routing is answered, counted and logged as Envoy's connection
// manager does it, alike on every path. Envoy's HTTP/1 codec
// (sendProtocolError) answers a local reply with the status's reason
// phrase as the body (400 "Bad Request" for a head it cannot read, 431
// for one over 60 KiB or with more than 100 header lines, 501 for a
// Transfer-Encoding other than chunked, 426 "Upgrade Required" for
// HTTP/1.0 and any other version but HTTP/1.1 without accept_http_10),
// text/plain, with server, date and connection: close, then closes; it
// counts a request (downstream_rq_total, _completed, its class), reset
// (downstream_rq_rx_reset), and a protocol error, and logs it without
// request headers, flagged DPE, with the codec's details. A head that
// does not complete within request_headers_timeout is answered 408
// "request header timeout", counted in downstream_rq_header_timeout, not
// as a protocol error. The goroutine path answered "400 Bad Request" as
// text/plain; charset=utf-8 without server or date, counted no request
// and logged nothing; the loops answered their parser's text and counted
// the request but not as HTTP/1.1 nor as reset, and logged nothing; both
// served HTTP/1.0. With accept_http_10, HTTP/1.0 is served with an
// HTTP/1.0 status line and keep-alive when asked for (the loops hand it
// to the goroutine path; they answered HTTP/1.1). Each request goes on a
// connection of its own; after a refusal the connection is closed.
func TestHTTP1RefusalsSamePaths(t *testing.T) {
	ok := rawHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% " +
		"%UPSTREAM_CLUSTER% %RESP(CONTENT-TYPE)% %RESP(CONTENT-LENGTH)% %RESP(CONNECTION)% %RESP(SERVER)%\n"}}
	type exchange struct {
		name     string
		listener string // egress (accept_http_10 unset) or egress10 (set)
		send     []string
		// status and body are the answer to each request as Envoy
		// gives it, proto its status line's version; closes: the
		// connection closes after the last.
		status []int
		body   string
		proto  string
		closes bool
		// log is the answer's access log line as Envoy writes it (one
		// per request): see format.
		log []string
	}
	refused := func(name, head string, status int, details string) exchange {
		body := http.StatusText(status)
		return exchange{name: name, listener: "egress", send: []string{head}, status: []int{status}, body: body, proto: "HTTP/1.1",
			closes: true, log: []string{fmt.Sprintf("- - HTTP/1.1 %d DPE %s 0 %d - text/plain %d close envoy", status, details, len(body), len(body))}}
	}
	exchanges := []exchange{
		refused("malformed request line", "NOT HTTP\r\n\r\n", 400, "http1.codec_error"),
		refused("malformed header line", "GET /ok HTTP/1.1\r\nHost : x\r\n\r\n", 400, "http1.codec_error"),
		refused("head too large", "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 61<<10)+"\r\n\r\n", 431,
			"http1.headers_too_large"),
		refused("too many header lines", "GET /ok HTTP/1.1\r\nHost: x\r\n"+strings.Repeat("X-A: b\r\n", 100)+"\r\n", 431,
			"http1.too_many_headers"),
		refused("content-length with transfer-encoding",
			"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
			"http1.content_length_and_chunked_not_allowed"),
		refused("unsupported transfer-encoding", "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
			"http1.invalid_transfer_encoding"),
		refused("HTTP/1.0", "GET /ok HTTP/1.0\r\nHost: x\r\n\r\n", 426, "low_version"),
		refused("HTTP/1.0 keep-alive", "GET /ok HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", 426, "low_version"),
		refused("HTTP/1.0 without Host", "GET /ok HTTP/1.0\r\n\r\n", 426, "low_version"),
		refused("HTTP/2.0 request line", "GET /ok HTTP/2.0\r\nHost: x\r\n\r\n", 426, "low_version"),
		refused("two Hosts", "GET /ok HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "http1.codec_error"),
		{name: "missing Host", listener: "egress", send: []string{"GET /ok HTTP/1.1\r\n\r\n"}, status: []int{400}, proto: "HTTP/1.1",
			closes: true, log: []string{"GET /ok HTTP/1.1 400 - missing_host_header 0 0 - - - close envoy"}},
		{name: "empty Host", listener: "egress", send: []string{"GET /ok HTTP/1.1\r\nHost:\r\n\r\n"}, status: []int{400}, proto: "HTTP/1.1",
			closes: true, log: []string{"GET /ok HTTP/1.1 400 - missing_host_header 0 0 - - - close envoy"}},
		{name: "request header timeout", listener: "egress", send: []string{"GET /ok HTTP/1.1\r\nHost: x\r\n"}, status: []int{408},
			body: "request header timeout", proto: "HTTP/1.1", closes: true,
			log: []string{"- - HTTP/1.1 408 - request_header_timeout 0 22 - text/plain 22 close envoy"}},
		{name: "HTTP/1.0 accepted", listener: "egress10",
			send:   []string{"GET /ok HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "GET /ok HTTP/1.0\r\nHost: x\r\n\r\n"},
			status: []int{200, 200}, proto: "HTTP/1.0", closes: true,
			log: []string{"GET /ok HTTP/1.0 200 - via_upstream 0 2 ok - 2 keep-alive envoy", "GET /ok HTTP/1.0 200 - via_upstream 0 2 ok - 2 close envoy"}},
		{name: "HTTP/1.0 accepted, without Host", listener: "egress10", send: []string{"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
			status: []int{400}, proto: "HTTP/1.0", closes: true,
			log: []string{"GET /ok HTTP/1.0 400 - missing_host_header 0 0 - - - close envoy"}},
		{name: "HTTP/1.1 where HTTP/1.0 is accepted", listener: "egress10", send: []string{"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"},
			status: []int{200}, proto: "HTTP/1.1", log: []string{"GET /ok HTTP/1.1 200 - via_upstream 0 2 ok - 2 - envoy"}},
	}
	counters := []string{"downstream_rq_total", "downstream_rq_http1_total", "downstream_rq_completed", "downstream_rq_2xx",
		"downstream_rq_4xx", "downstream_rq_5xx", "downstream_rq_rx_reset", "downstream_cx_protocol_error",
		"downstream_rq_header_timeout", "downstream_cx_total", "downstream_cx_http1_total"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		headers := func(m *hcmv3.HttpConnectionManager) { m.RequestHeadersTimeout = durationpb.New(500 * time.Millisecond) }
		accept10 := func(m *hcmv3.HttpConnectionManager) {
			m.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AcceptHttp_10: true}
		}
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format), headers)),
			httpListener("egress10", httpManager("egress10", "rds", withAccessLog(logFile, format), headers, accept10)),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "ok"))), edsCluster("ok"), cla("ok", ok))
		res := pathResult{answers: map[string]string{}}
		lines := 0
		for _, x := range exchanges {
			what := p.name + ", " + x.name
			res.answers[x.name] = h1Exchange(t, h.addr(x.listener), what, x.send, x.closes, func(i int, resp *http.Response, body []byte) {
				lines++
				if !p.goroutines {
					return
				}
				// The goroutine path's answer is Envoy's; the others must
				// equal it.
				if resp.StatusCode != x.status[i] || resp.Proto != x.proto || x.body != "" && string(body) != x.body ||
					resp.Header.Get("Server") != "envoy" || resp.Header.Get("Date") == "" {
					t.Errorf("%s: the goroutine path answered %s %d %q %v; want %s %d %q from envoy with a date", x.name,
						resp.Proto, resp.StatusCode, body, resp.Header, x.proto, x.status[i], x.body)
				}
				if x.body != "" && (resp.Header.Get("Content-Type") != "text/plain" || !resp.Close) {
					t.Errorf("%s: the goroutine path answered %v; want text/plain and connection: close", x.name, resp.Header)
				}
				if x.proto == "HTTP/1.0" && x.status[i] == 200 && i == 0 && resp.Header.Get("Connection") != "keep-alive" {
					t.Errorf("%s: the goroutine path answered %v; want connection: keep-alive", x.name, resp.Header)
				}
			})
		}
		res.log = awaitLog(t, logFile, lines)
		res.stats = h.countsBy("http", []string{"egress", "egress10"}, counters)
		if p.goroutines {
			loggedExactly(t, res.log, exchanges, func(x exchange) (string, []string) { return x.name, x.log })
			// Envoy's counts: every refusal a request, reset; all but
			// the timeout protocol errors.
			// A missing (or empty) Host is answered after the head was
			// read: a request, not reset, not a protocol error.
			for name, want := range map[string]int64{"egress.downstream_rq_total": 14, "egress.downstream_rq_http1_total": 14,
				"egress.downstream_rq_completed": 14, "egress.downstream_rq_4xx": 13, "egress.downstream_rq_5xx": 1,
				"egress.downstream_rq_rx_reset": 12, "egress.downstream_cx_protocol_error": 11,
				"egress.downstream_rq_header_timeout": 1, "egress10.downstream_rq_total": 4, "egress10.downstream_rq_2xx": 3,
				"egress10.downstream_rq_4xx": 1, "egress10.downstream_rq_rx_reset": 0, "egress10.downstream_cx_protocol_error": 0} {
				if !strings.Contains(res.stats+"\n", fmt.Sprintf("%s %d\n", name, want)) {
					t.Errorf("the goroutine path counted\n%s\nwant %s %d", res.stats, name, want)
				}
			}
		} else {
			// The loops answer every refusal themselves, and hand the
			// accepted HTTP/1.0 connection to the goroutine path.
			if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 {
				t.Errorf("%s: egress on the loops %v, %d connections handed off; want true, 0", p.name, l.OnLoops(), l.HandedOff())
			}
			if l := h.listener("egress10"); !l.OnLoops() || l.HandedOff() != 2 {
				t.Errorf("%s: egress10 on the loops %v, %d connections handed off; want true, 2", p.name, l.OnLoops(), l.HandedOff())
			}
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}
