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
	h.headers(1, false, ":path", "/post", "content-length", "600000")
	upGot := 0
	// send sends the client's next quarter window (creditedAtHalf) and
	// waits for the upstream to read it.
	send := func() {
		t.Helper()
		sendQuarter(h)
		want := upGot + quarterWindow
		for upGot < want {
			select {
			case n := <-got:
				upGot += n
			case <-time.After(10 * time.Second):
				t.Fatalf("upstream read %d of %d body bytes in 10 s", upGot, want)
			}
		}
	}
	creditedAtHalf(t, h, send)
}

// windowUpdates reads fr's frames from c for 300 ms: the WINDOW_UPDATEs
// among them, stream and increment, in stream order.
func windowUpdates(t *testing.T, c net.Conn, fr *http2.Framer) [][2]uint32 {
	t.Helper()
	var incs [][2]uint32
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	defer c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if err == io.EOF {
				t.Fatal("the proxy closed the connection")
			}
			slices.SortStableFunc(incs, func(a, b [2]uint32) int { return int(a[0]) - int(b[0]) })
			return incs
		}
		if w, ok := f.(*http2.WindowUpdateFrame); ok {
			incs = append(incs, [2]uint32{w.StreamID, w.Increment})
		}
	}
}

// quarterWindow is a quarter of the window the loops give (wantWindow):
// half of what they let a peer use before they credit it.
const quarterWindow = wantWindow / 4

// sendQuarter sends quarterWindow bytes of stream 1's body from the
// client h, in frames of 16,384.
func sendQuarter(h *h2Raw) {
	b := bytes.Repeat([]byte("b"), 16384)
	for range quarterWindow / len(b) {
		_ = h.fr.WriteData(1, false, b)
	}
}

// creditedAtHalf checks the client h's credits for its stream 1 as send
// sends a quarter window more of its body to the upstream: after the
// connection's first WINDOW_UPDATE (which opens it to wantConnWindow), none
// after the first quarter (under half the window), then one
// WINDOW_UPDATE of half the window for the stream and one for the
// connection.
func creditedAtHalf(t *testing.T, h *h2Raw, send func()) {
	t.Helper()
	if c := windowUpdates(t, h.c, h.fr); !slices.Equal(c, [][2]uint32{{0, wantConnWindow - 65535}}) {
		t.Fatalf("client credited %v before any body; want the connection's opening only, [[0 %d]]", c, wantConnWindow-65535)
	}
	send()
	if c := windowUpdates(t, h.c, h.fr); len(c) != 0 {
		t.Fatalf("client credited %v after %d bytes went upstream; want nothing (under half the window)", c, quarterWindow)
	}
	send()
	if c := windowUpdates(t, h.c, h.fr); !slices.Equal(c, [][2]uint32{{0, 2 * quarterWindow}, {1, 2 * quarterWindow}}) {
		t.Fatalf("client credited %v (stream, increment) after %d bytes went upstream; want [[0 %[2]d] [1 %[2]d]]", c, 2*quarterWindow)
	}
}
