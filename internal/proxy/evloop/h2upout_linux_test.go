package evloop

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// testH2Up is an upstream HTTP/2 connection without a socket, for tests
// that drive its output: its peer's SETTINGS_MAX_FRAME_SIZE maxFrame, its
// connection window open.
func testH2Up(l *loop, maxFrame uint32) *h2up {
	c := &h2up{u: &up{}, streams: map[uint32]*h2ustream{}, maxFrame: maxFrame, sendWindow: 1 << 30}
	c.u.h2, c.out = c, h2OutTo(&c.u.out, &c.u.outOff)
	c.fr = newH2Framer(h2upWriter{c, l}, &c.rd, h2UpMaxHeaderList)
	return c
}

// outBytes is what q holds not yet written, and the capacities of the
// buffers that hold it.
func outBytes(q *h2Out) (b []byte, caps []int) {
	b = bytes.Clone((*q.buf)[*q.off:])
	caps = append(caps, cap(*q.buf))
	for _, m := range q.more {
		b = append(b, m...)
		caps = append(caps, cap(m))
	}
	return b, caps
}

// readData reads b's frames, all DATA, and returns each stream's
// payloads joined.
func readData(t *testing.T, b []byte) map[uint32][]byte {
	t.Helper()
	fr := http2.NewFramer(io.Discard, bytes.NewReader(b))
	fr.SetMaxReadFrameSize(1 << 24)
	got := map[uint32][]byte{}
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return got
		}
		d, ok := f.(*http2.DataFrame)
		if err != nil || !ok {
			t.Fatalf("the output's frames: %v %v, want DATA frames to its end", f, err)
		}
		got[d.StreamID] = append(got[d.StreamID], d.Data()...)
	}
}

// TestH2UpOutTakesPooledBuffers: an HTTP/2 upstream connection's output
// of two streams' full DATA frames, one stream's from a retry's kept chain
// (h2uSendData, in pieces), the other's through the Framer, both
// streams' frames meeting in one iteration, goes into buffers of the
// loop's two sizes from its free lists and grows none: once the lists
// hold what one iteration needs, the next allocate nothing. Appended to
// one buffer grown as it went (round 36's up.out), the output of about
// 130 KB grew past bigBufSize every iteration, and a grown buffer is not
// pooled: about the body's size allocated per large upload.
func TestH2UpOutTakesPooledBuffers(t *testing.T) {
	l := &loop{}
	c := testH2Up(l, h2MaxFrame)
	chained := bytes.Repeat([]byte("0123456789abcdef"), 4*h2MaxFrame/16)
	st := &h2stream{}
	st.replay.Append(l.chunks(), chained)
	s1 := &h2ustream{c: c, id: 1, st: st}
	framed := bytes.Repeat([]byte("ABCDEFGHIJKLMNOP"), h2MaxFrame/16)
	iteration := func() {
		s1.replayAt = st.replay.Base()
		for range 4 {
			l.h2uSendData(s1, false, h2MaxFrame)
			_ = c.fr.WriteData(3, false, framed)
		}
	}
	written := func() { // flushUp's work, the socket taking everything
		l.h2Wrote(&c.out, c.out.len())
		l.putBuf(c.u.out)
		c.u.out, c.u.outOff, c.dirty, l.h2updirty = nil, 0, false, l.h2updirty[:0]
	}
	iteration()
	b, caps := outBytes(&c.out)
	got := readData(t, b)
	if !bytes.Equal(got[1], chained) || !bytes.Equal(got[3], bytes.Repeat(framed, 4)) {
		t.Fatalf("stream 1 sent %d bytes, stream 3 %d; want the chain's %d and the Framer's %d, in order",
			len(got[1]), len(got[3]), len(chained), 4*len(framed))
	}
	for _, n := range caps {
		if n != bufSize && n != bigBufSize {
			t.Fatalf("the output's buffers have capacities %v; want each of bufSize or bigBufSize (pooled)", caps)
		}
	}
	written()
	allocs := testing.AllocsPerRun(20, func() {
		iteration()
		written()
	})
	if allocs > 0 {
		t.Fatalf("an iteration of two streams' full frames (%d bytes of output) allocated %v times; want none, its buffers from the free lists",
			len(b), allocs)
	}
}

// TestH2UpChainFramesNotHeavy: DATA framed from a retry's kept chain
// (h2uSendData) does not go through the connection's Framer, whose
// buffers it leaves as they were: the connection is not marked heavy
// for it (lightenH2 would renew a Framer that grew nothing). A large
// frame the Framer writes marks it.
func TestH2UpChainFramesNotHeavy(t *testing.T) {
	l := &loop{}
	c := testH2Up(l, h2MaxFrame)
	st := &h2stream{}
	st.replay.Append(l.chunks(), bytes.Repeat([]byte("x"), 3*h2MaxFrame))
	s := &h2ustream{c: c, id: 1, st: st, replayAt: st.replay.Base()}
	for range 3 {
		l.h2uSendData(s, false, h2MaxFrame)
	}
	if c.heavy {
		t.Fatal("three full DATA frames from a kept chain marked the connection heavy; the Framer wrote none of them")
	}
	_ = c.fr.WriteData(3, false, make([]byte, 2*h2KeepFrame))
	if !c.heavy {
		t.Fatalf("a DATA frame of %d bytes written by the Framer left the connection light; its write buffer grew", 2*h2KeepFrame)
	}
}

// TestH2UpOutBoundedPastMax: a request body sent to an upstream that
// allows DATA frames of 1 MiB (Go's server does) and opens its windows
// wide, while the socket takes nothing, holds the connection's output to
// h2MaxOut and one frame of RFC 9113's initial size past it (h2Out.dataMax),
// push after push as the socket takes it; every byte goes, in order.
// Framed up to the upstream's SETTINGS_MAX_FRAME_SIZE, a retry's kept body
// went as one frame of 1 MiB past h2MaxOut.
func TestH2UpOutBoundedPastMax(t *testing.T) {
	l := &loop{}
	c := testH2Up(l, 1<<20)
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i*7 + i>>12)
	}
	st := &h2stream{}
	st.replay.Append(l.chunks(), body)
	// blocked: not armed (no client connection here); replayed: no credit
	// owed to the client for these bytes.
	s := &h2ustream{c: c, id: 1, st: st, replayAt: st.replay.Base(), window: 1 << 30, blocked: true, replayed: 1 << 30}
	sent := pushBounded(t, l, &c.out, s.unsent, func() { l.h2uPush(s) }, func() { // flushUp's ending
		l.putBuf(c.u.out)
		c.u.out, c.u.outOff = nil, 0
	})
	if got := readData(t, sent)[1]; !bytes.Equal(got, body) {
		t.Fatalf("%d bytes of the body sent; want its %d, in order", len(got), len(body))
	}
}

// TestH2UpOutBuffersBackOnClose: an upstream connection that closes
// (failed, closed by the upstream, idle) with output not yet written,
// chained past its own buffer, gives every buffer of it back to the
// loop's free lists.
func TestH2UpOutBuffersBackOnClose(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) }) // fds[0] is the connection's: closeUp closes it
	l := &loop{fds: make([]fdRef, fds[0]+1)}
	c := testH2Up(l, h2MaxFrame)
	c.u.fd = fds[0]
	for range 10 {
		_ = c.fr.WriteData(1, false, make([]byte, h2MaxFrame))
	}
	held := 1 + len(c.out.more)
	if held < 3 {
		t.Fatalf("10 full DATA frames in %d buffers; want them chained past the connection's own", held)
	}
	free := len(l.bufs) + len(l.bigs) // the buffer of bufSize the first frame outgrew
	l.closeUp(c.u)
	if got := len(l.bufs) + len(l.bigs) - free; got != held || c.out.len() != 0 {
		t.Fatalf("%d buffers back in the free lists after the close, %d bytes still held; want all %d back", got, c.out.len(), held)
	}
}

// TestH2ClientOutBoundedPastMax: the client connection's side of the same
// rule (h2Push takes h2Out.dataMax too): a response body waiting on a
// stream, sent to a client that allows DATA frames of 1 MiB and opens its
// windows wide while its socket takes nothing, holds the connection's
// output to h2MaxOut and one frame of h2MaxFrame past it; every byte goes,
// in order.
func TestH2ClientOutBoundedPastMax(t *testing.T) {
	l := &loop{}
	d := &down{}
	c := &h2conn{d: d, streams: map[uint32]*h2stream{}, maxFrame: 1 << 20, sendWindow: 1 << 30}
	c.wr, c.out = h2writer{c, l}, h2OutTo(&d.out, &d.outOff)
	c.fr = newH2Framer(c.wr, &c.rd, h2UpMaxHeaderList)
	d.h2c = c
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i*7 + i>>12)
	}
	// blocked: not armed again (no timers here); the pending body is
	// the upstream's bytes as they waited on the stream.
	st := &h2stream{c: c, id: 1, sd: &down{}, window: 1 << 30, blocked: true, pending: bytes.Clone(body)}
	sent := pushBounded(t, l, &c.out, func() int { return len(st.pending) - st.pendOff }, func() { l.h2Push(st) }, func() { // flushDown's ending
		l.putBuf(d.out)
		d.out, d.outOff = nil, 0
	})
	if got := readData(t, sent)[1]; !bytes.Equal(got, body) {
		t.Fatalf("%d bytes of the body sent; want its %d, in order", len(got), len(body))
	}
}

// TestH2UpOutAfterFullHeadWritten: frames added to an upstream
// connection's output whose own buffer is full and all taken, with no
// buffer chained past it, are written by the next flushUp. Over TLS
// flushUp leaves that state when writeTLS sealed the whole buffer and
// the socket was full (its records pending, wantOut); a read's
// feedUpTLS then sends those records, so flushUp's loop, which tests
// out and the TLS records pending, saw nothing to write when the new
// frames went all past the full buffer, into the chain: it gave the
// buffer back and kept the chain, never written (the upload stalled).
func TestH2UpOutAfterFullHeadWritten(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	l := &loop{}
	c := testH2Up(l, h2MaxFrame)
	c.u.fd = fds[0]
	l.h2uOut(c, make([]byte, bigBufSize)) // fills a buffer of bigBufSize exactly
	l.h2Wrote(&c.out, c.out.len())        // writeTLS took it all
	_ = c.fr.WriteData(1, true, []byte("after"))
	want := c.out.len()
	l.flushUp(c.u)
	got := make([]byte, 2*want+1)
	n, _ := unix.Read(fds[1], got)
	n = max(n, 0) // -1: EAGAIN, nothing written
	if n != want || c.out.len() != 0 {
		t.Fatalf("flushUp wrote %d bytes and left %d in the output; want the frame's %d written", n, c.out.len(), want)
	}
	if d := readData(t, got[:n])[1]; string(d) != "after" {
		t.Fatalf("stream 1 sent %q; want %q", d, "after")
	}
}

// pushBounded calls push until unsent says nothing is left, checking
// after each that out holds no more than h2MaxOut and one frame of
// h2MaxFrame, and takes out's bytes after each as a socket taking all
// of them would (h2Wrote, then empty to release the own buffer); it
// returns every byte sent, in order.
func pushBounded(t *testing.T, l *loop, out *h2Out, unsent func() int, push, empty func()) []byte {
	t.Helper()
	var sent []byte
	for pushes := 0; unsent() > 0; pushes++ {
		if pushes > 100 {
			t.Fatalf("%d bytes unsent after %d pushes", unsent(), pushes)
		}
		push()
		if n, most := out.len(), h2MaxOut+9+h2MaxFrame; n > most {
			t.Fatalf("push %d left %d bytes in the output; want no more than h2MaxOut and one frame of h2MaxFrame, %d", pushes, n, most)
		}
		b, _ := outBytes(out)
		sent = append(sent, b...)
		l.h2Wrote(out, out.len())
		empty()
	}
	return sent
}
