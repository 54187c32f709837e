package evloop

import (
	"bytes"
	"testing"
)

// TestH2UpPendingPartlySentPooled: a request body waiting on an upstream
// stream (s.pending, a buffer of bufSize from the free list) that the
// upstream's window lets out in two pushes goes back to the free list
// whole once sent, or once the stream ends with part of it sent
// (h2uDone); a round of it takes no new buffer once the lists hold one,
// and bytes queued behind a part sent go out after it, in order. Sliced
// past what each push sent (pendingSent), the buffer lost that much
// capacity and putBuf dropped it: a new buffer of bufSize for every body
// the upstream's window cut.
func TestH2UpPendingPartlySentPooled(t *testing.T) {
	l := &loop{}
	c := testH2Up(l, h2MaxFrame)
	c.u.pool = &clusterPool{}
	body := make([]byte, 3000)
	for i := range body {
		body[i] = byte(i % 251)
	}
	// No client connection (st.c nil, st.sd no retry policy); blocked: not
	// armed (no timers here); replayed: no credit owed to the client.
	st := &h2stream{sd: &down{}}
	s := &h2ustream{c: c, id: 1, st: st, blocked: true, replayed: 1 << 62}
	st.us = s
	c.streams[1] = s
	push := func() {
		s.window = 1000
		l.h2uBody(st, body, false) // queued; the window lets 1000 bytes out
		s.window = 1 << 20
		l.h2uPush(s) // and then the rest
	}
	written := func() { // flushUp's work, the socket taking all
		l.h2Wrote(&c.out, c.out.len())
		l.putBuf(c.u.out)
		c.u.out, c.u.outOff, c.dirty, l.h2updirty = nil, 0, false, l.h2updirty[:0]
	}
	backWhole := func(p *byte) bool {
		for _, b := range l.bufs {
			if &b[:1][0] == p && cap(b) == bufSize {
				return true
			}
		}
		return false
	}
	s.window = 1000
	l.h2uBody(st, body, false)
	held := &s.pending[:1][0]
	s.window = 1 << 20
	l.h2uPush(s)
	sent, _ := outBytes(&c.out)
	written()
	if got := readData(t, sent)[1]; !bytes.Equal(got, body) || s.unsent() != 0 {
		t.Fatalf("%d bytes of the body sent, %d left unsent; want its %d, in order", len(got), s.unsent(), len(body))
	}
	if !backWhole(held) {
		t.Fatalf("the upstream stream's pending buffer is not back in the free list (%d buffers of bufSize there); want it back whole once sent", len(l.bufs))
	}
	allocs := testing.AllocsPerRun(20, func() {
		push()
		written()
	})
	if allocs > 0 {
		t.Fatalf("a body sent in two pushes allocated %v times a round; want none, its buffer from the free list and back", allocs)
	}
	// More queued behind a part sent: the sent bytes make room, the
	// rest goes in order.
	more := bytes.Repeat([]byte("more"), (bufSize-len(body))/4+100)
	s.window = 1000
	l.h2uBody(st, body, false)
	s.window = 0
	l.h2uBody(st, more, false)
	if cap(s.pending) != bufSize || s.pendOff != 0 {
		t.Fatalf("%d bytes queued behind 1000 of %d sent: a buffer of %d, %d bytes sent in it; want the same buffer, the sent bytes dropped",
			len(more), len(body), cap(s.pending), s.pendOff)
	}
	s.window = 1 << 20
	l.h2uPush(s)
	sent, _ = outBytes(&c.out)
	written()
	if got := readData(t, sent)[1]; !bytes.Equal(got, append(bytes.Clone(body), more...)) {
		t.Fatalf("%d bytes sent; want the %d queued, in order", len(got), len(body)+len(more))
	}
	// The stream ends with part of its pending body sent: the buffer goes
	// back whole.
	s.window = 1000
	l.h2uBody(st, body, false)
	held = &s.pending[:1][0]
	l.h2uDone(s)
	written()
	if !backWhole(held) {
		t.Fatalf("the pending buffer of an upstream stream ended with 1000 of %d bytes sent is not back in the free list; want it back whole", len(body))
	}
}
