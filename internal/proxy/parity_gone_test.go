package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestClientGoneSamePaths: a client that goes away while its request
// waits for the upstream's answer has its upstream request reset at
// once, on every path, over HTTP/1.1 and HTTP/2 both ways, as Envoy does.
// The client's connection's end (an HTTP/1.1 client's FIN or reset, an
// h2c client's close) is its connection manager's RemoteClose
// (ConnectionManagerImpl::onEvent, doConnectionClose, resetAllStreams:
// downstream_rq_rx_reset), logged with no status, DC and
// downstream_remote_disconnect (completeRequest, remote_close_); an h2c
// client's RST_STREAM resets the stream alone (onResetStream:
// downstream_rq_rx_reset), logged with no status, DC and the details its
// codec gives a reset it received, http2.remote_reset
// (ConnectionImpl::onStreamClose). Either way the router resets its
// upstream request (Filter::onDestroy, resetAll): an HTTP/1.1 upstream's
// connection closes, an HTTP/2 upstream's stream gets RST_STREAM CANCEL,
// which its pool counts in upstream_rq_tx_reset. The route timeout is 10
// s; the upstream must see its request end within 3 s.
//
// Before, the goroutine path's HTTP/1.1 fast path noticed an HTTP/1.1
// client gone only when it wrote the response: the upstream held its
// request until it answered or the route timeout.
func TestClientGoneSamePaths(t *testing.T) {
	const (
		prompt  = 3 * time.Second
		dcClose = "0 DC downstream_remote_disconnect"
		dcReset = "0 DC http2.remote_reset"
	)
	ends := newUpstreamEnds()
	h1 := tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection, or after 10 s
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		ends.got(req.URL.Path)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = br.ReadByte()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			ends.ended(req.URL.Path, "held 10 s")
		case err != nil:
			ends.ended(req.URL.Path, "closed")
		default:
			ends.ended(req.URL.Path, "more bytes")
		}
	})
	h2 := tcpUpstream(t, func(c net.Conn) { serveHeldH2(c, ends) }) // ends when the proxy closes the connection
	cases := []struct {
		client   string // how the client goes: h1close, h1reset, h2rst, h2close
		upstream string // h1 or h2
		end      string // what the upstream sees
		log      string
	}{
		{"h1close", "h1", "closed", dcClose},
		{"h1reset", "h1", "closed", dcClose},
		{"h2rst", "h1", "closed", dcReset},
		{"h2close", "h1", "closed", dcClose},
		{"h1close", "h2", "RST_STREAM CANCEL", dcClose},
		{"h1reset", "h2", "RST_STREAM CANCEL", dcClose},
		{"h2rst", "h2", "RST_STREAM CANCEL", dcReset},
		{"h2close", "h2", "RST_STREAM CANCEL", dcClose},
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			var routes []*routev3.Route
			for _, up := range []string{"h1", "h2"} {
				rt := routeTo("/"+p.name[:1]+"/"+up+"/", up)
				rt.GetRoute().Timeout = durationpb.New(10 * time.Second)
				routes = append(routes, rt)
			}
			h.push(httpListener("gone", httpManager("gone", "rds", withAccessLog(logFile, cutLogFormat()))),
				routeConfig("rds", vhost("v", []string{"*"}, routes...)),
				edsCluster("h1"), cla("h1", h1), edsCluster("h2", h2Upstream), cla("h2", h2))
			var want []string
			for _, c := range cases {
				path := "/" + p.name[:1] + "/" + c.upstream + "/" + c.client
				proto := "HTTP/1.1"
				if strings.HasPrefix(c.client, "h2") {
					proto = "HTTP/2"
				}
				want = append(want, proto+" "+path+" "+c.log)
				gone := goAwayWaiting(t, h.addr("gone"), path, c.client, ends)
				select {
				case end := <-ends.of(path):
					if end != c.end {
						t.Errorf("%s: the upstream saw %q; want %q", path, end, c.end)
					} else if d := time.Since(gone); d > prompt {
						t.Errorf("%s: the upstream saw its request end %v after the client went; want within %v", path, d, prompt)
					}
				case <-time.After(prompt):
					t.Errorf("%s: the upstream still held its request %v after the client went; want it %s", path, prompt, c.end)
				}
			}
			wantLogLines(t, logFile, len(cases), want)
			waitStats(t, h, map[string]int64{
				"http.gone.downstream_rq_rx_reset":      int64(len(cases)),
				"http.gone.downstream_rq_active":        0,
				"http.gone.downstream_rq_completed":     0, // no response: ActiveStream::chargeStats counts one
				"cluster.h1.upstream_rq_tx_reset":       0,
				"cluster.h2.upstream_rq_tx_reset":       4,
				"cluster.h1.upstream_rq_active":         0,
				"cluster.h2.upstream_rq_active":         0,
				"cluster.h1.upstream_rq_pending_active": 0,
			})
		})
	}
}

// goAwayWaiting asks for path as the client case says, waits until the
// upstream has the request, then goes away as it says, and returns when.
func goAwayWaiting(t *testing.T, addr, path, client string, ends *upstreamEnds) time.Time {
	t.Helper()
	got := ends.arrival(path)
	c := dialRaw(t, addr)
	var h2c *h2Client
	if strings.HasPrefix(client, "h2") {
		h2c = newH2Client(c)
		if err := h2c.headers(1, path); err != nil {
			t.Fatal(err)
		}
		_ = h2c.bw.Flush()
	} else if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the request did not reach the upstream", path)
	}
	switch client {
	case "h1reset":
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	case "h2rst":
		// The connection stays: only the stream goes.
		_ = h2c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = h2c.bw.Flush()
	default:
		_ = c.Close()
	}
	return time.Now()
}

// upstreamEnds tells a test when each path's request reached the
// upstream, and how the upstream saw it end.
type upstreamEnds struct {
	mu  sync.Mutex
	in  map[string]chan struct{}
	out map[string]chan string
}

func newUpstreamEnds() *upstreamEnds {
	return &upstreamEnds{in: map[string]chan struct{}{}, out: map[string]chan string{}}
}

func (e *upstreamEnds) arrival(path string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.in[path] == nil {
		e.in[path] = make(chan struct{})
	}
	return e.in[path]
}

func (e *upstreamEnds) of(path string) chan string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.out[path] == nil {
		e.out[path] = make(chan string, 1)
	}
	return e.out[path]
}

func (e *upstreamEnds) got(path string) {
	ch := e.arrival(path)
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (e *upstreamEnds) ended(path, how string) {
	select {
	case e.of(path) <- how:
	default: // one end per path
	}
}

// serveHeldH2 serves h2c on c, holding every request's answer; it tells
// ends of each request, and of its end: its stream reset, or the
// connection closed with it open.
func serveHeldH2(c net.Conn, ends *upstreamEnds) {
	w := acceptRawH2(c)
	if w == nil {
		return
	}
	bw, fr := w.bw, w.fr
	open := map[uint32]string{}
	defer func() {
		for _, path := range open {
			ends.ended(path, "connection closed")
		}
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			path := f.PseudoValue("path")
			open[f.StreamID] = path
			ends.got(path)
		case *http2.RSTStreamFrame:
			if path, ok := open[f.StreamID]; ok {
				delete(open, f.StreamID)
				ends.ended(path, "RST_STREAM "+f.ErrCode.String())
			}
		}
		_ = bw.Flush()
	}
}

// TestClientGoneAfterHeadSamePaths: an h2c client that goes away after
// its response's head came, while the upstream holds the rest of the
// body, is logged with the head's status, DC and the details of how it
// went, and counted in downstream_rq_rx_reset, on every path: its
// connection's close downstream_remote_disconnect, its RST_STREAM
// http2.remote_reset, as Envoy logs a stream its connection's
// RemoteClose or a received reset ends whether or not the response
// began (completeRequest sets the details over via_upstream;
// onResetStream counts it). The goroutine path logged both via_upstream
// and counted neither. (An HTTP/1.1 client that leaves then is noticed
// on the goroutine path at the next write only: docs/proxy.md.)
func TestClientGoneAfterHeadSamePaths(t *testing.T) {
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy closes the connection, or after 10 s
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nla")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	})
	cases := []struct{ client, log string }{
		{"h2close", "200 DC downstream_remote_disconnect"},
		{"h2rst", "200 DC http2.remote_reset"},
	}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			rt := routeTo("/", "up")
			rt.GetRoute().Timeout = durationpb.New(10 * time.Second)
			h.push(httpListener("gone", httpManager("gone", "rds", withAccessLog(logFile, cutLogFormat()))),
				routeConfig("rds", vhost("v", []string{"*"}, rt)),
				edsCluster("up"), cla("up", up))
			var want []string
			for _, c := range cases {
				path := "/" + c.client
				want = append(want, "HTTP/2 "+path+" "+c.log)
				conn := dialRaw(t, h.addr("gone"))
				h2c := newH2Client(conn)
				if err := h2c.headers(1, path); err != nil {
					t.Fatal(err)
				}
				_ = h2c.bw.Flush()
				data := false
				for f := range h2c.frames {
					if f.typ == http2.FrameData && f.stream == 1 {
						data = true
						break
					}
				}
				if !data {
					t.Fatalf("%s: the connection ended before the body's first bytes", path)
				}
				if c.client == "h2rst" {
					_ = h2c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
					_ = h2c.bw.Flush()
					// The connection stays until the stream is logged.
					awaitLog(t, logFile, len(want))
				}
				_ = conn.Close()
			}
			wantLogLines(t, logFile, len(cases), want)
			waitStats(t, h, map[string]int64{
				"http.gone.downstream_rq_rx_reset": int64(len(cases)),
				"http.gone.downstream_rq_active":   0,
			})
		})
	}
}

// TestClientResetInBodySamePaths: an h2c client that resets its stream
// while the proxy reads its request's body is logged with no status, DC
// and http2.remote_reset, and counted once in downstream_rq_rx_reset
// (Envoy's onResetStream), on every path. The goroutine path counted it
// twice: once for the body's read that failed, once for the stream's
// context that ended.
func TestClientResetInBodySamePaths(t *testing.T) {
	up := tcpUpstream(t, func(c net.Conn) { // ends when the proxy gives up the request
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
	})
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.logged)
			logFile := filepath.Join(t.TempDir(), "access.log")
			h.push(httpListener("gone", httpManager("gone", "rds", withAccessLog(logFile, cutLogFormat()))),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "up"))),
				edsCluster("up"), cla("up", up))
			c := dialRaw(t, h.addr("gone"))
			h2c := newH2Client(c)
			h2c.hbuf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/rst"}} {
				_ = h2c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			_ = h2c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2c.hbuf.Bytes(), EndHeaders: true})
			_ = h2c.fr.WriteData(1, false, []byte("part"))
			_ = h2c.bw.Flush()
			time.Sleep(200 * time.Millisecond) // the body's first bytes reach the upstream
			_ = h2c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			_ = h2c.bw.Flush()
			if log, want := awaitLog(t, logFile, 1), "HTTP/2 /rst 0 DC http2.remote_reset"; !slices.Contains(strings.Split(log, "\n"), want) {
				t.Errorf("access log\n%s\nwant the line %q", log, want)
			}
			waitStats(t, h, map[string]int64{
				"http.gone.downstream_rq_rx_reset": 1,
				"http.gone.downstream_rq_active":   0,
			})
			_ = c.Close()
		})
	}
}

// wantLogLines waits for n lines in the access log logFile and wants
// each line of want among them.
func wantLogLines(t *testing.T, logFile string, n int, want []string) {
	t.Helper()
	log := awaitLog(t, logFile, n)
	lines := strings.Split(log, "\n")
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Errorf("access log\n%s\nwant the line %q", log, w)
		}
	}
}
