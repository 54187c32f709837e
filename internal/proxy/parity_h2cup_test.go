package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// curlH2C is the head curl --http2 sends for http://host/echo (curl 7.88,
// captured): an h2c upgrade request.
const curlH2C = "GET /echo HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n" +
	"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"

// echoUpgradeUpstream answers every request with what the proxy sent it
// of an upgrade: its version and its Upgrade, Http2-Settings, Connection,
// X-Hop-* and X-Keep headers, sorted, with their values, and the size of
// its body.
func echoUpgradeUpstream(t *testing.T) string {
	t.Helper()
	return h1Upstream(t, func(c net.Conn, req *http.Request, reqBody []byte) bool {
		names := []string{req.Proto}
		for k, vv := range req.Header {
			switch {
			case k == "Upgrade", k == "Http2-Settings", k == "Connection", strings.HasPrefix(k, "X-Hop"), k == "X-Keep":
				names = append(names, k+"="+strings.Join(vv, "|"))
			}
		}
		slices.Sort(names[1:])
		body := strings.Join(names, " ") + fmt.Sprintf(" body=%d", len(reqBody))
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return err == nil
	})
}

// TestH2CUpgradeSamePaths: an HTTP/1.1 request asking for an h2c upgrade
// (curl --http2's, byte for byte) is served as an ordinary HTTP/1.1
// request on every path, as Envoy's HTTP/1 codec serves it (it removes
// the h2c headers once the head is read, ConnectionImpl::
// onHeadersCompleteImpl): the upstream's 200 as HTTP/1.1, no 101; the
// upstream gets neither Upgrade nor HTTP2-Settings, nor the Connection
// tokens upgrade and http2-settings; the connection is kept (keep-alive)
// or closed (close) as the tokens left say; it is counted and logged as
// any request (%REQ(UPGRADE)% and %REQ(HTTP2-SETTINGS)% "-"). Every
// path answered it 403 upgrade_failed, as an upgrade the route does not
// allow.
//
// Envoy's conditions hold: the Upgrade header's value, its lines joined,
// is h2c, case aside, and Connection holds the upgrade token (isUpgrade);
// "h2c, websocket" or two h2c lines are an upgrade like any other (403
// where websocket upgrades are not enabled), and without the upgrade
// token nothing is stripped (Upgrade and Connection are hop-by-hop as
// ever; HTTP2-Settings is forwarded). The Connection header is sanitized
// once the h2c tokens are gone, as Envoy's codec sanitizes it after the
// strip: nine other tokens pass however many h2c ones come with them,
// ten are refused (400 http1.connection_header_rejected), as is
// X-Forwarded-For named (an upgrade's Connection is not sanitized). A
// websocket upgrade where the connection manager does not enable it is
// still refused 403.
//
// Routes matching on Upgrade or HTTP2-Settings do not match an h2c
// upgrade: Envoy routes the request its codec stripped.
//
// The loops serve the h2c requests themselves (listener "egress": no
// connection handed off); the upgrades they do not serve go to the
// goroutine path (listener "up").
func TestH2CUpgradeSamePaths(t *testing.T) {
	echo := echoUpgradeUpstream(t)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%REQ(:METHOD)% " +
		"%REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% " +
		"%UPSTREAM_CLUSTER% %REQ(UPGRADE)% %REQ(HTTP2-SETTINGS)% %REQ(X-KEEP)% |%REQ(CONNECTION)%\n"}}
	type exchange struct {
		name, listener string
		send           []string
		// status and body are each answer as Envoy gives it; closes: the
		// connection closes after the last (the others send a request
		// after the first on the same connection where it matters).
		status []int
		body   []string
		closes bool
		// log are the access log lines as Envoy writes them:
		// %REQ(CONNECTION)% is "-" but for an upgrade, as Envoy's
		// connection manager removes it from every other request before
		// it logs it (weft logged it as received, on every path alike).
		log []string
	}
	const (
		get      = "GET /echo HTTP/1.1\r\nHost: x\r\n"
		h2cHead  = "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
		hops     = "X-Hop-0: a\r\nX-Hop-1: b\r\nX-Keep: k\r\n"
		stripped = "HTTP/1.1 body=0" // the upstream got none of the h2c headers
	)
	okLog := func(received, sent int, keep string) string {
		return fmt.Sprintf("GET /echo HTTP/1.1 200 - via_upstream %d %d echo - - %s |-", received, sent, keep)
	}
	served := func(name string, send []string, closes bool, body ...string) exchange {
		x := exchange{name: name, listener: "egress", send: send, body: body, closes: closes}
		for i, b := range body {
			x.status = append(x.status, 200)
			keep := "-"
			if strings.Contains(send[i], "X-Keep") {
				keep = "k"
			}
			received := 0
			if strings.HasPrefix(send[i], "POST") {
				received = 2
			}
			l := okLog(received, len(b), keep)
			if received > 0 {
				l = "POST" + strings.TrimPrefix(l, "GET")
			}
			x.log = append(x.log, l)
		}
		return x
	}
	// refusedUpgrade is an upgrade the connection manager does not
	// enable, whose Upgrade and HTTP2-Settings headers are logged as
	// upgrade and settings.
	// upgrade and settings, and its Connection as connection. Envoy
	// closes the connection after the 403 (saw_connection_close_).
	refusedUpgrade := func(name, head, upgrade, settings, connection string) exchange {
		return exchange{name: name, listener: "up", send: []string{head}, status: []int{403}, body: []string{""}, closes: true,
			log: []string{fmt.Sprintf("GET /echo HTTP/1.1 403 - upgrade_failed 0 0 - %s %s - |%s", upgrade, settings, connection)}}
	}
	withListener := func(l string, x exchange) exchange {
		x.listener = l
		return x
	}
	const noToken = "HTTP/1.1 Http2-Settings=AAMAAABkAAQCAAAAAAIAAAAA body=0"
	tokens := func(n int) string {
		var ts []string
		for i := range n {
			ts = append(ts, fmt.Sprintf("X-Hop-%d", i))
		}
		return strings.Join(ts, ", ")
	}
	exchanges := []exchange{
		served("curl --http2", []string{curlH2C, curlH2C}, false, stripped, stripped),
		served("keep-alive kept", []string{get + "Connection: keep-alive, Upgrade, HTTP2-Settings\r\n" + h2cHead + "\r\n", get + "\r\n"},
			false, stripped, stripped),
		served("close kept", []string{get + "Connection: Upgrade, HTTP2-Settings, close\r\n" + h2cHead + "\r\n"}, true, stripped),
		served("with a body", []string{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
			h2cHead + "\r\nab"}, false, "HTTP/1.1 body=2"),
		served("a named header dropped", []string{get + "Connection: Upgrade, X-Hop-0, HTTP2-Settings\r\n" + h2cHead + hops + "\r\n"},
			false, "HTTP/1.1 X-Hop-1=b X-Keep=k body=0"),
		served("case and blanks", []string{get + "Connection: upgrade , ,HTTP2-SETTINGS\r\nConnection: \r\nupgrade: H2C\r\n" +
			"http2-settings: AAMAAABk\r\n\r\n"}, false, stripped),
		served("an empty Upgrade line besides", []string{get + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade:\r\n" + h2cHead + "\r\n"},
			false, stripped),
		served("nine tokens left of eleven", []string{get + "Connection: " + tokens(9) + ", Upgrade, HTTP2-Settings\r\n" + h2cHead + hops + "\r\n"},
			false, "HTTP/1.1 X-Keep=k body=0"),
		// The tokens past the tenth are read as any other once the h2c
		// ones are left out: X-Hop-0 is hop-by-hop and close ends the
		// connection.
		served("named and close after ten h2c tokens", []string{get + "Connection: " +
			strings.Repeat("Upgrade, HTTP2-Settings, ", 5) + "X-Hop-0, close\r\n" + h2cHead + hops + "\r\n"},
			true, "HTTP/1.1 X-Hop-1=b X-Keep=k body=0"),
		{name: "ten tokens left", listener: "egress", send: []string{get + "Connection: " + tokens(10) + ", Upgrade\r\n" + h2cHead + hops + "\r\n"},
			status: []int{400}, body: []string{"Bad Request"}, closes: true,
			log: []string{"- - HTTP/1.1 400 DPE http1.connection_header_rejected 0 11 - - - - |-"}},
		{name: "X-Forwarded-For named", listener: "egress", send: []string{get + "Connection: Upgrade, X-Forwarded-For\r\n" + h2cHead + "\r\n"},
			status: []int{400}, body: []string{"Bad Request"}, closes: true,
			log: []string{"- - HTTP/1.1 400 DPE http1.connection_header_rejected 0 11 - - - - |-"}},
		// Not an upgrade: nothing is stripped. Envoy's connection manager
		// then removes Upgrade and Connection before it logs the request
		// (weft logged both as received). It removes them before it
		// routes it too, where weft proxy's goroutine path (which the
		// loops hand such a request to) still routes on them: "kept"
		// where Envoy's route is "echo".
		{name: "without the upgrade token", listener: "up", send: []string{get + "Connection: HTTP2-Settings\r\n" + h2cHead + "\r\n"},
			status: []int{200}, body: []string{noToken},
			log: []string{fmt.Sprintf("GET /echo HTTP/1.1 200 - via_upstream 0 %d kept - AAMAAABkAAQCAAAAAAIAAAAA - |-", len(noToken))}},
		refusedUpgrade("websocket", get+"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "websocket", "-", "Upgrade"),
		refusedUpgrade("h2c, websocket", get+"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
			"h2c, websocket", "AAMAAABk", "Upgrade, HTTP2-Settings"),
		refusedUpgrade("h2c twice", get+"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"+h2cHead+"\r\n", "h2c", "AAMAAABkAAQCAAAAAAIAAAAA",
			"Upgrade, HTTP2-Settings"),
		// An empty Upgrade is an upgrade all the same (Envoy's isUpgrade
		// looks for the header, not its value), to "", which no
		// upgrade_configs entry enables: 403 (every path served it 200).
		refusedUpgrade("an empty Upgrade", get+"Connection: upgrade\r\nUpgrade:\r\n\r\n", "-", "-", "upgrade"),
		withListener("ws", refusedUpgrade("an empty Upgrade where websocket is enabled", get+"Connection: upgrade\r\nUpgrade: \r\n\r\n",
			"-", "-", "upgrade")),
	}
	counters := []string{"downstream_rq_total", "downstream_rq_http1_total", "downstream_rq_completed", "downstream_rq_2xx",
		"downstream_rq_4xx", "downstream_rq_rx_reset", "downstream_cx_protocol_error", "downstream_cx_total",
		"downstream_cx_http1_total", "downstream_cx_http2_total"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		headers := func(m *hcmv3.HttpConnectionManager) { m.RequestHeadersTimeout = durationpb.New(5 * time.Second) }
		// Routes on the h2c headers, which Envoy routes without: the
		// requests that keep them go to the cluster "kept", the same
		// upstream.
		var routes []*routev3.Route
		for _, name := range []string{"upgrade", "http2-settings"} {
			r := routeTo("/", "kept")
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}
			routes = append(routes, r)
		}
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format), headers)),
			httpListener("up", httpManager("up", "rds", withAccessLog(logFile, format), headers)),
			// Websocket upgrades enabled, as App Mesh's configuration has them.
			httpListener("ws", httpManager("ws", "rds", withAccessLog(logFile, format), headers, func(m *hcmv3.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			})),
			routeConfig("rds", vhost("v", []string{"*"}, append(routes, routeTo("/", "echo"))...)),
			edsCluster("echo"), cla("echo", echo), edsCluster("kept"), cla("kept", echo))
		res := pathResult{answers: map[string]string{}}
		lines := 0
		for _, x := range exchanges {
			what := p.name + ", " + x.name
			res.answers[x.name] = h1Exchange(t, h.addr(x.listener), what, x.send, x.closes, func(i int, resp *http.Response, body []byte) {
				lines++
				if resp.Proto != "HTTP/1.1" || resp.StatusCode != x.status[i] || string(body) != x.body[i] {
					t.Errorf("%s, %s: answered %s %d %q; want HTTP/1.1 %d %q", p.name, x.name, resp.Proto, resp.StatusCode, body,
						x.status[i], x.body[i])
				}
			})
		}
		res.log = awaitLog(t, logFile, lines)
		res.stats = h.countsBy("http", []string{"egress", "up"}, counters)
		if p.goroutines {
			loggedExactly(t, res.log, exchanges, func(x exchange) (string, []string) { return x.name, x.log })
		} else if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != 0 {
			t.Errorf("%s: egress on the loops %v, %d connections handed off; want true, 0", p.name, l.OnLoops(), l.HandedOff())
		}
		results[p.name] = res
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestH2CUpgradeCurlSamePaths: curl --http2 to an http:// URL through weft
// proxy gets the upstream's answer over HTTP/1.1 on every path (skipped
// without curl).
func TestH2CUpgradeCurlSamePaths(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	echo := echoUpgradeUpstream(t)
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "echo"))), edsCluster("echo"), cla("echo", echo))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--noproxy", "*", "--http2",
			"--write-out", " %{http_code} %{http_version}", "http://"+h.addr("egress")+"/echo").CombinedOutput()
		cancel()
		if want := "HTTP/1.1 body=0 200 1.1"; err != nil || string(out) != want {
			t.Errorf("%s: curl --http2: %q (%v); want %q", p.name, out, err, want)
		}
		if !p.goroutines {
			if l := h.listener("egress"); l.HandedOff() != 0 {
				t.Errorf("%s: %d connections handed off; want 0", p.name, l.HandedOff())
			}
		}
	}
}
