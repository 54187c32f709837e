package evloop

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2RequestBodyCreditToHTTP1: an HTTP/2 client's request body sent
// to an HTTP/1.1 upstream is credited back in one WINDOW_UPDATE per
// window (stream and connection) once half the window's bytes went
// upstream, as nghttp2 credits, and not before
// (TestH2UpstreamFlowControl covers an HTTP/2 upstream).
func TestH2RequestBodyCreditToHTTP1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan int, 64) // body bytes the upstream read, as they come
	go func() {               // ends when ln closes (cleanup) or the proxy's connection does
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				got <- n
			}
			if err != nil {
				return
			}
		}
	}()
	srv := startH2To(t, ln.Addr().String())
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post", "content-length", "60000")
	upGot := 0
	// send sends the client's next 20,000 bytes (two frames) and waits
	// for the upstream to read them.
	send := func() {
		t.Helper()
		_ = h.fr.WriteData(1, false, bytes.Repeat([]byte("b"), 10000))
		_ = h.fr.WriteData(1, false, bytes.Repeat([]byte("b"), 10000))
		want := upGot + 20000
		for upGot < want {
			select {
			case n := <-got:
				upGot += n
			case <-time.After(10 * time.Second):
				t.Fatalf("upstream read %d of %d body bytes in 10 s", upGot, want)
			}
		}
	}
	// credited reads the client's frames for 300 ms: its WINDOW_UPDATEs,
	// stream and increment.
	credited := func() [][2]uint32 {
		var incs [][2]uint32
		_ = h.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		defer h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				if err == io.EOF {
					t.Fatal("the proxy closed the connection")
				}
				return incs
			}
			if w, ok := f.(*http2.WindowUpdateFrame); ok {
				incs = append(incs, [2]uint32{w.StreamID, w.Increment})
			}
		}
	}
	send()
	if c := credited(); len(c) != 0 {
		t.Fatalf("client credited %v after 20000 bytes went upstream; want nothing (under half the window)", c)
	}
	send()
	c := credited()
	slices.SortFunc(c, func(a, b [2]uint32) int { return int(a[0]) - int(b[0]) })
	if !slices.Equal(c, [][2]uint32{{0, 40000}, {1, 40000}}) {
		t.Fatalf("client credited %v (stream, increment) after 40000 bytes went upstream; want [[0 40000] [1 40000]]", c)
	}
}
