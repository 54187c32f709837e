package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
)

// TestH2UpstreamMalformedSamePaths: an HTTP/2 upstream's malformed
// response fails the whole upstream connection on every path, as Envoy's
// codec fails it with stream_error_on_invalid_http_messaging unset (App
// Mesh's): ConnectionImpl::onInvalidFrame, CodecClient::onData and
// onEvent. Two streams share one upstream connection (one h2c client
// connection, so one loop's): /a/<case> waits upstream while /b/<case>
// gets the malformed response; both are answered 503 "... reset reason:
// protocol error" (UPE), the connection counted once in
// upstream_cx_protocol_error and each stream in upstream_rq_tx_reset.
// When /a's response began before, its client stream is reset, logged
// UPE. An upstream's RST_STREAM on /b is a remote reset of /b alone,
// counted in upstream_rq_rx_reset, /a answered after it. Both paths reset
// only /b, answering /a when the upstream did, and counted neither
// upstream_cx_protocol_error nor (the loops) upstream_rq_rx_reset. A
// frame that breaks HTTP/2 (DATA on stream 0, rows "idle"), which x/net's
// client fails the connection for itself, counts it once as well: the
// goroutine path did not count it. On every path the upstream reads
// nothing after a response that fails its connection but the close, as
// Envoy's codec client closes without flushing; the loops sent it a
// GOAWAY PROTOCOL_ERROR first.
func TestH2UpstreamMalformedSamePaths(t *testing.T) {
	var mu sync.Mutex
	held := map[*rawH2Writer]uint32{} // /a's stream, per upstream connection
	arrived := make(chan string, 1)
	after := make(chan string, 1) // what the upstream read after a response that fails its connection
	up := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		path := strings.Join(r.values(":path"), "")
		kind := path[strings.LastIndex(path, "/")+1:]
		if strings.HasPrefix(path, "/a/") {
			mu.Lock()
			held[w] = id
			mu.Unlock()
			if kind == "begun" || kind == "begunidle" {
				w.headers(id, false, 0, ":status", "200")
				_ = w.fr.WriteData(id, false, []byte("partial"))
			}
			arrived <- path
			return
		}
		mu.Lock()
		a := held[w]
		mu.Unlock()
		switch kind {
		case "end1xx", "begun":
			w.headers(id, true, 0, ":status", "103")
		case "field":
			w.headers(id, false, 0, ":status", "200", "X-Upper", "v")
		case "status":
			w.headers(id, false, 0, ":status", "2x0")
		case "data":
			w.data(id, []byte("no head"))
		case "idle", "begunidle":
			_ = w.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) // x/net's client fails the connection itself
		case "badcl":
			w.headers(id, false, 0, ":status", "200", "content-length", "abc")
			w.data(id, []byte("body"))
		case "passedcl":
			w.headers(id, false, 0, ":status", "200", "content-length", "2")
			w.data(id, []byte("body"))
			w.headers(a, false, 0, ":status", "200")
			w.data(a, []byte("a after b"))
		case "reset":
			_ = w.fr.WriteRSTStream(id, http2.ErrCodeInternal)
			w.headers(a, false, 0, ":status", "200")
			w.data(a, []byte("a after b"))
		}
		switch kind {
		case "end1xx", "begun", "field", "status", "data", "idle", "begunidle":
			after <- w.rest()
		}
	})
	const upe = "502 upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	cases := []struct {
		kind  string
		wantA string // /b's answer is wantB
		wantB string
	}{
		{"end1xx", upe, upe},
		{"field", upe, upe},
		{"status", upe, upe},
		{"data", upe, upe},
		{"begun", "200 partial, then reset", upe},
		{"idle", upe, upe},
		{"begunidle", "200 partial, then reset", upe},
		{"passedcl", "200 a after b", "200 , then reset"},
		{"reset", "200 a after b", "503 upstream connect error or disconnect/reset before headers. reset reason: remote reset"},
	}
	var names []string
	for _, c := range cases {
		names = append(names, "/a/"+c.kind, "/b/"+c.kind)
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
	answer := func(resp *http.Response, err error) string {
		if err != nil {
			return "error"
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Sprintf("%d %s, then reset", resp.StatusCode, b)
		}
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))), edsCluster("h2", h2Upstream), cla("h2", up))
		cl := h2cClient(t)
		get := func(path string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr("egress")+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return answer(cl.Do(req))
		}
		res := pathResult{answers: map[string]string{}}
		for _, c := range cases {
			a := make(chan string, 1)
			go func() { a <- get("/a/" + c.kind) }() // ends within get's timeout
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: /a/%s did not reach the upstream", p.name, c.kind)
			}
			res.answers["/b/"+c.kind] = get("/b/" + c.kind)
			res.answers["/a/"+c.kind] = <-a
			if c.wantB == upe {
				// Envoy's codec client closes a connection it fails
				// without flushing: no GOAWAY (CodecClient::onData).
				select {
				case got := <-after:
					if got != "closed" {
						t.Errorf("%s, %s: the upstream read after its response %q; want only its close", p.name, c.kind, got)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s, %s: the upstream did not finish reading", p.name, c.kind)
				}
			}
			for n, want := range map[string]string{"/a/": c.wantA, "/b/": c.wantB} {
				if got := res.answers[n+c.kind]; got != want {
					t.Errorf("%s, %s%s: answered %s; want %s", p.name, n, c.kind, got, want)
				}
			}
		}
		res.log = awaitLog(t, logFile, len(names))
		var stats []string
		for _, n := range []string{"upstream_cx_protocol_error", "upstream_rq_tx_reset", "upstream_rq_rx_reset", "upstream_rq_total"} {
			stats = append(stats, fmt.Sprintf("%s %d", n, h.stat("cluster.h2."+n)))
		}
		res.stats = strings.Join(stats, ", ")
		if want := "upstream_cx_protocol_error 7, upstream_rq_tx_reset 14, upstream_rq_rx_reset 2, upstream_rq_total 18"; res.stats != want {
			t.Errorf("%s: counters %s; want %s", p.name, res.stats, want)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// TestH2UpstreamContentLengthSamePaths: an HTTP/2 upstream's
// content-length, to an HTTP/1.1 client and to an h2c one alike. One that
// does not parse is nghttp2's invalid header (NGHTTP2_ERR_HTTP_HEADER),
// which fails the connection in Envoy (ConnectionImpl::onInvalidFrame):
// 502 UPE on the loops, counted in upstream_cx_protocol_error. x/net's
// client deletes such a field before the goroutine path sees the
// response, which it relays as one without length (a documented
// difference). DATA past the length is a reset of that stream alone:
// nghttp2 resets it before the codec sees the frame (no onInvalidFrame),
// a remote reset to Envoy, counted in upstream_rq_rx_reset; the head went
// down, then the client's stream is reset (its HTTP/1.1 connection
// closed) on every path. The loops failed the connection for an
// HTTP/1.1 client and relayed both to an h2c one; the goroutine path
// relayed the bytes up to the length (x/net cuts them there), an
// HTTP/1.1 response looking complete, and sent no head before an h2c
// client's reset.
func TestH2UpstreamContentLengthSamePaths(t *testing.T) {
	up := rawH2Upstream(t, func(w *rawH2Writer, id uint32, r *rawH2Request) {
		path := strings.Join(r.values(":path"), "")
		switch {
		case strings.HasSuffix(path, "/badcl"):
			w.headers(id, false, 0, ":status", "200", "content-length", "abc")
			w.data(id, []byte("body"))
		case strings.HasSuffix(path, "/passedcl"):
			w.headers(id, false, 0, ":status", "200", "content-length", "2")
			w.data(id, []byte("body"))
		}
	})
	const upe = "502 cl=87 upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "h2"))), edsCluster("h2", h2Upstream), cla("h2", up))
		clients := []struct {
			name string
			c    *http.Client
		}{{"HTTP/1.1", &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}}, {"h2c", h2cClient(t)}}
		for _, cl := range clients {
			for _, c := range []struct{ kind, want string }{
				{"badcl", upe},
				{"passedcl", "200 cl=2 , then reset"},
			} {
				if c.kind == "badcl" && p.h2Goroutines {
					// The goroutine path (an HTTP/1.1 request to an HTTP/2
					// cluster handed off too): x/net deleted the field,
					// relayed without length.
					c.want = "200 cl= body"
				}
				got := "error"
				if resp, err := cl.c.Get("http://" + h.addr("egress") + "/b/" + c.kind); err == nil {
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					got = fmt.Sprintf("%d cl=%s %s", resp.StatusCode, resp.Header.Get("Content-Length"), b)
					if err != nil {
						got += ", then reset"
					}
				}
				if got != c.want {
					t.Errorf("%s, %s client, %s: answered %s; want %s", p.name, cl.name, c.kind, got, c.want)
				}
			}
		}
		want := "upstream_cx_protocol_error 2, upstream_rq_tx_reset 2, upstream_rq_rx_reset 2"
		if p.h2Goroutines {
			want = "upstream_cx_protocol_error 0, upstream_rq_tx_reset 0, upstream_rq_rx_reset 2"
		}
		var stats []string
		for _, n := range []string{"upstream_cx_protocol_error", "upstream_rq_tx_reset", "upstream_rq_rx_reset"} {
			stats = append(stats, fmt.Sprintf("%s %d", n, h.stat("cluster.h2."+n)))
		}
		if got := strings.Join(stats, ", "); got != want {
			t.Errorf("%s: counters %s; want %s", p.name, got, want)
		}
	}
}
