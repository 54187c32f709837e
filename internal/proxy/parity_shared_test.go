package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// timedRoute is routeTo(prefix, cluster) with the route timeout d.
func timedRoute(prefix, cluster string, d time.Duration) *routev3.Route {
	r := routeTo(prefix, cluster)
	r.GetRoute().Timeout = durationpb.New(d)
	return r
}

// maxDurationRoute is routeTo(prefix, cluster) with no route timeout and
// the max_stream_duration d.
func maxDurationRoute(prefix, cluster string, d time.Duration) *routev3.Route {
	r := routeTo(prefix, cluster)
	r.GetRoute().Timeout = durationpb.New(0)
	r.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d)}
	return r
}

// withStreamIdle sets a connection manager's stream_idle_timeout to d.
func withStreamIdle(d time.Duration) func(*hcmv3.HttpConnectionManager) {
	return func(m *hcmv3.HttpConnectionManager) { m.StreamIdleTimeout = durationpb.New(d) }
}

// pushCutLog pushes to h an egress listener whose connection manager
// (changed by hcm) logs each stream in cutLogFormat to a file of its own
// and routes on rds with routes, and the resources rs; it returns the
// log's file.
func pushCutLog(t testing.TB, h *harness, hcm []func(*hcmv3.HttpConnectionManager), routes []*routev3.Route, rs ...types.Resource) string {
	logFile := filepath.Join(t.TempDir(), "access.log")
	mods := append([]func(*hcmv3.HttpConnectionManager){withAccessLog(logFile, cutLogFormat())}, hcm...)
	h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds", mods...)),
		routeConfig("rds", vhost("v", []string{"*"}, routes...))}, rs...)...)
	return logFile
}

// twoUpstreams serves handler on an HTTP/1.1 upstream and an h2c one and
// returns the clusters h1 and h2 that reach them.
func twoUpstreams(t testing.TB, handler http.Handler) []types.Resource {
	h1 := httptest.NewServer(handler)
	t.Cleanup(h1.Close)
	h2, _ := xnetH2CUpstream(t, handler)
	return []types.Resource{edsCluster("h1"), cla("h1", h1.Listener.Addr().String()), edsCluster("h2", h2Upstream), cla("h2", h2)}
}

// dialFor10s connects to addr for at most 10 s.
func dialFor10s(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

// h2PostHead starts an h2c client on c and sends the head of a POST of
// path on its stream 1, the body to follow; it returns the client.
func h2PostHead(c net.Conn, path string) *h2Client {
	cl := newH2Client(c)
	cl.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true})
	return cl
}

// heldH2Reset asks for path on stream 1 of a new h2c connection to addr
// whose client opens no window, and reports whether the proxy reset that
// stream before the connection ended.
func heldH2Reset(t *testing.T, addr, path string) bool {
	t.Helper()
	cl := dialH2(t, addr)
	_ = cl.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if err := cl.headers(1, path); err != nil {
		t.Fatal(err)
	}
	_ = cl.bw.Flush()
	for f := range cl.frames {
		if f.typ == http2.FrameRSTStream && f.stream == 1 {
			return true
		}
	}
	return false
}

// heldH1Get sends a GET of path on a new connection to addr whose
// receive buffer is small, and returns the connection, closed when the
// test ends.
func heldH1Get(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// bulkHandler answers with n pieces of 64 KiB (the caller picks n more
// than any window or buffer on the way holds), until a write fails.
func bulkHandler(n int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for range n {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
}

// readH1Answer reads an HTTP/1.1 response from c: "status body", the body's
// read error after it in brackets (a cut response), or what failed.
func readH1Answer(c net.Conn) string {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "read: " + err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	got := strconv.Itoa(resp.StatusCode) + " " + string(body)
	if err != nil {
		got += fmt.Sprintf(" (%v)", err)
	}
	return got
}
