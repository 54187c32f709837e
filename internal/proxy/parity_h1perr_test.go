package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestH1UpstreamProtocolErrorSamePaths: an HTTP/1.1 upstream's protocol
// error, as Envoy has it, on every path, to an HTTP/1.1 client (a GET,
// and a chunked POST, which the goroutine path sends through its
// fallback client, net/http's Transport) and an h2c one. (A head cut
// after a 1xx is not sent through the fallback client, which answers it
// 503 UC: a documented difference.)
//
// A head its connection's close cuts after the head's first byte, in a
// line or at a line's end (after a 199, which the router never sees,
// too), is Envoy's protocol error: its codec client hands the codec an
// empty dispatch at the close while a request is active
// (CodecClient::onEvent), which Balsa and http_parser fail as
// HPE_INVALID_EOF_STATE, and the router answers the ProtocolError reset
// 502 UPE upstream_reset_before_response_started{protocol_error}. Only a
// head cut in a line that then did not parse was, and on the goroutine
// path only: the rest were 503 UC (and a header line that did not parse
// through the fallback client). A close before a head's first byte
// stays a connection termination, 503 UC.
//
// Each such connection counts once in the cluster's
// upstream_cx_protocol_error, as Envoy's codec client counts a dispatch
// that fails (CodecClient::onData): a cut head, a malformed one, and a
// body of known length or chunked that the close cuts, or a malformed
// chunk (logged UPE upstream_reset_after_response_started{protocol_error}
// as before). A body delimited by the close ends there, counting
// nothing; a close before the head counts nothing. No path counted an
// HTTP/1.1 upstream's protocol error.
//
// The connection's reset (/rst/) is its close to Envoy's codec client
// (its connection raises a read error as RemoteClose), so it cuts a head
// or a body of known length alike, and ends a body delimited by the
// close whole, uncounted: every path cut that body (UPE) and counted it.
func TestH1UpstreamProtocolErrorSamePaths(t *testing.T) {
	scripts := map[string]string{
		"/cut/first":          "H",
		"/cut/status":         "HTTP/1.1 200 OK",
		"/cut/statusend":      "HTTP/1.1 200 OK\r\n",
		"/cut/line":           "HTTP/1.1 200 OK\r\nContent-Le",
		"/cut/lineend":        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		"/cut/after199":       "HTTP/1.1 199 Other\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		"/closed":             "",
		"/closed/after199":    "HTTP/1.1 199 Other\r\n\r\n",
		"/malformed":          "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
		"/malformed/line":     "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 2\r\n\r\nok",
		"/malformed/after199": "HTTP/1.1 199 Other\r\n\r\nHTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 2\r\n\r\nok",
		"/body/length":        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nla",
		"/body/chunked":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\n",
		"/body/badchunk":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\nzz\r\nxx\r\n",
		"/body/untilclose":    "HTTP/1.1 200 OK\r\n\r\nla",
		// The same ended by the connection's reset.
		"/rst/first":      "H",
		"/rst/lineend":    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
		"/rst/closed":     "",
		"/rst/length":     "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nla",
		"/rst/untilclose": "HTTP/1.1 200 OK\r\n\r\nla",
	}
	up := h1Upstream(t, func(c net.Conn, req *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, scripts[req.URL.Path])
		if strings.HasPrefix(req.URL.Path, "/rst/") {
			_ = c.(*net.TCPConn).SetLinger(0) // its close sends a reset
		}
		return false // closed after the script
	})
	const (
		upeBody = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
		ucBody  = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
		upe     = "502 \"" + upeBody + "\""
		uc      = "503 \"" + ucBody + "\""
		cut     = "200, then cut"
		whole   = "200 \"la\""
		logUPE  = "502 UPE upstream_reset_before_response_started{protocol_error}"
		logUC   = "503 UC upstream_reset_before_response_started{connection_termination}"
		logCut  = "200 UPE upstream_reset_after_response_started{protocol_error}"
		logOK   = "200 - via_upstream"
	)
	type exchange struct {
		client, path  string // client: GET, POST (chunked) or h2c
		want, wantLog string
		counted       int64 // upstream_cx_protocol_error's rise
	}
	exchanges := []exchange{
		{"GET", "/cut/first", upe, logUPE, 1},
		{"GET", "/cut/status", upe, logUPE, 1},
		{"GET", "/cut/statusend", upe, logUPE, 1},
		{"GET", "/cut/line", upe, logUPE, 1},
		{"GET", "/cut/lineend", upe, logUPE, 1},
		{"GET", "/cut/after199", upe, logUPE, 1},
		{"GET", "/closed", uc, logUC, 0},
		{"GET", "/closed/after199", uc, logUC, 0},
		{"GET", "/malformed", upe, logUPE, 1},
		{"GET", "/malformed/line", upe, logUPE, 1},
		{"GET", "/malformed/after199", upe, logUPE, 1},
		{"GET", "/body/length", cut, logCut, 1},
		{"GET", "/body/chunked", cut, logCut, 1},
		{"GET", "/body/badchunk", cut, logCut, 1},
		{"GET", "/body/untilclose", whole, logOK, 0},
		{"GET", "/rst/first", upe, logUPE, 1},
		{"GET", "/rst/lineend", upe, logUPE, 1},
		{"GET", "/rst/closed", uc, logUC, 0},
		{"GET", "/rst/length", cut, logCut, 1},
		{"GET", "/rst/untilclose", whole, logOK, 0},
		{"POST", "/cut/first", upe, logUPE, 1},
		{"POST", "/cut/line", upe, logUPE, 1},
		{"POST", "/cut/lineend", upe, logUPE, 1},
		{"POST", "/closed", uc, logUC, 0},
		{"POST", "/malformed", upe, logUPE, 1},
		{"POST", "/malformed/line", upe, logUPE, 1},
		{"POST", "/malformed/after199", upe, logUPE, 1},
		{"POST", "/body/length", cut, logCut, 1},
		{"POST", "/body/untilclose", whole, logOK, 0},
		{"POST", "/rst/lineend", upe, logUPE, 1},
		{"POST", "/rst/untilclose", whole, logOK, 0},
		{"h2c", "/cut/lineend", "502 " + upeBody, logUPE, 1},
		{"h2c", "/closed", "503 " + ucBody, logUC, 0},
		{"h2c", "/malformed", "502 " + upeBody, logUPE, 1},
		{"h2c", "/body/length", "200 la reset", logCut, 1},
		{"h2c", "/body/untilclose", "200 la", logOK, 0},
		{"h2c", "/rst/lineend", "502 " + upeBody, logUPE, 1},
		{"h2c", "/rst/untilclose", "200 la", logOK, 0},
	}
	name := func(x exchange) string { return x.client + " " + x.path }
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h1"))), edsCluster("h1"), cla("h1", up))
		res := pathResult{answers: map[string]string{}}
		const counter = "cluster.h1.upstream_cx_protocol_error"
		for _, x := range exchanges {
			before := h.stat(counter)
			var got string
			if x.client == "h2c" {
				got = h2Exchange(dialH2(t, h.addr("egress")), 1, [][2]string{
					{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", x.path}})
			} else {
				got = h1CutAnswer(t, h.addr("egress"), x.client, x.path)
			}
			counted := h.stat(counter) - before
			res.answers[name(x)] = fmt.Sprintf("%s; upstream_cx_protocol_error +%d", got, counted)
			if got != x.want || counted != x.counted {
				t.Errorf("%s, %s: answered %s, upstream_cx_protocol_error +%d; want %s, +%d", p.name, name(x), got, counted, x.want, x.counted)
			}
		}
		res.log = awaitLog(t, logFile, len(exchanges))
		res.stats = h.counts("cluster.h1.", []string{"upstream_cx_protocol_error", "upstream_rq_total", "upstream_rq_5xx", "upstream_rq_completed"})
		if p.goroutines {
			loggedExactly(t, res.log, exchanges, func(x exchange) (string, []string) {
				proto := "HTTP/1.1"
				method := x.client
				if x.client == "h2c" {
					proto, method = "HTTP/2", "GET"
				}
				return name(x), []string{fmt.Sprintf("%s %s %s %s", proto, method, x.path, x.wantLog)}
			})
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// h1CutAnswer sends a GET of path to addr, or a POST with a chunked body,
// on a connection of its own, and returns the answer's status and body
// (the status alone if the body was cut).
func h1CutAnswer(t *testing.T, addr, method, path string) string {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if method == "POST" {
		_, _ = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
	} else {
		_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error()
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		// What came of the body is left out: the loops cut the bytes
		// that came with a malformed chunk.
		return fmt.Sprintf("%d, then cut", resp.StatusCode)
	}
	return fmt.Sprintf("%d %q", resp.StatusCode, b)
}
