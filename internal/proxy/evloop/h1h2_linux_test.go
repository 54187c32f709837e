package evloop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h1UpRouter routes HTTP/1.1 requests to the HTTP/2 cluster too.
type h1UpRouter struct{ h2UpRouter }

func (r h1UpRouter) Route(h proxyroute.Head) Target { return r.RouteH2(h) }

// startH1Up is startH2Up with HTTP/1.1 requests routed to the HTTP/2
// cluster too, and a client connection to the loop (closed when the test
// ends; a deadline of 20 s).
func startH1Up(t *testing.T) (net.Conn, func(settings ...http2.Setting) *rawUp) {
	t.Helper()
	srv, accept := startH2Up(t, func(c *Config) {
		c.Router = h1UpRouter{c.Router.(h2UpRouter)}
		c.AcceptHTTP10 = true // served by the loops: no HandOff
	})
	c := dial(t, srv.Addr())
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, accept
}

// TestH1UpstreamRequestBody: an HTTP/1.1 request to an HTTP/2 upstream
// that opens its stream window 1,000 bytes at a time: the request's
// fields as HTTP/2 ones, and every byte of a chunked body far beyond the
// window, sent without the chunk framing; the client, no longer read
// while the stream holds a window's worth, is read again as the upstream
// takes the bytes. The response (no length) goes down chunked.
func TestH1UpstreamRequestBody(t *testing.T) {
	c, accept := startH1Up(t)
	const chunks, size = 60, 5000
	go func() { // ends when the body is written or the connection closes (defer above)
		w := bufio.NewWriter(c)
		fmt.Fprintf(w, "PUT /put?x=1 HTTP/1.1\r\nHost: svc.local\r\nConnection: X-Hop\r\nX-Hop: 1\r\nTE: gzip\r\n"+
			"Transfer-Encoding: chunked\r\nX-App: a\r\n\r\n")
		for range chunks {
			fmt.Fprintf(w, "%x\r\n%s\r\n", size, strings.Repeat("b", size))
		}
		_, _ = io.WriteString(w, "0\r\n\r\n")
		_ = w.Flush()
	}()
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	req := u.request()
	var got []string
	for _, f := range req.Fields {
		if f.Name != "x-request-id" {
			got = append(got, f.Name+"="+f.Value)
		}
	}
	want := ":method=PUT :scheme=http :authority=svc.local :path=/put?x=1 x-app=a x-forwarded-proto=http"
	if strings.Join(got, " ") != want || req.StreamEnded() {
		t.Fatalf("upstream request fields %v (end %v), want %s", got, req.StreamEnded(), want)
	}
	id := req.StreamID
	n := 0
	for {
		f := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
		if f == nil {
			t.Fatalf("upstream connection ended after %d body bytes", n)
		}
		d := f.(*http2.DataFrame)
		if bytes.ContainsAny(d.Data(), "\r\n0123456789") {
			t.Fatalf("chunk framing in the DATA sent upstream: %q", d.Data())
		}
		n += len(d.Data())
		if d.StreamEnded() {
			break
		}
		if len(d.Data()) > 0 {
			_ = u.fr.WriteWindowUpdate(id, uint32(len(d.Data())))
			_ = u.fr.WriteWindowUpdate(0, uint32(len(d.Data())))
		}
	}
	if n != chunks*size {
		t.Fatalf("upstream got %d body bytes, want %d", n, chunks*size)
	}
	u.headers(id, false, ":status", "201", "x-up", "1")
	_ = u.fr.WriteData(id, false, []byte("hello "))
	_ = u.fr.WriteData(id, true, []byte("world"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 201 || string(body) != "hello world" || resp.Header.Get("X-Up") != "1" ||
		len(resp.TransferEncoding) != 1 || resp.Header.Get("Server") != "envoy" {
		t.Fatalf("client got %d %q %v (%v), headers %v", resp.StatusCode, body, resp.TransferEncoding, err, resp.Header)
	}
}

// TestH1UpstreamResponseLength: an HTTP/2 response whose DATA does not
// match its content-length must not reach an HTTP/1.1 client as a
// complete response (or as the start of the next one): longer, the
// response is cut before the frame that passes the length and the
// upstream stream reset (RST_STREAM PROTOCOL_ERROR), as nghttp2 resets
// it in Envoy's codec (h2uData); shorter, the connection closes
// after what came. A body sent to HEAD is
// not relayed, and the connection goes on.
func TestH1UpstreamResponseLength(t *testing.T) {
	for _, tc := range []struct {
		name, method, length string
		data                 []string
		wantBody             string
		wantErr, wantReset   bool
	}{
		{"longer", "GET", "5", []string{"abc", "defgh"}, "abc", true, true},
		{"shorter", "GET", "10", []string{"abc"}, "abc", true, false},
		{"head", "HEAD", "5", []string{"abcde"}, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, accept := startH1Up(t)
			fmt.Fprintf(c, "%s /x HTTP/1.1\r\nHost: svc.local\r\n\r\n", tc.method)
			u := accept()
			id := u.request().StreamID
			u.headers(id, false, ":status", "200", "content-length", tc.length)
			for i, d := range tc.data {
				_ = u.fr.WriteData(id, i == len(tc.data)-1, []byte(d))
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			// The close, not a timeout, ends what the client reads.
			if string(body) != tc.wantBody || errors.Is(err, io.ErrUnexpectedEOF) != tc.wantErr || !tc.wantErr && err != nil {
				t.Fatalf("client got %q, %v; want %q, an unexpected EOF %v", body, err, tc.wantBody, tc.wantErr)
			}
			if tc.wantReset {
				isRST := func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }
				if f := u.until(isRST); f == nil || f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("upstream got %v, want RST_STREAM PROTOCOL_ERROR", f)
				}
			}
			if !tc.wantErr {
				// The connection goes on: a second request is answered.
				fmt.Fprintf(c, "GET /y HTTP/1.1\r\nHost: svc.local\r\n\r\n")
				id := u.request().StreamID
				u.headers(id, true, ":status", "204")
				if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 204 {
					t.Fatalf("second request: %v, %v", resp, err)
				}
			}
		})
	}
}

// TestH1UpstreamHTTP10: an HTTP/1.0 request without Host to an HTTP/2
// upstream: :authority is the upstream's address (as Go's Transport
// sends it), and a response without a length ends with the connection,
// not chunked.
func TestH1UpstreamHTTP10(t *testing.T) {
	c, accept := startH1Up(t)
	_, _ = io.WriteString(c, "GET /old HTTP/1.0\r\n\r\n")
	u := accept()
	req := u.request()
	if a := req.PseudoValue("authority"); a != u.c.LocalAddr().String() {
		t.Fatalf(":authority %q, want the upstream's address %s", a, u.c.LocalAddr())
	}
	u.headers(req.StreamID, false, ":status", "200")
	_ = u.fr.WriteData(req.StreamID, true, []byte("old"))
	all, err := io.ReadAll(c)
	if err != nil || !bytes.HasSuffix(all, []byte("\r\n\r\nold")) || bytes.Contains(all, []byte("chunked")) ||
		!bytes.Contains(all, []byte("connection: close")) {
		t.Fatalf("client got %q (%v)", all, err)
	}
}

// TestH1UpstreamInterim: an HTTP/2 upstream's 1xx responses (100, 103)
// are dropped, as Envoy drops them without proxy_100_continue: an
// HTTP/1.1 or HTTP/1.0 client gets the response alone.
func TestH1UpstreamInterim(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		t.Run(proto, func(t *testing.T) {
			c, accept := startH1Up(t)
			fmt.Fprintf(c, "GET /x %s\r\nHost: svc.local\r\n\r\n", proto)
			u := accept()
			id := u.request().StreamID
			u.headers(id, false, ":status", "100")
			u.headers(id, false, ":status", "103", "link", "</a.css>; rel=preload")
			u.headers(id, false, ":status", "200", "content-length", "2")
			_ = u.fr.WriteData(id, true, []byte("ok"))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 10))
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("response %d %q, want 200 ok", resp.StatusCode, body)
			}
		})
	}
}
