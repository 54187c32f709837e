package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestBodyComingResponseStreamsSamePaths: while a request's body is
// still coming (a bidirectional stream whose client has not half-closed),
// a response that streams keeps the stream alive, as Envoy's stream idle
// timer restarts on every frame either way (FilterManager's encodeData
// and decodeData reset it), on every path: the upstream answers at once
// and sends a piece every slowGap for twice the stream idle timeout
// while the client, its body open, sends nothing after its first piece;
// the whole response arrives. The loops bounded such a stream by the
// body's last read alone and cut it at the stream idle timeout.
func TestBodyComingResponseStreamsSamePaths(t *testing.T) {
	const pieces = 2 * int(rtsStreamIdle/slowGap)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		for i := range pieces {
			if i > 0 {
				time.Sleep(slowGap)
			}
			_, _ = io.WriteString(w, "x")
			_ = http.NewResponseController(w).Flush()
		}
	})
	h1 := httptest.NewServer(handler)
	t.Cleanup(h1.Close)
	h2, _ := xnetH2CUpstream(t, handler)
	timed := func(prefix, cluster string) *routev3.Route {
		r := routeTo(prefix, cluster)
		r.GetRoute().Timeout = durationpb.New(rtsRouteTimeout)
		return r
	}
	want := "200 " + strings.Repeat("x", pieces)
	var names []string
	for _, client := range []string{"chunked", "h2"} {
		for _, up := range []string{"h1", "h2"} {
			names = append(names, client+" /"+up+"/push")
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c); c.loopsAnyStreamIdle = true })
		h.push(httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.StreamIdleTimeout = durationpb.New(rtsStreamIdle)
		})),
			routeConfig("rds", vhost("v", []string{"*"}, timed("/h1/", "h1"), timed("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1.Listener.Addr().String()), edsCluster("h2", h2Upstream), cla("h2", h2))
		res := pathResult{answers: map[string]string{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, name := range names {
			wg.Add(1)
			go func() { // ends with the exchange (each read is bounded by 10 s)
				defer wg.Done()
				client, path, _ := strings.Cut(name, " ")
				got := openPost(h.addr("egress"), client, path)
				mu.Lock()
				defer mu.Unlock()
				res.answers[name] = got
				if got != want {
					t.Errorf("%s, %s: answered %q; want %q", p.name, name, got, want)
				}
			}()
		}
		wg.Wait()
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// openPost sends a POST of path to addr from client (chunked: HTTP/1.1
// with a chunked body, h2: over h2c) with the first piece of its body,
// never its end, and returns the answer ("<status> <body>", or how the
// exchange ended).
func openPost(addr, client, path string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if client == "h2" {
		cl := newH2Client(c)
		cl.hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
			_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.hbuf.Bytes(), EndHeaders: true})
		_ = cl.fr.WriteData(1, false, []byte("ab"))
		if err := cl.bw.Flush(); err != nil {
			return "write: " + err.Error()
		}
		return strings.TrimSpace(h2StreamEnd(cl, 1))
	}
	if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"); err != nil {
		return "write: " + err.Error()
	}
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
