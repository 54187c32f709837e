package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestViaUpstreamDetailsSamePaths: a response whose final head came from
// the upstream is logged with %RESPONSE_CODE_DETAILS% via_upstream on
// every path, as Envoy's router sets it when it takes that head
// (Filter::onUpstreamHeaders; route.DetailsViaUpstream): a 200 and a 503
// the upstream sent, a final head after a 100, a gRPC answer with its
// trailers; from an HTTP/1.1 upstream and an HTTP/2 one, to an HTTP/1.1
// client and an h2c one. The route timeout cutting the response after its
// head replaces it (upstream_response_timeout, UT), as an upstream's
// reset does (route.DetailsCut*, TestCutResponseLogSamePaths), and as the
// reset that ends every upgraded stream does for an upgrade's 101 (here
// the upstream's close: TestUpgradeEndSamePaths). Every path logged "-" for a relayed
// response; the goroutine path "-" for one the route timeout cut too.
func TestViaUpstreamDetailsSamePaths(t *testing.T) {
	const routeTimeout, late = 150 * time.Millisecond, 600 * time.Millisecond
	h1Scripts := map[string]string{
		"/h1/ok":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		"/h1/503":     "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
		"/h1/interim": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		"/h1/cut":     "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nla", // then closed
		"/h1t/slow":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nla\r\n",
		"/ws":         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", // then closed
	}
	h1 := tcpUpstream(t, func(c net.Conn) { // ends once the script is written, or the proxy closed the connection
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, h1Scripts[req.URL.Path])
		if req.URL.Path == "/h1t/slow" {
			// The rest would come after the route timeout: wait for the
			// proxy to give up the connection.
			_ = c.SetReadDeadline(time.Now().Add(late))
			_, _ = io.Copy(io.Discard, c)
		}
	})
	h2 := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		switch strings.Join(r.values(":path"), "") {
		case "/h2/ok":
			w.headers(id, false, 0, ":status", "200")
			w.data(id, []byte("ok"))
		case "/h2/503":
			w.headers(id, false, 0, ":status", "503")
			w.data(id, []byte("down"))
		case "/h2/interim":
			w.headers(id, false, 0, ":status", "100")
			w.headers(id, false, 0, ":status", "200")
			w.data(id, []byte("ok"))
		case "/h2/cut":
			w.headers(id, false, 0, ":status", "200")
			_ = w.fr.WriteData(id, false, []byte("la"))
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
		case "/h2/grpc":
			w.headers(id, false, 0, ":status", "200", "content-type", "application/grpc")
			_ = w.fr.WriteData(id, false, []byte{0, 0, 0, 0, 0})
			w.headers(id, true, 0, "grpc-status", "0")
		case "/h2t/slow":
			w.headers(id, false, 0, ":status", "200")
			// The rest never comes: the route timeout cuts it. (No sleep
			// here: the connection's other streams would wait for it.)
			_ = w.fr.WriteData(id, false, []byte("la"))
		}
	})
	timed := func(prefix, cluster string) *routev3.Route {
		r := routeTo(prefix, cluster)
		r.GetRoute().Timeout = durationpb.New(routeTimeout)
		return r
	}
	ws := routeTo("/ws", "h1")
	ws.GetRoute().Timeout = durationpb.New(0)
	// log is the line's end the request must have.
	const (
		via   = "- via_upstream"
		cutT  = "UT upstream_response_timeout"
		cutH1 = "200 UPE upstream_reset_after_response_started{protocol_error}"
		cutH2 = "200 UR upstream_reset_after_response_started{remote_reset}"
	)
	requests := []struct {
		h2              bool
		path, want, log string
	}{
		{false, "/h1/ok", "200 ok", "200 " + via},
		{false, "/h1/503", "503 down", "503 " + via},
		{false, "/h1/interim", "200 ok", "200 " + via},
		{false, "/h1/cut", "200 la", cutH1},
		{false, "/h1t/slow", "200 la", "200 " + cutT},
		{false, "/ws", "101 ", "101 UC upstream_reset_after_response_started{connection_termination}"},
		{false, "/h2/ok", "200 ok", "200 " + via},
		{false, "/h2/503", "503 down", "503 " + via},
		{false, "/h2/interim", "200 ok", "200 " + via},
		{false, "/h2/cut", "200 la", cutH2},
		{false, "/h2t/slow", "200 la", "200 " + cutT},
		{true, "/h1/ok", "200 ok", "200 " + via},
		{true, "/h1/503", "503 down", "503 " + via},
		{true, "/h1/interim", "200 ok", "200 " + via},
		{true, "/h1/cut", "200 la reset", cutH1},
		{true, "/h1t/slow", "200 la reset", "200 " + cutT},
		{true, "/h2/ok", "200 ok", "200 " + via},
		{true, "/h2/503", "503 down", "503 " + via},
		{true, "/h2/interim", "200 ok", "200 " + via},
		{true, "/h2/cut", "200 la reset", cutH2},
		{true, "/h2/grpc", "200 \x00\x00\x00\x00\x00", "200 " + via},
		{true, "/h2t/slow", "200 la reset", "200 " + cutT},
	}
	proto := func(h2 bool) string {
		if h2 {
			return "HTTP/2"
		}
		return "HTTP/1.1"
	}
	var names []string
	for _, r := range requests {
		names = append(names, proto(r.h2)+" "+r.path)
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%PROTOCOL% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.logged)
		logFile := filepath.Join(t.TempDir(), "access.log")
		wsLog := filepath.Join(t.TempDir(), "upgrade.log")
		// The upgrade on a listener of its own: the loops hand off a
		// connection manager with upgrade_configs whole.
		h.push(httpListener("egress", httpManager("egress", "rds", withAccessLog(logFile, format))),
			httpListener("upgrade", httpManager("upgrade", "rds-ws", withAccessLog(wsLog, format), func(m *hcmv3.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			})),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/h1/", "h1"), routeTo("/h2/", "h2"),
				timed("/h1t/", "h1"), timed("/h2t/", "h2"))),
			routeConfig("rds-ws", vhost("v", []string{"*"}, ws)),
			edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		for i, r := range requests {
			var got string
			switch {
			case r.h2:
				fields := [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", r.path}}
				if r.path == "/h2/grpc" {
					fields = [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", r.path},
						{"content-type", "application/grpc"}, {"te", "trailers"}}
				}
				got = h2Exchange(dialH2(t, h.addr("egress")), 1, fields)
			case r.path == "/ws":
				got = upgradeGet(t, h.addr("upgrade"), r.path)
			default:
				_, got = interimGet(t, h.addr("egress"), r.path, false)
			}
			res.answers[names[i]] = got
			if got != r.want {
				t.Errorf("%s, %s: answered %q; want %q", p.name, names[i], got, r.want)
			}
		}
		res.log = sortLines(awaitLog(t, logFile, len(requests)-1) + awaitLog(t, wsLog, 1))
		lines := strings.Split(res.log, "\n")
		for i, r := range requests {
			if !slices.ContainsFunc(lines, func(l string) bool {
				return strings.HasPrefix(l, names[i]+" ") && strings.HasSuffix(l, " "+r.log)
			}) {
				t.Errorf("%s: access log\n%s\nwant a line %q ... %q", p.name, res.log, names[i], r.log)
			}
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// upgradeGet asks for a websocket upgrade of path on a connection of its
// own and returns the answer as "status body", the body what came until
// the connection closed.
func upgradeGet(t *testing.T, addr, path string) string {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(br)
	return strings.TrimSpace(resp.Status[:3]) + " " + string(b)
}

// h2Exchange sends a request of fields alone (END_STREAM) on stream id
// of cl and tells how the proxy answered it, as h2StreamEnd.
func h2Exchange(cl *h2Client, id uint32, fields [][2]string) string {
	defer cl.c.Close()
	cl.hbuf.Reset()
	for _, f := range fields {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	_ = cl.bw.Flush()
	return h2StreamEnd(cl, id)
}
