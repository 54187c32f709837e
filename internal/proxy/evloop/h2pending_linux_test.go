package evloop

import (
	"bytes"
	"testing"
)

// TestH2PendingPartlySentPooled: a response body waiting on a client's
// stream (st.pending, a buffer of bufSize from the free list) that its
// window lets out in two pushes goes back to the free list whole once
// sent, and a round of it (queued, sent in part, then the rest) takes no
// new buffer once the lists hold one. Sliced past what each push sent,
// the buffer lost that much capacity and putBuf dropped it: a new buffer
// of bufSize for every body its window cut.
func TestH2PendingPartlySentPooled(t *testing.T) {
	l := &loop{}
	d := &down{}
	c := &h2conn{d: d, streams: map[uint32]*h2stream{}, maxFrame: h2MaxFrame, sendWindow: 1 << 30}
	c.wr, c.out = h2writer{c, l}, h2OutTo(&d.out, &d.outOff)
	c.fr = newH2Framer(c.wr, &c.rd, h2UpMaxHeaderList)
	d.h2c = c
	body := make([]byte, 3000)
	for i := range body {
		body[i] = byte(i % 251)
	}
	// blocked: not armed again (no timers here).
	st := &h2stream{c: c, id: 1, sd: &down{}, blocked: true}
	push := func() {
		st.window = 1000
		l.h2Push(st) // the window lets 1000 bytes out
		st.window = 1 << 20
		l.h2Push(st) // and then the rest
	}
	written := func() { // flushDown's work, the socket taking all
		l.h2Wrote(&c.out, c.out.len())
		l.putBuf(d.out)
		d.out, d.outOff = nil, 0
		l.h2dirty, c.dirty = l.h2dirty[:0], false
	}
	l.h2Queue(st, body)
	held := &st.pending[:1][0]
	push()
	sent, _ := outBytes(&c.out)
	written()
	if got := readData(t, sent)[1]; !bytes.Equal(got, body) || len(st.pending) != 0 {
		t.Fatalf("%d bytes of the body sent, %d left pending; want its %d, in order", len(got), len(st.pending), len(body))
	}
	back := false
	for _, b := range l.bufs {
		back = back || &b[:1][0] == held && cap(b) == bufSize
	}
	if !back {
		t.Fatalf("the stream's pending buffer is not back in the free list (%d buffers of bufSize there); want it back whole once sent", len(l.bufs))
	}
	allocs := testing.AllocsPerRun(20, func() {
		l.h2Queue(st, body)
		push()
		written()
	})
	if allocs > 0 {
		t.Fatalf("a body sent in two pushes allocated %v times a round; want none, its buffer from the free list and back", allocs)
	}
	// More queued behind a part sent: the sent bytes make room, the
	// rest goes in order.
	more := bytes.Repeat([]byte("more"), (bufSize-len(body))/4+100)
	l.h2Queue(st, body)
	st.window = 1000
	l.h2Push(st)
	l.h2Queue(st, more)
	if cap(st.pending) != bufSize || st.pendOff != 0 {
		t.Fatalf("%d bytes queued behind 1000 of %d sent: a buffer of %d, %d bytes sent in it; want the same buffer, the sent bytes dropped",
			len(more), len(body), cap(st.pending), st.pendOff)
	}
	st.window = 1 << 20
	l.h2Push(st)
	sent, _ = outBytes(&c.out)
	written()
	if got := readData(t, sent)[1]; !bytes.Equal(got, append(bytes.Clone(body), more...)) {
		t.Fatalf("%d bytes sent; want the %d queued, in order", len(got), len(body)+len(more))
	}
}
