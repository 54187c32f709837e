package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestCutResponseLogSamePaths: a response its upstream cut after the head
// went downstream is logged on every path, to an HTTP/1.1 client and an
// h2c one, with the status its head went down with and the reset Envoy's
// router logs then (Filter::onUpstreamReset: its details
// upstream_reset_after_response_started{reason}, its flag
// streamResetReasonToResponseFlag's; route.DetailsCut*): an HTTP/1.1
// upstream that closes its connection in a body of known length or in a
// chunked one, or sends a malformed chunk, is the codec's protocol error
// (UPE, {protocol_error}: the parser fails the end of input there as
// HPE_INVALID_EOF_STATE); an HTTP/2 upstream's RST_STREAM a remote reset
// (UR, {remote_reset}), its REFUSED_STREAM a refused one (UR,
// {remote_refused_stream_reset}), as is its GOAWAY leaving the stream
// out, whatever its code (Envoy's codec closes such a stream
// REFUSED_STREAM); an HTTP/2 connection that closes a connection
// termination (UC, {connection_termination}). Every path logged
// via_upstream, and UR for each of them; the goroutine path logged a
// GOAWAY's a connection termination (UC). A body delimited by the
// connection's close ends there (the parser takes the end of input as
// its end): logged via_upstream, unflagged.
func TestCutResponseLogSamePaths(t *testing.T) {
	h1Scripts := map[string]string{
		"/h1/close":      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nla",
		"/h1/chunkcut":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\n",
		"/h1/badchunk":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\nzz\r\nxx\r\n",
		"/h1/untilclose": "HTTP/1.1 200 OK\r\n\r\nla", // delimited by the close: not cut
	}
	h1 := tcpUpstream(t, func(c net.Conn) { // ends once the script is written: the connection then closes
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, h1Scripts[req.URL.Path])
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		w.headers(id, false, 0, ":status", "200")
		_ = w.fr.WriteData(id, false, []byte("la"))
		switch strings.Join(r.values(":path"), "") {
		case "/h2/reset":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/refused":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		case "/h2x/close":
			// The connection ends with the stream open (serveRawH2
			// returns on the read that fails).
			_ = w.bw.Flush()
			_ = w.c.Close()
		case "/h2x/goaway":
			// A GOAWAY leaves the stream out: its last-stream-id is the
			// one before it (0 before the first).
			_ = w.fr.WriteGoAway(id-min(id, 2), http2.ErrCodeNo, nil)
		case "/h2x/goawayerr":
			// With an error code, x/net's error differs for a
			// connection's first stream.
			_ = w.fr.WriteGoAway(id-min(id, 2), http2.ErrCodeInternal, nil)
		}
	})
	const (
		upe     = "200 UPE upstream_reset_after_response_started{protocol_error}"
		ur      = "200 UR upstream_reset_after_response_started{remote_reset}"
		refused = "200 UR upstream_reset_after_response_started{remote_refused_stream_reset}"
		uc      = "200 UC upstream_reset_after_response_started{connection_termination}"
		whole   = "200 - via_upstream"
	)
	requests := []logCase{
		{false, "/h1/close", upe},
		{false, "/h1/chunkcut", upe},
		{false, "/h1/badchunk", upe},
		{false, "/h1/untilclose", whole},
		{false, "/h2/reset", ur},
		{false, "/h2/refused", refused},
		{false, "/h2x/close", uc},
		{false, "/h2x/goaway", refused},
		{false, "/h2x/goawayerr", refused},
		{true, "/h1/close", upe},
		{true, "/h1/chunkcut", upe},
		{true, "/h1/badchunk", upe},
		{true, "/h1/untilclose", whole},
		{true, "/h2/reset", ur},
		{true, "/h2/refused", refused},
		{true, "/h2x/close", uc},
		{true, "/h2x/goaway", refused},
		{true, "/h2x/goawayerr", refused},
	}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := pushCutLog(t, h, nil, []*routev3.Route{routeTo("/h1/", "h1"), routeTo("/h2/", "h2"), routeTo("/h2x/", "h2x")},
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2),
			edsCluster("h2x", h2Upstream), cla("h2x", h2))
		// What the client gets is the head, what came of the body (a
		// malformed chunk may cut the bytes that came with it), then the
		// connection closed or the stream reset.
		checkLogLines(t, p.name, h.addr("egress"), logFile, "200 ", requests)
	}
}

// TestUpgradeLogSamePaths: a relayed 101 is logged with %RESPONSE_CODE%
// 101 on every path, as Envoy's connection manager takes the code from
// the head it encodes, and counted in downstream_rq_1xx (chargeStats).
// The goroutine path, which writes the head past its response writer
// (hijacked), logged 0 and counted no class. Envoy's router sets
// via_upstream for a 101 too (Filter::onUpstreamHeaders), but every
// upgraded stream ends in a reset whose details replace it: here the
// upstream closes the connection after the head
// (TestUpgradeEndSamePaths).
func TestUpgradeLogSamePaths(t *testing.T) {
	up := tcpUpstream(t, func(c net.Conn) { // ends once the 101 is written: the connection then closes
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	})
	ws := routeTo("/ws", "ws")
	ws.GetRoute().Timeout = durationpb.New(0)
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "upgrade.log")
		h.push(httpListener("upgrade", httpManager("upgrade", "rds-ws", withAccessLog(logFile, cutLogFormat()), func(m *hcmv3.HttpConnectionManager) {
			m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
		})),
			routeConfig("rds-ws", vhost("v", []string{"*"}, ws)),
			edsCluster("ws"), cla("ws", up))
		if got := upgradeGet(t, h.addr("upgrade"), "/ws"); got != "101 " {
			t.Errorf("%s: answered %q; want %q", p.name, got, "101 ")
		}
		log := strings.TrimSpace(awaitLog(t, logFile, 1))
		if want := "HTTP/1.1 /ws 101 UC upstream_reset_after_response_started{connection_termination}"; log != want {
			t.Errorf("%s: access log %q; want %q", p.name, log, want)
		}
		// Counted as Envoy's chargeStats counts the head it encodes.
		if n := h.stat("http.upgrade.downstream_rq_1xx"); n != 1 {
			t.Errorf("%s: downstream_rq_1xx %d; want 1", p.name, n)
		}
	}
}

// clientProto is %PROTOCOL% of a test's client.
func clientProto(h2 bool) string {
	if h2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// cutLogFormat is the access log format of these tests: each line the
// request's protocol and path, then what was logged of its end.
func cutLogFormat() *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%PROTOCOL% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
}

// logCase is a GET of path from an HTTP/1.1 client or an h2c one (h2),
// and the end of the access log line it must have (cutLogFormat's, past
// the path).
type logCase struct {
	h2        bool
	path, log string
}

// checkLogLines sends each request to addr on a connection of its own,
// each answer beginning with answer, then fails for each request whose
// line logFile lacks.
func checkLogLines(t *testing.T, name, addr, logFile, answer string, requests []logCase) {
	t.Helper()
	for _, r := range requests {
		var got string
		if r.h2 {
			got = h2Exchange(dialH2(t, addr), 1, [][2]string{
				{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", r.path}})
		} else {
			_, got = interimGet(t, addr, r.path, false)
		}
		if !strings.HasPrefix(got, answer) {
			t.Errorf("%s, %s %s: answered %q; want %q first", name, clientProto(r.h2), r.path, got, answer)
		}
	}
	log := awaitLog(t, logFile, len(requests))
	lines := strings.Split(log, "\n")
	for _, r := range requests {
		if want := clientProto(r.h2) + " " + r.path + " " + r.log; !slices.Contains(lines, want) {
			t.Errorf("%s: access log\n%s\nwant the line %q", name, log, want)
		}
	}
}

// TestTimeoutAfterHeadLogSamePaths: a route's idle timeout and its
// max_stream_duration that cut a response after its head went down are
// logged with the head's status and their details, stream_idle_timeout
// and max_duration_timeout, the idle timeout with its flag, SI, the max
// stream duration with none, on every path (such a route is served on
// the goroutine path), to an HTTP/1.1 client and an h2c one, as Envoy's
// connection manager sets those details when its stream idle timer or
// its max duration timer ends a stream whose response began
// (ActiveStream::onIdleTimeout, onStreamMaxDurationReached:
// sendLocalReply, which can only reset the stream by then, sets them;
// onIdleTimeout sets SI first, onStreamMaxDurationReached no flag). Both
// were logged via_upstream, then the max stream duration with DT.
func TestTimeoutAfterHeadLogSamePaths(t *testing.T) {
	const cutAfter, late = 200 * time.Millisecond, 2 * time.Second
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy gives up the connection, or late
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\n")
		_ = c.SetReadDeadline(time.Now().Add(late))
		_, _ = io.Copy(io.Discard, c)
	})
	idle := routeTo("/idle", "up")
	idle.GetRoute().Timeout = durationpb.New(0)
	idle.GetRoute().IdleTimeout = durationpb.New(cutAfter)
	msd := maxDurationRoute("/duration", "up", cutAfter)
	requests := []logCase{
		{false, "/idle", "200 SI stream_idle_timeout"},
		{false, "/duration", "200 - max_duration_timeout"},
		{true, "/idle", "200 SI stream_idle_timeout"},
		{true, "/duration", "200 - max_duration_timeout"},
	}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := pushCutLog(t, h, nil, []*routev3.Route{idle, msd}, edsCluster("up"), cla("up", up))
		checkLogLines(t, p.name, h.addr("egress"), logFile, "200 la", requests)
	}
}

// TestMaxDurationBeforeHeadLogSamePaths: a route's max_stream_duration
// that ends a stream before its response head is answered 504 (the GET
// arrived whole: Envoy's maybeRequestTimeoutCode) with Envoy's body and
// logged with the details max_duration_timeout and no
// response flag, on every path (such a route is served on the goroutine
// path), to an HTTP/1.1 client and an h2c one: Envoy's
// ActiveStream::onStreamMaxDurationReached sends its local reply with
// those details and sets no flag (DT is a connection's max duration:
// the TCP proxy's max_downstream_connection_duration). It was logged DT.
func TestMaxDurationBeforeHeadLogSamePaths(t *testing.T) {
	const cutAfter, late = 200 * time.Millisecond, 2 * time.Second
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy gives up the connection, or late
		_ = c.SetReadDeadline(time.Now().Add(late))
		_, _ = io.Copy(io.Discard, c) // never answers
	})
	msd := maxDurationRoute("/duration", "up", cutAfter)
	requests := []logCase{
		{false, "/duration", "504 - max_duration_timeout"},
		{true, "/duration", "504 - max_duration_timeout"},
	}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := pushCutLog(t, h, nil, []*routev3.Route{msd}, edsCluster("up"), cla("up", up))
		checkLogLines(t, p.name, h.addr("egress"), logFile, "504 downstream duration timeout", requests)
	}
}

// TestRefusedBeforeHeadLog: an HTTP/2 upstream's REFUSED_STREAM before
// the response head, not retried (no retry policy), is logged as Envoy's
// router logs that reset (Filter::onUpstreamReset: reason
// remote_refused_stream_reset, flag UR), to an HTTP/1.1 client with the
// 503 that names it, on every path, and to an h2c client, whose stream
// the loops refuse rather than answer (docs/proxy.md), with no status
// (the 503 on goroutines). The loops logged {remote_reset} and answered
// "remote reset" to an HTTP/1.1 client, and logged DC for an h2c
// client's stream; the goroutine path's x/net transport retried the
// refused stream itself until the route timeout (504 UT).
func TestRefusedBeforeHeadLog(t *testing.T) {
	up := rawH2Upstream(t, func(w *rawH2Writer, id uint32, _ *rawH2Request) {
		_ = w.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	})
	const details = " UR upstream_reset_before_response_started{remote_refused_stream_reset}"
	const body = "503 upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, cutLogFormat(),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h2/", "h2"))),
				edsCluster("h2", h2Upstream), cla("h2", up))
			if _, got := interimGet(t, h.addr("egress"), "/h2/refused", false); got != body {
				t.Errorf("HTTP/1.1: answered %q; want %q", got, body)
			}
			_ = h2Exchange(dialH2(t, h.addr("egress")), 1, [][2]string{
				{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/h2/refused"}})
			h2Status := " 0"
			if p.h2Goroutines {
				h2Status = " 503"
			}
			log := awaitLog(t, logFile, 2)
			lines := strings.Split(log, "\n")
			for _, want := range []string{"HTTP/1.1 /h2/refused 503" + details, "HTTP/2 /h2/refused" + h2Status + details} {
				if !slices.Contains(lines, want) {
					t.Errorf("access log\n%s\nwant the line %q", log, want)
				}
			}
		})
	}
}

// TestStreamIdleAfterHeadLogSamePaths: the connection manager's
// stream_idle_timeout that ends an h2c stream whose response head went
// down and whose body the client's window holds back is logged with the
// head's status, SI and stream_idle_timeout, and counted in
// downstream_rq_idle_timeout, on every path, from an HTTP/1.1
// upstream and an HTTP/2 one. Envoy 1.27 to 1.29 flag it so whether the
// head went down or not: ActiveStream::onIdleTimeout sets SI, then its
// sendLocalReply, which can only reset the stream once the head went
// down, sets the details (the allow_response_for_timeout guard, under
// which it set the details alone once the head went down, was true by
// default from Envoy 1.16 and was removed, with its false branch, in
// 1.22). Every path logged DC and via_upstream (the goroutine path took
// the reset its write deadline made for the client's end), the loops
// with status 0 from an HTTP/2 upstream.
func TestStreamIdleAfterHeadLogSamePaths(t *testing.T) {
	h1 := httptest.NewServer(bulkHandler(64))
	t.Cleanup(h1.Close)
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, _ *rawH2Request) {
		w.headers(id, false, 0, ":status", "200")
		_ = w.fr.WriteData(id, false, make([]byte, 16<<10)) // and no end
	})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { p.logged(c) })
			// A route timeout the loops take (loopRoute), past the
			// stream idle timeout.
			logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(300 * time.Millisecond)},
				[]*routev3.Route{timedRoute("/h1", "h1", 10*time.Second), timedRoute("/h2", "h2", 10*time.Second)},
				edsCluster("h1"), cla("h1", h1.Listener.Addr().String()), edsCluster("h2", h2Upstream), cla("h2", h2))
			for _, path := range []string{"/h1", "/h2"} {
				if !heldH2Reset(t, h.addr("egress"), path) {
					t.Errorf("%s: the connection ended without a RST_STREAM of the held stream", path)
				}
			}
			log := awaitLog(t, logFile, 2)
			for _, want := range []string{"HTTP/2 /h1 200 SI stream_idle_timeout", "HTTP/2 /h2 200 SI stream_idle_timeout"} {
				if !slices.Contains(strings.Split(log, "\n"), want) {
					t.Errorf("access log\n%s\nwant the line %q", log, want)
				}
			}
			waitStats(t, h, map[string]int64{"http.egress.downstream_rq_idle_timeout": 2, "http.egress.downstream_rq_active": 0})
		})
	}
}

// TestMaxDurationHeldByClientLogSamePaths: a route's max_stream_duration
// that ends a stream whose head went down and whose body the client holds
// back (an HTTP/2 window of 0, an HTTP/1.1 client that does not read)
// resets the stream (closes the HTTP/1.1 connection) and is logged with
// the head's status, no response flag and the details
// max_duration_timeout, on every path (such a route is served on the
// goroutine path), as Envoy's ActiveStream::onStreamMaxDurationReached
// does whichever side held the stream up (its sendLocalReply can only
// reset the stream then, and sets the details; the local reset adds no
// flag). It was logged DC and via_upstream: the write its abortWrites
// cut was taken for the client's end.
func TestMaxDurationHeldByClientLogSamePaths(t *testing.T) {
	up := httptest.NewServer(bulkHandler(1024))
	t.Cleanup(up.Close)
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := pushCutLog(t, h, nil, []*routev3.Route{maxDurationRoute("/duration", "up", 300*time.Millisecond)},
				edsCluster("up"), cla("up", up.Listener.Addr().String()))

			heldH1Get(t, h.addr("egress"), "/duration")
			waitUntil(t, 5*time.Second, "the request reached the proxy", func() bool { return h.stat("http.egress.downstream_rq_total") >= 1 })
			waitUntil(t, 5*time.Second, "the held HTTP/1.1 connection closed", func() bool { return h.stat("http.egress.downstream_cx_active") == 0 })

			if !heldH2Reset(t, h.addr("egress"), "/duration") {
				t.Errorf("the connection ended without a RST_STREAM of the held stream")
			}
			log := awaitLog(t, logFile, 2)
			for _, want := range []string{"HTTP/1.1 /duration 200 - max_duration_timeout", "HTTP/2 /duration 200 - max_duration_timeout"} {
				if !slices.Contains(strings.Split(log, "\n"), want) {
					t.Errorf("access log\n%s\nwant the line %q", log, want)
				}
			}
		})
	}
}

// TestStreamIdleHeldByH1ClientLogSamePaths: an HTTP/1.1 client that
// reads the response's head then stops reading while the upstream keeps
// sending (a route timeout of 10 s, stream_idle_timeout 300 ms) has
// its connection closed at the stream idle timeout, the stream logged
// with the head's status, SI and stream_idle_timeout and counted in
// downstream_rq_idle_timeout, on every path, from an HTTP/1.1 upstream
// and an HTTP/2 one, as Envoy's ActiveStream::onIdleTimeout resets a
// stream whose response began whichever side held it up (the client's
// full buffer pauses the upstream: nothing moves). The goroutine path
// logged it - and via_upstream (the failed write leaves an HTTP/1.1
// request's context on); the loops bounded only an HTTP/2 client's
// writes, and held this one to the route timeout (200 UT
// upstream_response_timeout).
func TestStreamIdleHeldByH1ClientLogSamePaths(t *testing.T) {
	heldByH1Client(t, 10*time.Second, 300*time.Millisecond, "200 SI stream_idle_timeout",
		map[string]int64{"http.egress.downstream_rq_idle_timeout": 2, "cluster.h1.upstream_rq_timeout": 0, "cluster.h2.upstream_rq_timeout": 0, "http.egress.downstream_rq_active": 0})
}

// TestRouteTimeoutHeldByH1ClientLogSamePaths: the same client held up
// past a route timeout of 1 s (no stream idle timeout) is logged with
// the head's status, UT and upstream_response_timeout and counted in
// upstream_rq_timeout, on every path, as Envoy's
// Filter::onResponseTimeout resets a stream whose response began (and
// as every path logs and counts it when the route timeout cuts a read
// of the body). The goroutine path logged it - and via_upstream,
// uncounted: the write its abortWrites failed was recorded as no cut.
func TestRouteTimeoutHeldByH1ClientLogSamePaths(t *testing.T) {
	heldByH1Client(t, time.Second, 0, "200 UT upstream_response_timeout",
		map[string]int64{"http.egress.downstream_rq_idle_timeout": 0, "cluster.h1.upstream_rq_timeout": 1, "cluster.h2.upstream_rq_timeout": 1, "http.egress.downstream_rq_active": 0})
}

// heldByH1Client runs, on every path, HTTP/1.1 GETs of a long body from
// an HTTP/1.1 upstream (/h1) and an HTTP/2 one (/h2), each on a
// connection of its own whose client reads the head and nothing more,
// on routes with the timeout rt under a connection manager with the
// stream_idle_timeout idle (0: none). It wants each connection closed
// within 5 s, the access log line "HTTP/1.1 /hN "+want of each, and the
// stats wantStats.
func heldByH1Client(t *testing.T, rt, idle time.Duration, want string, wantStats map[string]int64) {
	clusters := twoUpstreams(t, bulkHandler(1024))
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { p.logged(c) })
			// Route timeouts the loops take (loopRoute).
			logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(idle)},
				[]*routev3.Route{timedRoute("/h1", "h1", rt), timedRoute("/h2", "h2", rt)}, clusters...)
			for _, path := range []string{"/h1", "/h2"} {
				c := heldH1Get(t, h.addr("egress"), path)
				res, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != 200 {
					t.Fatalf("%s: status %d, want 200", path, res.StatusCode)
				}
				// Nothing more is read. The connection closes at the
				// first timeout (and the goroutine path's 1 s of grace
				// for the writes it cuts), well before the other one.
				waitUntil(t, 5*time.Second, path+": the held HTTP/1.1 connection closed", func() bool { return h.stat("http.egress.downstream_cx_active") == 0 })
			}
			if l := h.listener("egress"); !p.goroutines && (!l.OnLoops() || l.HandedOff() != 0 && !p.h2Goroutines) {
				t.Fatalf("on the loops %v, %d connections handed off: want the loops to serve them", l.OnLoops(), l.HandedOff())
			}
			log := awaitLog(t, logFile, 2)
			for _, path := range []string{"/h1", "/h2"} {
				if want := "HTTP/1.1 " + path + " " + want; !slices.Contains(strings.Split(log, "\n"), want) {
					t.Errorf("access log\n%s\nwant the line %q", log, want)
				}
			}
			waitStats(t, h, wantStats)
		})
	}
}
