package evloop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// feed scans a head given in pieces of n bytes, as reads would bring it.
func feed(t testing.TB, in []byte, n int) (int, error) {
	var s headScanner
	for end := n; ; end += n {
		end = min(end, len(in))
		got, err := s.scan(in[:end], maxHeadBytes)
		if err != nil || got > 0 || end == len(in) {
			return got, err
		}
	}
}

func TestScanInPieces(t *testing.T) {
	req := []byte("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nGET /next HTTP/1.1\r\n")
	want := bytes.Index(req, []byte("\r\n\r\n")) + 4
	for n := 1; n <= len(req); n++ {
		got, err := feed(t, req, n)
		if err != nil || got != want {
			t.Fatalf("pieces of %d: %d, %v; want %d", n, got, err, want)
		}
	}
	var r request
	if err := parseRequest(req[:want], &r, true, proxyroute.MaxHeaders, false); err != nil {
		t.Fatal(err)
	}
	if string(r.method.of(req)) != "GET" || string(r.target.of(req)) != "/a?b=c" || string(r.host.of(req)) != "x" || r.minor != 1 || len(r.lines) != 2 {
		t.Errorf("parsed %+v", r)
	}
}

// TestScanRequestEmptyLines: CR and LF bytes before a request line are
// skipped, in any pieces, and counted in the head's size.
func TestScanRequestEmptyLines(t *testing.T) {
	req := []byte("\r\n\n\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n")
	for n := 1; n <= len(req); n++ {
		var s headScanner
		for end := n; ; end += n {
			end = min(end, len(req))
			skip, got, err := s.scanRequest(req[:end], maxHeadBytes)
			if err != nil || got > 0 || end == len(req) {
				if err != nil || skip != 6 || got != 6+len("GET / HTTP/1.1\r\nHost: x\r\n\r\n") {
					t.Fatalf("pieces of %d: %d, %d, %v", n, skip, got, err)
				}
				break
			}
		}
	}
	var s headScanner
	if _, _, err := s.scanRequest([]byte(strings.Repeat("\r\n", 100)+"GET / HTTP/1.1\r\n"), 150); err != errTooLarge {
		t.Errorf("200 bytes of empty lines under a 150-byte limit: %v, want %v", err, errTooLarge)
	}
}

func TestScanIncomplete(t *testing.T) {
	for _, in := range []string{"", "GET", "GET / HTTP/1.1\r", "GET / HTTP/1.1\r\nHost: x\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r"} {
		var s headScanner
		if n, err := s.scan([]byte(in), maxHeadBytes); n != 0 || err != nil {
			t.Errorf("%q: %d %v, want incomplete", in, n, err)
		}
	}
}

func TestParseRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		in     string
		status int
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"GET / HTTP/1.0\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\n\r\n", 0}, // answered by dispatch
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400},
		{"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 426},
		{"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 426},
		{"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 426},
		{"GET / HTTP/1.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400}, // both framings first, as Envoy
		{"GET / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 501},
		{"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: a,b,c,d,e,f,g,h,i\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: a,b,c,d,e,f,g,h,close,i\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: a,b,c,d,e\r\nConnection: f,g,h,i,j\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: a,,b,,c,,d,,e,,f,,g,,h,,i\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Forwarded-For\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: :path\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET /%4 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET /%41?q=%zz HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\nExpect: other\r\n\r\n", 0}, // forwarded, as Envoy forwards it
	} {
		var r request
		err := parseRequest([]byte(tc.in), &r, true, proxyroute.MaxHeaders, false)
		var pe *parseError
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.status != 0 && (!errors.As(err, &pe) || pe.refusal.Status() != tc.status):
			t.Errorf("%q: %v, want %d", tc.in, err, tc.status)
		}
	}
}

// TestParseRequestHTTP10: without accept_http_10, an HTTP/1.0 request
// (with or without a chunked body) is refused as Envoy refuses it: 426.
func TestParseRequestHTTP10(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"} {
		var r request
		if err := parseRequest([]byte(in), &r, false, proxyroute.MaxHeaders, false); err != errLowVersion {
			t.Errorf("%q: %v, want %v", in, err, errLowVersion)
		}
	}
}

func TestHopByHop(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nTE2: gzip\r\nX-Keep: 2\r\n\r\n")
	var r request
	if err := parseRequest(in, &r, true, proxyroute.MaxHeaders, false); err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, h := range r.lines {
		if !h.hop {
			kept = append(kept, string(h.name.of(in)))
		}
	}
	// TE lines are not forwarded as they came: "te: trailers" is, in
	// their place (teTrailers).
	if got := strings.Join(kept, ","); got != "Host,TE2,X-Keep" || !r.closeAfter || !r.teTrailers {
		t.Errorf("kept %s close %v te: trailers %v", got, r.closeAfter, r.teTrailers)
	}
}

// TestParseExpect: a head's Expect lines ask for 100-continue when their
// value, the lines joined, is 100-continue (proxyroute.ExpectLine): they
// are then not forwarded, and are otherwise.
func TestParseExpect(t *testing.T) {
	for _, tc := range []struct {
		lines string
		want  string // expectContinue, then the Expect lines forwarded
	}{
		{"Expect: 100-continue\r\n", "true "},
		{"Expect:  100-CONTINUE \r\n", "true "},
		{"Expect:\r\nExpect: 100-continue\r\n", "true "},
		{"Expect: foo\r\n", "false foo"},
		{"Expect: 100-continue, foo\r\n", "false 100-continue, foo"},
		{"Expect: 100-continue\r\nExpect: 100-continue\r\n", "false 100-continue|100-continue"},
		{"Expect: 100-continue\r\nExpect: foo\r\n", "false 100-continue|foo"},
		{"Expect:\r\n", "false "},
	} {
		in := []byte("POST / HTTP/1.1\r\nHost: x\r\n" + tc.lines + "Content-Length: 1\r\n\r\n")
		var r request
		if err := parseRequest(in, &r, true, proxyroute.MaxHeaders, false); err != nil {
			t.Errorf("%q: %v", tc.lines, err)
			continue
		}
		var kept []string
		for _, h := range r.lines {
			if !h.hop && equalFold(h.name.of(in), "expect") {
				kept = append(kept, string(h.value.of(in)))
			}
		}
		if got := fmt.Sprintf("%v %s", r.expectContinue, strings.Join(kept, "|")); got != tc.want {
			t.Errorf("%q: %s, want %s", tc.lines, got, tc.want)
		}
	}
}

func TestHTTP10KeepAlive(t *testing.T) {
	var r request
	in := []byte("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if err := parseRequest(in, &r, true, proxyroute.MaxHeaders, false); err != nil || r.closeAfter {
		t.Errorf("HTTP/1.0 keep-alive: %v close %v", err, r.closeAfter)
	}
	in = []byte("GET / HTTP/1.0\r\n\r\n")
	if err := parseRequest(in, &r, true, proxyroute.MaxHeaders, false); err != nil || !r.closeAfter {
		t.Errorf("HTTP/1.0: %v close %v", err, r.closeAfter)
	}
}

func TestParseResponse(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: app\r\nX-A: b\r\nConnection: keep-alive\r\n\r\n")
	var r response
	if err := parseResponse(in, &r); err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || !r.hasLength || r.contentLength != 5 || r.closeAfter || r.chunked {
		t.Errorf("%+v", r)
	}
	for _, bad := range []string{"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"} {
		if err := parseResponse([]byte(bad), &r); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestChunkScanner(t *testing.T) {
	body := "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n"
	next := "HTTP/1.1 200 OK\r\n"
	in := []byte(body + next)
	for n := 1; n <= len(in); n++ {
		var c chunkScanner
		total, done := 0, false
		for p := 0; p < len(in) && !done; p += n {
			k, d, err := c.scan(in[p:min(p+n, len(in))])
			if err != nil {
				t.Fatalf("pieces of %d: %v", n, err)
			}
			total += k
			done = d
		}
		if !done || total != len(body) {
			t.Fatalf("pieces of %d: %d bytes, done %v; want %d", n, total, done, len(body))
		}
	}
	for _, bad := range []string{"x\r\n", "\r\n", "5\r\nhelloX", "5\nhello", "1234567890abcdef0\r\n"} {
		var c chunkScanner
		if _, _, err := c.scan([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzRequestHead feeds arbitrary bytes to the scanner in pieces and then
// to the parser: no panic, the same head whatever the pieces, and every
// span inside the head.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\nabc",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"\r\n\r\n", "GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 01\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: \xff\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\ncontent-type: text/plain\r\nContent-Type: application/grpc\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Type:  application/grpc+proto \r\n\r\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, piece uint8) {
		n := int(piece)%16 + 1
		whole, werr := feed(t, in, len(in)+1)
		got, err := feed(t, in, n)
		if got != whole || (err == nil) != (werr == nil) {
			t.Fatalf("in pieces of %d: %d %v; whole: %d %v", n, got, err, whole, werr)
		}
		if err != nil || got == 0 {
			return
		}
		head := in[:got]
		var r request
		if err := parseRequest(head, &r, true, proxyroute.MaxHeaders, false); err != nil {
			var pe *parseError
			if !errors.As(err, &pe) || pe.refusal == 0 {
				t.Fatalf("error %v is not a parse error", err)
			}
			return
		}
		check := func(s span) {
			if s.off < 0 || s.end < s.off || int(s.end) > len(head) {
				t.Fatalf("span %v outside the head of %d bytes", s, len(head))
			}
		}
		check(r.method)
		check(r.target)
		check(r.host)
		for _, h := range r.lines {
			check(h.name)
			check(h.value)
			check(h.line)
		}
		for _, s := range r.connTokens[:r.nConn] {
			check(s)
		}
		// No more lenient than Go's own server: what the prototype
		// forwards, net/http reads too, with the same length and host.
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted a head net/http refuses (%v): %q", err, head)
		}
		if r.hasLength && req.ContentLength != r.contentLength {
			t.Fatalf("content-length %d, net/http %d: %q", r.contentLength, req.ContentLength, head)
		}
		if !httpguts.ValidHostHeader(req.Host) {
			t.Fatalf("accepted host %q, which net/http's server refuses", req.Host)
		}
		if r.hasHost && req.Host != string(r.host.of(head)) {
			t.Fatalf("host %q, net/http %q: %q", r.host.of(head), req.Host, head)
		}
		// gRPC as the goroutine path tells it, from the first value.
		if grpc := proxyroute.IsGRPC(req.Header.Get("Content-Type")); r.grpc != grpc {
			t.Fatalf("gRPC %v, net/http's first content-type says %v: %q", r.grpc, grpc, head)
		}
	})
}

// FuzzChunked checks the chunk scanner gives the same end in any pieces.
func FuzzChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\nrest"), uint8(2))
	f.Add([]byte("a;x\r\n0123456789\r\n0\r\nT: 1\r\n\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, piece uint8) {
		n := int(piece)%16 + 1
		run := func(n int) (int, bool, bool) {
			var c chunkScanner
			total := 0
			for p := 0; p < len(in); p += n {
				k, done, err := c.scan(in[p:min(p+n, len(in))])
				if err != nil {
					return 0, false, true
				}
				total += k
				if done {
					return total, true, false
				}
			}
			return total, false, false
		}
		a, ad, ae := run(len(in) + 1)
		b, bd, be := run(n)
		if a != b || ad != bd || ae != be {
			t.Fatalf("whole %d %v %v, pieces of %d %d %v %v", a, ad, ae, n, b, bd, be)
		}
	})
}

// BenchmarkParseRequest: a typical proxied request head, found and
// parsed as the loops do it per request.
func BenchmarkParseRequest(b *testing.B) {
	head := []byte("GET /api/v1/items?id=42 HTTP/1.1\r\nHost: svc.local:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n" +
		"Connection: keep-alive\r\nX-Request-Id: 9f0c3c8e-6a54-4b7d-9d3a-2f7f0b4c1a11\r\n\r\n")
	var r request
	b.ReportAllocs()
	for b.Loop() {
		var s headScanner
		skip, n, err := s.scanRequest(head, maxHeadBytes)
		if err != nil || n != len(head) {
			b.Fatal(n, err)
		}
		if err := parseRequest(head[skip:n], &r, false, proxyroute.MaxHeaders, false); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseRequestAllocatesNothing: a request head is scanned and parsed
// without allocating, empty lines before it and a Connection header's
// tokens (named headers, close, keep-alive, http2-settings, TE) included,
// as the loops need.
func TestParseRequestAllocatesNothing(t *testing.T) {
	raw := []byte("\r\n\n\r\nPOST /api HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop, TE, HTTP2-Settings, connection\r\n" +
		"X-Hop: 1\r\nTE: gzip, trailers\r\nHTTP2-Settings: AAA\r\nContent-Length: 2\r\nX-Keep: 2\r\n\r\nab")
	var (
		scan headScanner
		req  request
		err  error
		skip int
		n    int
	)
	req.lines = make([]headerLine, 0, 16)
	allocs := testing.AllocsPerRun(100, func() {
		scan = headScanner{}
		skip, n, err = scan.scanRequest(raw, proxyroute.MaxHeadBytes)
		if err == nil {
			err = parseRequest(raw[skip:n], &req, true, proxyroute.MaxHeaders, false)
		}
	})
	if err != nil || skip != 5 || !req.teTrailers || req.nConn != 2 || allocs != 0 {
		t.Fatalf("err %v, skip %d, te: trailers %v, %d names; %v allocations per head", err, skip, req.teTrailers, req.nConn, allocs)
	}
}
