package evloop

// An HTTP/2 client connection's output: the frames of a loop iteration
// (and those a slow client left unread) wait in the connection's d.out and,
// past it, in a short list of pooled buffers of bigBufSize (h2conn.more),
// written with one writev. Appending to one buffer instead grew it past
// bigBufSize whenever two streams' full DATA frames met in an iteration,
// and a grown buffer is not pooled: about the body's size was allocated
// per large response (docs/bench/proxy.md, "Round 29").

import "golang.org/x/sys/unix"

// maxOutIov bounds the buffers one writev takes: h2MaxOut and the frames
// of the iteration that passed it fit in fewer; any more go in the next.
const maxOutIov = 16

// h2Out appends b, frames the Framer wrote, to c's output: the last
// buffer filled to its capacity (one of bufSize swapped for one of
// bigBufSize first), the rest in buffers of bigBufSize from the free list.
func (l *loop) h2Out(c *h2conn, b []byte) {
	d := c.d
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	if len(c.more) == 0 {
		if len(d.out)+len(b) <= cap(d.out) || cap(d.out) == bufSize && len(d.out)+len(b) <= bigBufSize {
			d.out = l.appendBuf(d.out, b) // the common case: one buffer
			return
		}
		if cap(d.out) == bufSize {
			small := d.out
			d.out = append(l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize), small...)
			l.putBuf(small)
		}
	}
	l.h2OutFill(c, b)
}

// h2OutFill fills c's last output buffer and chains new ones of
// bigBufSize for what does not fit.
func (l *loop) h2OutFill(c *h2conn, b []byte) {
	d := c.d
	for {
		tail := &d.out
		if n := len(c.more); n > 0 {
			tail = &c.more[n-1]
		}
		k := min(len(b), cap(*tail)-len(*tail))
		*tail = append(*tail, b[:k]...)
		if len(c.more) > 0 {
			c.moreN += k
		}
		b = b[k:]
		if len(b) == 0 {
			return
		}
		c.more = append(c.more, l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize))
	}
}

// outLen is how many bytes c's output holds not yet written.
func (c *h2conn) outLen() int { return len(c.d.out) - c.d.outOff + c.moreN }

// h2WriteOut writes c's output from d.out[d.outOff:] on: the buffers in
// one writev, or over TLS the first (writeTLS seals what it is given
// whole, so a buffer at a time keeps the records pending to one's size).
func (l *loop) h2WriteOut(d *down) (int, error) {
	c := d.h2c
	if d.tls != nil || len(c.more) == 0 {
		return l.writeSock(d, d.out[d.outOff:])
	}
	iov := l.iov[:0]
	iov = appendIov(iov, d.out[d.outOff:])
	for _, b := range c.more[:min(len(c.more), maxOutIov-1)] {
		iov = appendIov(iov, b)
	}
	return rawWritev(d.fd, iov)
}

func appendIov(iov []unix.Iovec, b []byte) []unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return append(iov, v)
}

// h2Wrote moves c's output on by n bytes written: the buffers written
// whole go back to the free list, the next becomes d.out.
func (l *loop) h2Wrote(d *down, n int) {
	c := d.h2c
	d.outOff += n
	for len(c.more) > 0 && d.outOff >= len(d.out) {
		d.outOff -= len(d.out)
		l.putBuf(d.out)
		d.out = c.more[0]
		c.moreN -= len(d.out)
		copy(c.more, c.more[1:])
		c.more[len(c.more)-1] = nil
		c.more = c.more[:len(c.more)-1]
	}
}

// h2OutRelease gives back the buffers chained past d.out (forgetDown puts
// d.out back).
func (l *loop) h2OutRelease(c *h2conn) {
	for i, b := range c.more {
		l.putBuf(b)
		c.more[i] = nil
	}
	c.more, c.moreN = c.more[:0], 0
}
