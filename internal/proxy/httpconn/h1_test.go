package httpconn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// h1Server runs the fast path's connection loop over real TCP connections
// with h as the handler, under a Server that parks every connection idle
// between requests at once (where parking exists), so that every test of
// the loop goes through parking and resuming too.
type h1Server struct {
	ln    net.Listener
	srv   *Server
	mu    sync.Mutex
	conns []*h1Conn // protected by mu
	wg    sync.WaitGroup
}

// startH1 serves HTTP/1.0 requests too (accept_http_10).
func startH1(t testing.TB, h handlerFunc) *h1Server {
	return startH1With(t, h, Options{ParkIdleAfter: time.Nanosecond}, func(hc *h1Conn) *h1Conn {
		hc.http10 = true
		return hc
	})
}

// startH1With is startH1 with the Server's options; setup, when set,
// adjusts each connection before it is served (timeouts, counters) and
// may replace it (a TLS server connection).
func startH1With(t testing.TB, h handlerFunc, o Options, setup func(hc *h1Conn) *h1Conn) *h1Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h1Server{ln: ln, srv: NewServer(slog.New(slog.DiscardHandler), o)}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.srv.Run(ctx) }() // ends with cancel in Cleanup, once every connection is gone
	if s.srv.parkAfter >= 0 && runtime.GOOS == "linux" {
		// Run makes the poller on its goroutine; a connection served
		// before that would never park.
		for deadline := time.Now().Add(5 * time.Second); s.srv.poll.Load() == nil; {
			if time.Now().After(deadline) {
				t.Fatal("the server's poller did not start")
			}
			time.Sleep(time.Millisecond)
		}
	}
	s.wg.Add(1)
	go func() { // accept loop; ends when ln is closed in Cleanup
		defer s.wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			hc := newH1Conn(&listener.Conn{Conn: raw})
			if setup != nil {
				hc = setup(hc)
			}
			if !s.srv.track(hc) {
				_ = raw.Close()
				continue
			}
			s.mu.Lock()
			s.conns = append(s.conns, hc)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { // one connection; ends when its loop ends or parks it
				defer s.wg.Done()
				s.srv.serveFast(hc, h, func() { s.srv.untrack(hc) })
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		cancel() // drains and closes the connections still open
		select {
		case err := <-runDone:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the server's Run did not return")
		}
		s.wg.Wait()
	})
	return s
}

// exchange writes raw to a new connection, half-closes it and returns all
// the server wrote until it closed.
func (s *h1Server) exchange(t testing.TB, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the responses: %v", err)
	}
	return string(out)
}

// responses parses a byte stream of HTTP/1.1 responses to requests with
// the given methods, failing the test if it is malformed.
func responses(t testing.TB, out string, methods ...string) []*http.Response {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(out))
	var rs []*http.Response
	for i := 0; ; i++ {
		if _, err := br.Peek(1); err == io.EOF {
			return rs
		}
		m := http.MethodGet
		if i < len(methods) {
			m = methods[i]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d: %v in %q", i, err, out)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v in %q", i, err, out)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		rs = append(rs, resp)
	}
}

func body(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// echo answers with the method, path and request body.
func echo(_ context.Context, w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
}

func TestH1Framing(t *testing.T) {
	handlers := map[string]handlerFunc{
		"/length": func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		},
		"/nothing":   func(context.Context, http.ResponseWriter, *http.Request) {},
		"/nocontent": func(_ context.Context, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) },
		"/short": func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "abc")
		},
		"/trailers": func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		},
		"/early-hints": func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "after hints")
		},
	}
	srv := startH1(t, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		if h, ok := handlers[r.URL.Path]; ok {
			h(ctx, w, r)
			return
		}
		echo(ctx, w, r)
	})
	tests := []struct {
		name    string
		raw     string
		methods []string
		check   func(t *testing.T, rs []*http.Response)
	}{
		{"unknown length is chunked", "GET /x?y=1 HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs[0].TransferEncoding) != 1 || body(rs[0]) != "GET /x?y=1 " || rs[0].Header.Get("Date") == "" {
				t.Errorf("%+v", rs[0])
			}
		}},
		{"a declared length is kept", "GET /length HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if rs[0].ContentLength != 5 || len(rs[0].TransferEncoding) != 0 || body(rs[0]) != "hello" {
				t.Errorf("%+v", rs[0])
			}
		}},
		{"no body written is Content-Length 0", "GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if rs[0].StatusCode != 200 || rs[0].ContentLength != 0 {
				t.Errorf("%+v", rs[0])
			}
		}},
		{"204 has neither body nor length", "GET /nocontent HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 2 || rs[0].StatusCode != 204 || rs[0].Header.Get("Content-Length") != "" || body(rs[1]) != "GET /a " {
				t.Errorf("%+v", rs)
			}
		}},
		{"HEAD gets headers only", "HEAD /length HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n", []string{"HEAD"}, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 2 || rs[0].ContentLength != 5 || body(rs[0]) != "" || body(rs[1]) != "GET /b " {
				t.Errorf("%+v", rs)
			}
		}},
		{"pipelined requests are answered in order", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 3 || body(rs[0]) != "GET /1 " || body(rs[1]) != "POST /2 abc" || body(rs[2]) != "GET /3 " {
				t.Errorf("%d responses: %v", len(rs), rs)
			}
		}},
		{"chunked request bodies are read", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if body(rs[0]) != "POST /c abcde" {
				t.Errorf("%q", body(rs[0]))
			}
		}},
		{"trailers follow the last chunk", "GET /trailers HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if body(rs[0]) != "body" || rs[0].Trailer.Get("X-Sum") != "42" || rs[0].Trailer.Get("X-Late") != "yes" {
				t.Errorf("body %q trailer %v", body(rs[0]), rs[0].Trailer)
			}
		}},
		{"Connection: close ends after the response", "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 1 || !rs[0].Close {
				t.Errorf("%+v", rs)
			}
		}},
		{"HTTP/1.0 is answered in kind and closed", "GET /old HTTP/1.0\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if rs[0].ProtoMinor != 0 || len(rs[0].TransferEncoding) != 0 || body(rs[0]) != "GET /old " {
				t.Errorf("%+v", rs[0])
			}
		}},
		{"HTTP/1.0 keep-alive is kept when the length is known", "GET /length HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /nothing HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /never HTTP/1.0\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 3 || body(rs[0]) != "hello" || rs[0].Header.Get("Connection") != "keep-alive" || rs[1].ContentLength != 0 || body(rs[2]) != "GET /x " || !rs[2].Close {
				t.Errorf("%d responses %+v", len(rs), rs)
			}
		}},
		{"1xx goes before the response", "GET /early-hints HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 2 || rs[0].StatusCode != 103 || rs[0].Header.Get("Link") == "" || body(rs[1]) != "after hints" {
				t.Errorf("%+v", rs)
			}
		}},
		{"empty lines before a request are ignored", "\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n", nil, func(t *testing.T, rs []*http.Response) {
			if len(rs) != 1 || body(rs[0]) != "GET /a " {
				t.Errorf("%+v", rs)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, responses(t, srv.exchange(t, tc.raw), tc.methods...))
		})
	}
}

func TestH1ShortBody(t *testing.T) {
	srv := startH1(t, func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "abc")
	})
	// The client can only tell the body is short by the close.
	out := srv.exchange(t, "GET /short HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n")
	if !strings.HasSuffix(out, "\r\n\r\nabc") || strings.Count(out, "HTTP/1.1") != 1 {
		t.Errorf("%q", out)
	}
}

func TestH1BadRequests(t *testing.T) {
	srv := startH1(t, echo)
	tests := []struct {
		name string
		raw  string
		code int
	}{
		{"garbage", "NOT HTTP\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad header name", "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", maxHeaderBytes) + "\r\n\r\n", 431},
		{"HTTP/2 request line without the preface", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 426},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 426},
		{"too many header lines", "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X: x\r\n", 100) + "\r\n", 431},
		{"chunked HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		// Framing two parsers may read differently (head.go).
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding and Content-Length", "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n", 400},
		{"two Transfer-Encodings", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\t2\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: h\n\n", 400},
		{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: h\r\n\n", 400},
		// Past the read buffer: the check follows the head as it arrives.
		{"Content-Length and Transfer-Encoding after 8 KiB of head", "POST / HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("p", 8<<10) +
			"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"obs-fold after 8 KiB of head", "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("p", 8<<10) + "\r\nX-A: 1\r\n 2\r\n\r\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := responses(t, srv.exchange(t, tc.raw+"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"))
			if len(rs) != 1 || rs[0].StatusCode != tc.code || !rs[0].Close {
				t.Fatalf("got %d responses (%v), want one %d that closes", len(rs), rs, tc.code)
			}
			// Envoy's local reply: the reason phrase as text.
			if b, h := body(rs[0]), rs[0].Header; b != http.StatusText(tc.code) || h.Get("Content-Type") != "text/plain" ||
				h.Get("Server") != "envoy" || h.Get("Date") == "" {
				t.Errorf("answered %q %v, want %q as text/plain with a date, from envoy", b, h, http.StatusText(tc.code))
			}
		})
	}
}

// TestH1RefusesHTTP10: without accept_http_10 (Envoy's default), an
// HTTP/1.0 request is answered 426 Upgrade Required with an HTTP/1.1
// status line, and the connection closes.
func TestH1RefusesHTTP10(t *testing.T) {
	srv := startH1With(t, echo, Options{}, nil)
	out := srv.exchange(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
	rs := responses(t, out)
	if len(rs) != 1 || rs[0].StatusCode != http.StatusUpgradeRequired || !rs[0].Close || body(rs[0]) != "Upgrade Required" ||
		!strings.HasPrefix(out, "HTTP/1.1 426 Upgrade Required\r\n") {
		t.Fatalf("answered %q, want one HTTP/1.1 426 that closes", out)
	}
}

func TestH1Streaming(t *testing.T) {
	next := make(chan struct{})
	srv := startH1(t, func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-next
		_, _ = io.WriteString(w, "second")
	})
	c, err := net.Dial("tcp", srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("a flushed chunk did not arrive before the handler returned: %q %v", buf, err)
	}
	close(next)
	if rest, _ := io.ReadAll(resp.Body); string(rest) != "second" {
		t.Fatalf("rest %q", rest)
	}
}

func TestH1Hijack(t *testing.T) {
	srv := startH1(t, func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, conn) // echo, including what arrived with the request
	})
	c, err := net.Dial("tcp", srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nearly\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "early\n" {
		t.Fatalf("bytes sent with the upgrade request: %q %v", line, err)
	}
	_, _ = io.WriteString(c, "later\n")
	if line, err := br.ReadString('\n'); err != nil || line != "later\n" {
		t.Fatalf("after the upgrade: %q %v", line, err)
	}
}

func TestH1Panic(t *testing.T) {
	srv := startH1(t, func(_ context.Context, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		panic("bug")
	})
	for _, path := range []string{"/abort", "/bug"} {
		out := srv.exchange(t, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
		if strings.Contains(out, "/next") || strings.Count(out, "HTTP/1.1 ") > 1 {
			t.Errorf("%s: the connection went on after a panic: %q", path, out)
		}
	}
}

func TestStartsWithPreface(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{h2Preface + "frames", true},
		{"GET / HTTP/1.0\r\n\r\n", false},
		{"PRI / HTTP/1.1\r\n\r\n", false},
		{"P", false}, // then EOF
	}
	for _, tc := range tests {
		got, err := startsWithPreface(bufio.NewReader(strings.NewReader(tc.in)))
		if got != tc.want || err != nil && tc.in != "P" {
			t.Errorf("%q: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzH1 feeds arbitrary bytes to the fast path: whatever arrives, it must
// answer with well-formed HTTP/1.1 responses and end the connection when
// the client does, without panicking or hanging. Framing is checked too:
// every request the handler served gets exactly one response, in order,
// and a response the connection itself makes (a refused request) is the
// last one: nothing after a refused request is ever served.
func FuzzH1(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://h/abs HTTP/1.1\r\nHost: other\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"PRI * HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1\nHost: h\n\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
	} {
		f.Add(s)
	}
	var served atomic.Int64
	srv := startH1(f, func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "3")
			return
		}
		echo(ctx, w, r)
	})
	f.Fuzz(func(t *testing.T, raw string) {
		served.Store(0)
		out := srv.exchange(t, raw)
		br := bufio.NewReader(strings.NewReader(out))
		var answered int64
		refused := false
		for {
			if _, err := br.Peek(1); err == io.EOF {
				break
			}
			if refused {
				t.Fatalf("a response after a refused request in %q", out)
			}
			// The request method only matters for HEAD, whose responses
			// carry Content-Length 3 and no body.
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("malformed response: %v in %q", err, out)
			}
			switch {
			case resp.StatusCode == http.StatusOK:
				answered++
			case resp.StatusCode >= 400:
				refused = true
				if !resp.Close {
					t.Fatalf("a refused request did not close the connection: %q", out)
				}
			}
			if resp.ContentLength == 3 && resp.StatusCode == 200 && !strings.Contains(raw, "HEAD") {
				t.Fatalf("unexpected response %v", resp)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				if strings.Contains(raw, "HEAD") {
					return // a HEAD response parsed as GET: no body follows
				}
				t.Fatalf("response body: %v in %q", err, out)
			}
		}
		if n := served.Load(); n != answered {
			t.Fatalf("%d requests served, %d answered: %q", n, answered, out)
		}
	})
}

// TestHeadCheck feeds heads in pieces of every size: the verdict must not
// depend on how the bytes arrive.
func TestHeadCheck(t *testing.T) {
	tests := []struct {
		head string
		want route.Refusal // 0 when acceptable
	}{
		{"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: h\r\nX-Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: h\r\nX: a:b\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 0}, // after the head
		{"GET / HTTP/1.1\r\nCONTENT-LENGTH: 3\r\nTransfer-Encoding: chunked\r\n\r\n", route.RefuseChunkedLength},
		{"GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n 2\r\n\r\n", route.RefuseMalformed},
		{"GET / HTTP/1.1\nHost: h\r\n\r\n", route.RefuseMalformed},
		{"GET / HTTP/1.1\r\nHost: h\n\n", route.RefuseMalformed},
		{"GET / HTTP/1.1\r\n" + strings.Repeat("X: x\r\n", route.MaxHeaders) + "\r\n", 0},
		{"GET / HTTP/1.1\r\n" + strings.Repeat("X: x\r\n", route.MaxHeaders+1) + "\r\n", route.RefuseTooManyHeaders},
	}
	for _, tc := range tests {
		for size := 1; size <= len(tc.head); size++ {
			var h headCheck
			done := false
			for i := 0; i < len(tc.head) && !done; i += size {
				done = h.scan([]byte(tc.head[i:min(i+size, len(tc.head))]))
			}
			if !done || h.problem(route.MaxHeaders) != tc.want {
				t.Fatalf("%q in pieces of %d: done %v, problem %d, want %d", tc.head, size, done, h.problem(route.MaxHeaders), tc.want)
			}
		}
	}
}
