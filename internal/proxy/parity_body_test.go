package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// headFirstHTTP1Upstream answers each connection's first request with
// answer as soon as its head is read, before its body, then reads what
// comes until the proxy closes the connection or the test ends, and sends
// no more.
func headFirstHTTP1Upstream(t *testing.T, answer string) string {
	t.Helper()
	return tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection, or at its deadline
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
	})
}

// earlyHTTP1Upstream answers before the body with a 200 head and a first
// chunk of 10 bytes (a response of unknown length, which the goroutine
// path's writer flushes as it comes, as the loops write any), and no more.
func earlyHTTP1Upstream(t *testing.T) string {
	t.Helper()
	return headFirstHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
}

// TestMalformedBodyAfterResponseSamePaths: a chunked request body that
// turns malformed after the upstream's response started (its head and
// part of its body sent to the client) ends the exchange as Envoy's
// codec error does once a response started: no local reply (the loops
// wrote a 400 head into the 200's body, and counted both), the
// connection closed, downstream_cx_protocol_error counted once and the
// request counted and logged with the status sent, flagged DPE (the
// goroutine path flagged it UR, an upstream reset, and counted no
// protocol error). Over an HTTP/1.1 upstream and an HTTP/2 one, alike on
// every path.
func TestMalformedBodyAfterResponseSamePaths(t *testing.T) {
	h1 := earlyHTTP1Upstream(t)
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	h2, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		_, _ = io.Copy(io.Discard, r.Body) // until the proxy resets the stream
		select {
		case <-r.Context().Done():
		case <-ended:
		}
	}))
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_SENT% %BYTES_RECEIVED% %UPSTREAM_CLUSTER%\n"}}
	paths := []string{"/h1", "/h2"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1", "h1"), routeTo("/h2", "h2"))),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for _, path := range paths {
			c := dialRaw(t, h.addr("egress"))
			_, _ = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, path, err)
			}
			first := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("%s, %s: the response's first bytes: %v", p.name, path, err)
			}
			// The response started: now a chunk size that is not one.
			_, _ = io.WriteString(c, "zz\r\nabc\r\n")
			rest, err := io.ReadAll(resp.Body)
			if err == io.ErrUnexpectedEOF {
				err = nil // the chunked body cut: the connection closed
			}
			end := "closed"
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				end = err.Error()
			}
			_ = c.Close()
			res.answers[path] = fmt.Sprintf("%s %q, then %q, %s", wireHead(resp, nil, false), first, rest, end)
			if p.goroutines && (len(rest) != 0 || end != "closed") {
				t.Errorf("%s: the goroutine path sent %q after the response's first bytes, then %s; want nothing, closed", path, rest, end)
			}
		}
		res.log = awaitLog(t, logFile, len(paths))
		res.stats = h.counts("http.egress.", []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx", "downstream_rq_4xx",
			"downstream_cx_protocol_error"})
		if p.goroutines {
			// Envoy's counts: the 200 once, a protocol error each, no 4xx.
			const want = "downstream_rq_total 2\ndownstream_rq_completed 2\ndownstream_rq_2xx 2\ndownstream_rq_4xx 0\n" +
				"downstream_cx_protocol_error 2"
			if res.stats != want {
				t.Errorf("the goroutine path's counters\n%s\nwant\n%s", res.stats, want)
			}
			for _, path := range paths {
				if want := "POST " + path + " 200 DPE downstream_protocol_error 10 5 "; !strings.Contains(res.log, want) {
					t.Errorf("the goroutine path's access log\n%s\nwant a line %q", res.log, want+"...")
				}
			}
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, paths)
}

// TestLocalReplyBeforeBodySamePaths: a request the proxy answers itself
// before its body was read, with a body of either framing, is answered
// as Envoy's connection manager answers it, on every path: when the
// request is complete as Envoy sees it at the reply, the connection is
// kept (the goroutine path reads and drops the body after the reply, the
// loops skip it); when not, the reply says connection: close and the
// connection closes after it (route.LocalReplyCloses). A reply made
// later than the head (its cluster's host refuses the connection, or
// cannot be reached: a TCP connect to the broadcast address fails at
// once, and the loops answer as they dispatch; Envoy notices either on
// a later event, once its codec parsed the body that came with the
// head) keeps the connection when the body came with the head, and
// closes it when the body comes later (sent 100 ms after the head).
// One made at the head (no route, a direct response, no healthy host:
// Envoy answers those while its codec dispatches the head, before it
// parses the body behind it) closes it whatever came. Both paths kept
// the connection after every one of these, reading the body as it came.
// The loops took a chunked body for the next request's head (a 400) and
// closed the connection after a body with a length when they answered
// at dispatch, closed it after a request to an HTTP/2 cluster, and after
// a refused one to an HTTP/1.1 cluster left the request pipelined behind
// it waiting for the connection's idle timeout. Each request goes on a
// connection of its own, with the next one written behind its body.
func TestLocalReplyBeforeBodySamePaths(t *testing.T) {
	ok := newBackend(t, "ok")
	dead := deadAddr(t)
	const unreachable = "255.255.255.255:80"
	type request struct {
		name string
		host string // "x" unless set: routed
		path string
		body string // the framing header, the blank line and the body
		// late: the body is sent 100 ms after the head, once the
		// upstream's connect has failed.
		late bool
		// want is the answer's status; closes: the connection closes
		// after it.
		want   int
		closes bool
	}
	const (
		length  = "Content-Length: 5\r\n\r\nhello"
		chunked = "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	)
	requests := []request{
		{name: "content-length body", path: "/dead", body: length, want: 503},
		{name: "chunked body", path: "/dead", body: chunked, want: 503},
		{name: "HTTP/2 cluster, content-length body", path: "/dead2", body: length, want: 503},
		{name: "HTTP/2 cluster, chunked body", path: "/dead2", body: chunked, want: 503},
		{name: "unreachable, content-length body", path: "/unreachable", body: length, want: 503},
		{name: "unreachable, chunked body", path: "/unreachable", body: chunked, want: 503},
		{name: "unreachable HTTP/2 cluster, content-length body", path: "/unreachable2", body: length, want: 503},
		{name: "unreachable HTTP/2 cluster, chunked body", path: "/unreachable2", body: chunked, want: 503},
		{name: "content-length body sent late", path: "/dead", body: length, late: true, want: 503, closes: true},
		{name: "chunked body sent late", path: "/dead", body: chunked, late: true, want: 503, closes: true},
		{name: "HTTP/2 cluster, content-length body sent late", path: "/dead2", body: length, late: true, want: 503, closes: true},
		{name: "HTTP/2 cluster, chunked body sent late", path: "/dead2", body: chunked, late: true, want: 503, closes: true},
		{name: "no route, content-length body", host: "elsewhere", path: "/", body: length, want: 404, closes: true},
		{name: "no route, chunked body", host: "elsewhere", path: "/", body: chunked, want: 404, closes: true},
		{name: "no route, chunked body sent late", host: "elsewhere", path: "/", body: chunked, late: true, want: 404, closes: true},
		{name: "direct response, content-length body", path: "/direct", body: length, want: 200, closes: true},
		{name: "no healthy host, chunked body", path: "/empty", body: chunked, want: 503, closes: true},
		{name: "no healthy host, empty body", path: "/empty", body: "Content-Length: 0\r\n\r\n", want: 503},
	}
	direct := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/direct"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "hi"}}}}}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %UPSTREAM_CLUSTER% %RESP(CONNECTION)%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"x"}, direct, routeTo("/dead2", "dead2"), routeTo("/dead", "dead"),
				routeTo("/unreachable2", "unreachable2"), routeTo("/unreachable", "unreachable"), routeTo("/empty", "empty"),
				routeTo("/", "ok"))),
			edsCluster("ok"), cla("ok", ok.addr()), edsCluster("dead"), cla("dead", dead), edsCluster("dead2", h2Upstream), cla("dead2", dead),
			edsCluster("unreachable"), cla("unreachable", unreachable), edsCluster("unreachable2", h2Upstream),
			cla("unreachable2", unreachable), edsCluster("empty"), cla("empty"))
		res := pathResult{answers: map[string]string{}}
		sent := 0
		for _, r := range requests {
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			host := r.host
			if host == "" {
				host = "x"
			}
			head, rest := "POST "+r.path+" HTTP/1.1\r\nHost: "+host+"\r\n", r.body+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
			if r.late {
				framing, body, _ := strings.Cut(r.body, "\r\n\r\n")
				head, rest = head+framing+"\r\n\r\n", body+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
				_, _ = io.WriteString(c, head)
				time.Sleep(100 * time.Millisecond)
				head = ""
			}
			_, _ = io.WriteString(c, head+rest)
			br := bufio.NewReader(c)
			var answer []string
			more, n := twoAnswers(br)
			answer = append(answer, more...)
			sent += n
			_ = c.Close()
			got := strings.Join(answer, ", then ")
			res.answers[r.name] = got
			want := fmt.Sprintf("%d close false, then 200 close false", r.want)
			if r.closes {
				want = fmt.Sprintf("%d close true, then closed", r.want)
			}
			if p.goroutines && got != want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, got, want)
			}
			if want, ok := results["goroutines"]; ok && got != want.answers[r.name] {
				// Before the wait for the log, which lines missing fail.
				t.Errorf("%s, %s: answered\n%s\nthe goroutine path\n%s", p.name, r.name, got, want.answers[r.name])
			}
		}
		res.log = awaitLog(t, logFile, sent)
		res.stats = h.counts("http.egress.", []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_2xx", "downstream_rq_4xx",
			"downstream_rq_5xx", "downstream_cx_protocol_error", "downstream_cx_total"})
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, nil) // the answers were compared as they came
}

// answeringHTTP1Upstream answers before the body with a whole 413.
func answeringHTTP1Upstream(t *testing.T) string {
	t.Helper()
	return headFirstHTTP1Upstream(t, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
}

// TestEarlyResponseBeforeBodySamePaths: an upstream that answers, whole,
// before the client has sent all of the request's body (a body with a
// length, short or long, and a chunked one) has its answer relayed at
// once with connection:
// close and the connection closed after it, what the client still sends
// read and dropped for a moment, on every path, as Envoy's connection
// manager does when it encodes a response head before the request is
// complete (ActiveStream::encodeHeaders, then doEndStream resets the
// stream and closes the HTTP/1 connection). The goroutine path kept the
// connection and read the rest of the body as the next request's way
// in, answering the request behind it; the loops closed it.
func TestEarlyResponseBeforeBodySamePaths(t *testing.T) {
	up := answeringHTTP1Upstream(t)
	type request struct {
		name, head, first, rest string
	}
	const next = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
	requests := []request{
		{"content-length body", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", "hello",
			strings.Repeat("a", 100000-5)},
		// Short enough for the goroutine path's inline exchange, which
		// wrote a request whole before it read the response: it answered
		// once the rest came.
		{"short content-length body", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "hello", "world"},
		{"chunked body", "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n",
			"5\r\nworld\r\n0\r\n\r\n"},
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %UPSTREAM_CLUSTER% %RESP(CONNECTION)%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "up"))), edsCluster("up"), cla("up", up))
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			c := dialRaw(t, h.addr("egress"))
			_, _ = io.WriteString(c, r.head+r.first)
			br := bufio.NewReader(c)
			var answer []string
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, r.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			answer = append(answer, fmt.Sprintf("%d %q close %v", resp.StatusCode, body, resp.Close))
			// The rest of the body, and a request behind it: Envoy reads
			// neither.
			_, _ = io.WriteString(c, r.rest+next)
			if resp, err := http.ReadResponse(br, nil); err != nil {
				end := "closed"
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
					end = err.Error()
				}
				answer = append(answer, end)
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				answer = append(answer, strconv.Itoa(resp.StatusCode))
			}
			_ = c.Close()
			got := strings.Join(answer, ", then ")
			res.answers[r.name] = got
			if want := `413 "big!" close true, then closed`; p.goroutines && got != want {
				t.Errorf("%s: the goroutine path answered %s; want %s", r.name, got, want)
			}
		}
		res.log = awaitLog(t, logFile, len(requests))
		if want := "POST /up 413 - 4 up close"; p.goroutines && strings.TrimSpace(res.log) != strings.TrimSpace(strings.Repeat(want+"\n", len(requests))) {
			t.Errorf("the goroutine path's access log\n%s\nwant %q for each request", res.log, want)
		}
		res.stats = h.counts("http.egress.", []string{"downstream_rq_total", "downstream_rq_completed", "downstream_rq_4xx",
			"downstream_cx_protocol_error", "downstream_cx_total"})
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestPendingTimeoutLocalReplySamePaths: a request that waits for one of
// its cluster's max_connections (the one connection is held by a slow
// request) and is answered 504 by the route timeout meanwhile is not
// answered at the head: Envoy's router queues it in the connection pool
// and its codec reads the body meanwhile, so the connection manager keeps
// the connection when the whole body has arrived by the timeout (a body
// with a length, a chunked one) and closes it when the body is still to
// come (route.LocalReplyCloses), on every path (the loops hand such a
// cluster to the goroutine path). The goroutine path took a reply made
// before the first attempt started for one made at the head, and closed
// the connection whatever had arrived. Each request goes on a connection
// of its own, with the next one (to a cluster without a breaker) written
// behind its body.
func TestPendingTimeoutLocalReplySamePaths(t *testing.T) {
	ok := newBackend(t, "ok")
	slow := newBackend(t, "slow")
	slow.slow = 10 * time.Second
	type request struct {
		name, body, want string
		late             bool // the body is sent 300 ms after the head, past the timeout
	}
	requests := []request{
		{"content-length body", "Content-Length: 5\r\n\r\nhello", "504 close false, then 200 close false", false},
		{"chunked body", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "504 close false, then 200 close false", false},
		{"content-length body sent late", "Content-Length: 5\r\n\r\nhello", "504 close true, then closed", true},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, chargeRoute("/short", "pending", 100*time.Millisecond, "", 0),
				routeTo("/next", "ok"), chargeRoute("/", "pending", 1500*time.Millisecond, "", 0))),
			edsCluster("ok"), cla("ok", ok.addr()),
			edsCluster("pending", func(c *clusterv3.Cluster) {
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(1)}}}
			}), cla("pending", slow.addr()))
		// One request holds the one connection (until its 1.5 s timeout)
		// while the others wait for it.
		held := make(chan string, 1)
		cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		go func() { held <- abortAnswer(t, cl, "http://"+h.addr("egress")+"/", "x") }() // ends within its timeout
		waitStats(t, h, map[string]int64{"cluster.pending.upstream_rq_total": 1})
		res := pathResult{answers: map[string]string{}}
		for _, r := range requests {
			c, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			head, rest := "POST /short HTTP/1.1\r\nHost: x\r\n", r.body+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
			if r.late {
				framing, body, _ := strings.Cut(r.body, "\r\n\r\n")
				_, _ = io.WriteString(c, head+framing+"\r\n\r\n")
				time.Sleep(300 * time.Millisecond)
				head, rest = "", body+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
			}
			_, _ = io.WriteString(c, head+rest)
			br := bufio.NewReader(c)
			var answer []string
			more, _ := twoAnswers(br)
			answer = append(answer, more...)
			_ = c.Close()
			got := strings.Join(answer, ", then ")
			res.answers[r.name] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %s; want %s", p.name, r.name, got, r.want)
			}
		}
		if got := <-held; got != "504" {
			t.Errorf("%s: the request holding the connection was answered %s; want 504", p.name, got)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, nil)
}

// twoAnswers reads up to two HTTP/1.1 responses from br, each described
// as "<status> close <bool>", or "closed" (or the read's error) when the
// connection ends first, and returns them with the number of responses
// read.
func twoAnswers(br *bufio.Reader) ([]string, int) {
	var answer []string
	for range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			end := "closed"
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
				end = err.Error()
			}
			return append(answer, end), len(answer)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		answer = append(answer, fmt.Sprintf("%d close %v", resp.StatusCode, resp.Close))
	}
	return answer, len(answer)
}
