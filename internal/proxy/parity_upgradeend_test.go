package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestUpgradeEndSamePaths: an upgraded (101) connection is torn down as
// a whole by the first side that ends it, and logged and counted as
// Envoy (1.27 to 1.29, default runtime) ends the stream then, on every
// path (the loops hand upgrades to the goroutine path).
//
// The upstream's FIN or RST: its connection closes (Envoy enables no
// half-close on an HTTP connection), and the codec client, with the
// upgraded codec passing bytes through unparsed (maybeDirectDispatch),
// resets the stream ConnectionTermination (CodecClient::onEvent); the
// router logs UC upstream_reset_after_response_started{connection_termination}
// and gives outlier detection a local-origin failure
// (Filter::onUpstreamReset), then resets the downstream stream, whose
// connection closes while the client still holds it
// (ActiveStream::onResetStream counts downstream_rq_rx_reset).
//
// The client's FIN or RST: the connection manager's RemoteClose resets
// the stream (resetAllStreams, downstream_rq_rx_reset) and logs DC
// downstream_remote_disconnect (completeRequest, remote_close_); the
// router resets its upstream request with its callbacks removed, so no
// outlier detection, and the upstream connection closes.
//
// Over HTTP/1.1 Envoy's pool counts neither upstream_rq_rx_reset nor
// upstream_rq_tx_reset (only the multiplexed pools do). The code is the
// 101 throughout. weft logged the upstream's FIN unflagged, via_upstream,
// half-closing the client's side and waiting for it, and a client's FIN
// as the upstream's connection termination (UC); it counted no reset.
func TestUpgradeEndSamePaths(t *testing.T) {
	const hello = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	up := tcpUpstream(t, func(c net.Conn) { // ends as its case ends the connection, or when the proxy closes it
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, hello+"la")
		switch req.Host {
		case "fin":
		case "rst":
			_ = c.(*net.TCPConn).SetLinger(0)
		default: // the client ends it; the upstream writes late, then holds on
			_, _ = io.Copy(io.Discard, c)
			_, _ = io.WriteString(c, "late")
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(make([]byte, 1))
		}
	})
	const (
		byUpstream = "101 UC upstream_reset_after_response_started{connection_termination}"
		byClient   = "101 DC downstream_remote_disconnect"
	)
	cases := []struct{ name, log string }{{"fin", byUpstream}, {"rst", byUpstream}, {"cfin", byClient}, {"crst", byClient}}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			var vhs []*routev3.VirtualHost
			rs := []types.Resource{httpListener("upgrade", httpManager("upgrade", "rds", withAccessLog(logFile, cutLogFormat()),
				func(m *hcmv3.HttpConnectionManager) {
					m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
				}))}
			for _, c := range cases {
				rt := routeTo("/ws", c.name)
				rt.GetRoute().Timeout = durationpb.New(0)
				vhs = append(vhs, vhost(c.name, []string{c.name}, rt))
				rs = append(rs, edsCluster(c.name, ejectAfter(1)), cla(c.name, up))
			}
			h.push(append(rs, routeConfig("rds", vhs...))...)
			for i, c := range cases {
				conn, br := openUpgraded(t, h.addr("upgrade"), c.name)
				if _, err := io.ReadFull(br, make([]byte, 2)); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				switch c.name {
				case "fin", "rst":
					// The proxy ends the client's connection on its own.
					if b, err := io.ReadAll(br); len(b) != 0 || err != nil && !isReset(err) {
						t.Errorf("%s: after the upstream's end the client read %q, %v; want the connection closed", c.name, b, err)
					}
				case "cfin":
					// A FIN: the proxy closes the connection, not only
					// its upstream's write side (nothing late comes).
					_ = conn.(*net.TCPConn).CloseWrite()
					if b, err := io.ReadAll(br); len(b) != 0 || err != nil && !isReset(err) {
						t.Errorf("%s: after the client's FIN it read %q, %v; want the connection closed", c.name, b, err)
					}
				case "crst":
					_ = conn.(*net.TCPConn).SetLinger(0)
					_ = conn.Close()
				}
				// Logged while the client may still hold its connection.
				log := awaitLog(t, logFile, i+1)
				if n := strings.Count(log, "HTTP/1.1 /ws "+c.log); n != wantLines(cases[:i+1], c.log) {
					t.Errorf("%s: access log\n%s\nwant the line %q", c.name, log, "HTTP/1.1 /ws "+c.log)
				}
			}
			want := map[string]int64{"http.upgrade.downstream_rq_rx_reset": 4, "http.upgrade.downstream_rq_1xx": 4,
				"http.upgrade.downstream_rq_active": 0}
			for _, c := range cases {
				want["cluster."+c.name+".upstream_rq_rx_reset"] = 0
				want["cluster."+c.name+".upstream_rq_tx_reset"] = 0
				ejected := int64(0)
				if c.log == byUpstream {
					ejected = 1
				}
				want["cluster."+c.name+".outlier_detection.ejections_enforced_consecutive_5xx"] = ejected
			}
			waitStats(t, h, want)
			time.Sleep(100 * time.Millisecond) // an ejection that came late came after all
			for _, c := range cases {
				if n := h.stat("cluster." + c.name + ".outlier_detection.ejections_enforced_consecutive_5xx"); c.log == byClient && n != 0 {
					t.Errorf("%s: ejections_enforced_consecutive_5xx %d after the client's end; want 0", c.name, n)
				}
			}
		})
	}
}

// wantLines counts the cases that log log.
func wantLines(cases []struct{ name, log string }, log string) int {
	n := 0
	for _, c := range cases {
		if c.log == log {
			n++
		}
	}
	return n
}

// isReset reports whether err is a connection reset by the peer.
func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestUpgradeClientDataSamePaths: the client's bytes on an upgraded
// connection keep its stream from the stream idle timeout, and both
// ways' bytes are the stream's %BYTES_RECEIVED% and %BYTES_SENT%, on
// every path (the loops hand upgrades to the goroutine path), as Envoy's
// connection manager takes an upgraded connection's bytes as its
// stream's body: its decodeData resets the idle timer and counts them
// received, its encodeData counts the upstream's sent. Every path timed
// out a connection whose client alone sent (stream_idle_timeout, 5
// minutes by default, after the upstream's last byte) and logged 0 and
// 0.
func TestUpgradeClientDataSamePaths(t *testing.T) {
	const (
		hello = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		idle  = 300 * time.Millisecond
	)
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, hello+"la")
		_, _ = io.Copy(io.Discard, br)
	})
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT%\n"}}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			rt := routeTo("/ws", "ws")
			rt.GetRoute().Timeout = durationpb.New(0)
			h.push(httpListener("upgrade", httpManager("upgrade", "rds", withAccessLog(logFile, format),
				func(m *hcmv3.HttpConnectionManager) {
					m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
					m.StreamIdleTimeout = durationpb.New(idle)
				})),
				routeConfig("rds", vhost("v", []string{"*"}, rt)), edsCluster("ws"), cla("ws", up))
			conn, br := openUpgraded(t, h.addr("upgrade"), "x")
			if _, err := io.ReadFull(br, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			ended := make(chan struct{})
			go func() { _, _ = io.ReadAll(br); close(ended) }() // ends when the connection closes
			// The client alone sends, for four idle timeouts.
			sent := 0
			for start := time.Now(); time.Since(start) < 4*idle; sent += 4 {
				if _, err := io.WriteString(conn, "ping"); err != nil {
					t.Fatal(err)
				}
				select {
				case <-ended:
					t.Fatalf("the proxy closed the connection %v after the 101 while the client sent", time.Since(start))
				case <-time.After(idle / 6):
				}
			}
			_ = conn.(*net.TCPConn).CloseWrite()
			<-ended
			want := fmt.Sprintf("101 DC downstream_remote_disconnect %d 2", sent)
			if log := strings.TrimSpace(awaitLog(t, logFile, 1)); log != want {
				t.Errorf("access log %q; want %q", log, want)
			}
			waitStats(t, h, map[string]int64{"http.upgrade.downstream_rq_idle_timeout": 0, "http.upgrade.downstream_rq_active": 0})
		})
	}
}

// TestUpgradeUpstreamLastBytesSamePaths: an upgraded connection whose
// upstream writes its last bytes and ends it while the client is still
// sending (a WebSocket's closing frames) gets the client every byte, then
// its end, on every path: the proxy gives the client a FIN after them and
// reads what the client still sends for a moment (lingerUpgraded). Closed
// at once with the client's bytes unread, the connection was reset and
// the client read 64-102 KB of 1 MB, then an end.
func TestUpgradeUpstreamLastBytesSamePaths(t *testing.T) {
	const (
		hello = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		last  = 1 << 20
	)
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection, after its FIN
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, hello)
		go func() { _, _ = io.Copy(io.Discard, br) }() // ends when the proxy closes the connection
		_, _ = io.WriteString(c, strings.Repeat("u", last))
		_ = c.(*net.TCPConn).CloseWrite()
		time.Sleep(2 * time.Second)
	})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			rt := routeTo("/ws", "ws")
			rt.GetRoute().Timeout = durationpb.New(0)
			h.push(httpListener("upgrade", httpManager("upgrade", "rds", func(m *hcmv3.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			})),
				routeConfig("rds", vhost("v", []string{"*"}, rt)), edsCluster("ws"), cla("ws", up))
			conn, br := openUpgraded(t, h.addr("upgrade"), "x")
			stop := make(chan struct{})
			defer close(stop)
			go func() { // ends at stop or when a write fails
				chunk := strings.Repeat("c", 4096)
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					if _, err := io.WriteString(conn, chunk); err != nil {
						return
					}
				}
			}()
			time.Sleep(200 * time.Millisecond) // the upstream's bytes wait in the buffers, its FIN behind them
			b, err := io.ReadAll(br)
			if len(b) != last || err != nil {
				t.Fatalf("the client read %d of the upstream's last %d bytes, then %v; want them all, then the end", len(b), last, err)
			}
		})
	}
}

// openUpgraded dials addr and upgrades the connection (GET /ws, Host
// host, to websocket), failing the test unless the answer is 101: the
// connection and its reader, past the 101's head.
func openUpgraded(t *testing.T, addr, host string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn := dialRaw(t, addr)
	_, _ = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%s: %v %v", host, resp, err)
	}
	return conn, br
}
