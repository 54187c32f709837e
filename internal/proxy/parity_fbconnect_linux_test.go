package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestSlowConnectSamePaths: requests the goroutine path sends through its
// fallback Transport (a chunked POST, an h2c POST without a length, a
// POST that asked for 100-continue, an upgrade) to an HTTP/1.1 upstream
// whose connect hangs (its SYNs dropped; connect_timeout 10 s) get the
// route timeout (300 ms) from the request's end, whatever the connect is
// doing: 504 upstream request timeout, UT, upstream_response_timeout,
// counted in upstream_rq_timeout and upstream_rq_504, as Envoy's router
// arms it once the request is complete (Filter::onRequestComplete) while
// its codec reads the body and its pool connects. A client that leaves
// during such a connect (an HTTP/1.1 client's close, its body whole or
// cut mid-way, an h2c client's close or RST_STREAM) ends the request: logged with no status and DC
// (downstream_remote_disconnect, or http2.remote_reset for the reset),
// upstream_rq_active back to 0 before any connect was given up for its
// timeout, and each connect abandoned with its request, as the loops
// close it: its socket closed (no SYN_SENT left toward the upstream) and
// no connect failure or timeout counted, then or later. The cluster
// allows one connection, one request and one pending request: each
// request after the first finds them free (a 504, not a 503 overflow).
// On every path; the upgrade is the goroutine path's on every path (the
// loops hand it off).
//
// Before, the goroutine path answered every route timeout case 503 UF
// (connection_timeout) at the 10 s connect timeout, held an HTTP/1.1
// client's request that left until then (upstream_rq_active 1, logged 503
// UF), and let each connect run to its timeout (counted in
// upstream_cx_connect_fail and upstream_cx_connect_timeout).
func TestSlowConnectSamePaths(t *testing.T) {
	hole := synDropAddr(t)
	_, port, _ := net.SplitHostPort(hole)
	const (
		timeoutAnswer = "504 upstream request timeout"
		timeoutLog    = "504 UT upstream_response_timeout"
	)
	type exchange struct {
		name, proto string
		gone        string // how the client leaves: "" (it waits for the answer), close, rst
		log         string
	}
	exchanges := []exchange{
		{"chunked", "HTTP/1.1", "", timeoutLog},
		{"h2nolength", "HTTP/2", "", timeoutLog},
		{"continue", "HTTP/1.1", "", timeoutLog},
		{"upgrade", "HTTP/1.1", "", timeoutLog},
		{"chunked", "HTTP/1.1", "close", "0 DC downstream_remote_disconnect"},
		{"partial", "HTTP/1.1", "close", "0 DC downstream_remote_disconnect"},
		{"h2nolength", "HTTP/2", "close", "0 DC downstream_remote_disconnect"},
		{"h2nolength", "HTTP/2", "rst", "0 DC http2.remote_reset"},
		{"upgrade", "HTTP/1.1", "close", "0 DC downstream_remote_disconnect"},
	}
	path := func(e exchange) string {
		if e.gone == "" {
			return "/rt/" + e.name
		}
		return "/gone/" + e.name + "-" + e.gone
	}
	names := []string{"upstream_rq_total", "upstream_rq_active", "upstream_rq_pending_active", "upstream_rq_pending_overflow",
		"upstream_rq_timeout", "upstream_rq_504", "upstream_rq_503", "upstream_cx_total", "upstream_cx_active",
		"upstream_cx_connect_fail", "upstream_cx_connect_timeout", "upstream_cx_overflow"}
	var mu sync.Mutex
	results := map[string]pathResult{}
	var all []string
	for _, e := range exchanges {
		all = append(all, path(e))
	}
	t.Run("paths", func(t *testing.T) {
		for _, p := range proxyPaths() {
			t.Run(p.name, func(t *testing.T) {
				h := newHarness(t, p.logged)
				slow := func(c *clusterv3.Cluster) {
					c.ConnectTimeout = durationpb.New(10 * time.Second)
					c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
						MaxConnections: u32(1), MaxRequests: u32(1), MaxPendingRequests: u32(1)}}}
				}
				upgrades := func(m *hcmv3.HttpConnectionManager) {
					m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
				}
				logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){upgrades}, []*routev3.Route{timedRoute("/rt/", "slow", 300*time.Millisecond), timedRoute("/gone/", "slow", 60*time.Second)},
					edsCluster("slow", slow), cla("slow", hole))
				addr := h.addr("egress")
				answers := map[string]string{}
				for i, e := range exchanges {
					// A client leaves once its request is upstream's and
					// waits for its connect (the goroutine path counts the
					// request before net/http starts the dial: a client
					// gone before it leaves no connect to count); an h2c
					// stream's reset is logged before its connection
					// closes.
					sent := func() {
						waitUntil(t, 30*time.Second, path(e)+" sent upstream, its connect started", func() bool {
							return h.stat("cluster.slow.upstream_rq_total") == int64(i+1) && h.stat("cluster.slow.upstream_cx_total") == int64(i+1)
						})
					}
					logged := func() { awaitLog(t, logFile, i+1) }
					got := slowConnectExchange(t, addr, path(e), e.name, e.gone, sent, logged)
					answers[path(e)] = got
					if e.gone == "" {
						if got != timeoutAnswer {
							t.Errorf("%s: answered %q, want %q", path(e), got, timeoutAnswer)
						}
					} else {
						// The request ends once its client left, before
						// any connect could time out.
						waitUntil(t, 30*time.Second, path(e)+": upstream_rq_active 0", func() bool { return h.stat("cluster.slow.upstream_rq_active") == 0 })
					}
					// Its connect is abandoned: no SYN_SENT toward the
					// upstream, none counted as failed or timed out.
					waitUntil(t, 30*time.Second, path(e)+": no connect left toward "+hole, func() bool { return synSent(t, port) == 0 })
					if n := h.stat("cluster.slow.upstream_cx_connect_fail"); n != 0 {
						t.Errorf("%s: upstream_cx_connect_fail = %d once its request ended, want 0 (the connect abandoned)", path(e), n)
					}
					if n := h.stat("cluster.slow.upstream_cx_total"); n != int64(i+1) {
						t.Errorf("%s: upstream_cx_total = %d, want %d (one connect per request)", path(e), n, i+1)
					}
				}
				waitStats(t, h, map[string]int64{
					"cluster.slow.upstream_rq_active":           0,
					"cluster.slow.upstream_rq_pending_active":   0,
					"cluster.slow.upstream_cx_active":           0,
					"cluster.slow.upstream_rq_timeout":          4,
					"cluster.slow.upstream_rq_504":              4,
					"cluster.slow.upstream_rq_pending_overflow": 0,
				})
				var want []string
				for _, e := range exchanges {
					want = append(want, e.proto+" "+path(e)+" "+e.log)
				}
				wantLogLines(t, logFile, len(exchanges), want)
				mu.Lock()
				results[p.name] = pathResult{answers: answers, stats: h.counts("cluster.slow.", names), log: awaitLog(t, logFile, len(exchanges))}
				mu.Unlock()
			})
		}
	})
	sameAsGoroutinePath(t, results, all)
}

// slowConnectExchange sends the request kind names to path on a
// connection of its own to addr and, when gone is "", returns the
// answer ("status body"); else it leaves once its request is sent
// whole and sent returned (gone: close, or rst for an h2c stream's
// RST_STREAM CANCEL, its connection closed once logged returned), and
// returns "gone".
func slowConnectExchange(t *testing.T, addr, path, kind, gone string, sent, logged func()) string {
	t.Helper()
	c := dialFor30s(t, addr)
	defer c.Close()
	const body = "hello"
	switch kind {
	case "h2nolength":
		cl := h2PostHead(c, path)
		_ = cl.fr.WriteData(1, true, []byte(body))
		_ = cl.bw.Flush()
		switch gone {
		case "rst":
			sent()
			_ = cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			_ = cl.bw.Flush()
			logged()
			return "gone"
		case "close":
			sent()
			return "gone"
		}
		for f := range cl.frames {
			if f.stream != 1 {
				continue
			}
			switch f.typ {
			case http2.FrameHeaders:
				var data []byte
				for f := range cl.frames {
					if f.stream == 1 && f.typ == http2.FrameData {
						data = append(data, f.data...)
						if f.end {
							break
						}
					}
				}
				return f.status + " " + string(data)
			case http2.FrameRSTStream:
				return "RST_STREAM " + f.code.String()
			}
		}
		return "the connection ended"
	case "chunked":
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, len(body), body)
	case "partial":
		// The body's first chunk, then the client leaves mid-body.
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", path, len(body), body)
	case "continue":
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", path, len(body))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "read: " + err.Error()
		}
		if resp.StatusCode != http.StatusContinue {
			return "before the body: " + resp.Status
		}
		fmt.Fprint(c, body)
		return readH1Answer(&bufferedConn{Conn: c, r: br})
	case "upgrade":
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", path)
	}
	if gone != "" {
		sent()
		return "gone"
	}
	return readH1Answer(c)
}

// dialFor30s connects to addr, its reads and writes bounded to 30 s.
func dialFor30s(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// bufferedConn is a connection whose reads go through r first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// synSent counts this machine's TCP sockets in SYN_SENT toward
// 127.0.0.1:port (/proc/net/tcp).
func synSent(t *testing.T, port string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	remote := fmt.Sprintf("0100007F:%04X", p)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == remote && f[3] == "02" {
			n++
		}
	}
	return n
}
