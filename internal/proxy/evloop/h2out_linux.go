package evloop

// An HTTP/2 connection's output, a client's (h2conn) and an upstream's
// (h2up) alike: the frames of a loop iteration (and those a slow peer
// left unread) wait in the connection's own buffer (down.out, up.out)
// and, past it, in a short list of pooled buffers of bigBufSize, written
// with one writev. Appending to one buffer instead grew it past
// bigBufSize whenever two streams' full DATA frames met in an iteration,
// and a grown buffer is not pooled: about the body's size was allocated
// per large response (docs/bench/proxy.md, "Round 29") and per large
// upload to an HTTP/2 cluster ("Round 37").

import (
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
)

// maxOutIov bounds the buffers one writev takes: h2MaxOut and the frames
// of the iteration that passed it fit in fewer; any more go in the next.
const maxOutIov = 16

// h2Out is an HTTP/2 connection's output. buf and off point at the
// connection's own buffer and how much of it was written (down.out and
// outOff, up.out and outOff), which the connection's other code (its
// flush, its close) sees as any connection's; more holds what did not fit
// in it, each buffer filled to its capacity.
type h2Out struct {
	buf   *[]byte
	off   *int
	more  [][]byte // output past *buf, in buffers of bigBufSize
	moreN int      // bytes in more
}

// h2OutTo returns the output of a connection whose own buffer is *buf,
// written up to *off.
func h2OutTo(buf *[]byte, off *int) h2Out { return h2Out{buf: buf, off: off} }

// h2OutAdd appends b to q: the last buffer filled to its capacity (one of
// bufSize swapped for one of bigBufSize first), the rest in buffers of
// bigBufSize from the free list. A frame appended in pieces (h2uSendData)
// takes the same buffers as one appended whole.
func (l *loop) h2OutAdd(q *h2Out, b []byte) {
	if len(q.more) == 0 && *q.off == len(*q.buf) {
		// All taken (the connection's flush had not yet given the buffer
		// back: over TLS, its records pending): refilled from its start,
		// so what is chained past it always follows bytes not yet written
		// in it, which is all the connections' flushes test (flushUp,
		// flushDown); else b, past a full buffer, went all into the chain.
		*q.buf, *q.off = (*q.buf)[:0], 0
	}
	if *q.buf == nil {
		*q.buf, *q.off = l.getBuf(), 0
	}
	if len(q.more) == 0 {
		out := *q.buf
		if len(out)+len(b) <= cap(out) || cap(out) == bufSize && len(out)+len(b) <= bigBufSize {
			*q.buf = l.appendBuf(out, b) // the common case: one buffer
			return
		}
		if cap(out) == bufSize {
			*q.buf = append(l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize), out...)
			l.putBuf(out)
		}
	}
	l.h2OutFill(q, b)
}

// h2OutFill fills q's last buffer and chains new ones of bigBufSize for
// what does not fit.
func (l *loop) h2OutFill(q *h2Out, b []byte) {
	for {
		tail := q.buf
		if n := len(q.more); n > 0 {
			tail = &q.more[n-1]
		}
		k := min(len(b), cap(*tail)-len(*tail))
		*tail = append(*tail, b[:k]...)
		if len(q.more) > 0 {
			q.moreN += k
		}
		b = b[k:]
		if len(b) == 0 {
			return
		}
		q.more = append(q.more, l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize))
	}
}

// len is how many bytes q holds not yet written.
func (q *h2Out) len() int { return len(*q.buf) - *q.off + q.moreN }

// dataMax is the most payload the next DATA frame onto q may carry for
// a peer whose SETTINGS_MAX_FRAME_SIZE is maxFrame: no more than q has
// room for below h2MaxOut, but one frame of RFC 9113's initial size
// (h2MaxFrame) at least. A stream sends while q holds no more than
// h2MaxOut (h2Push, h2uPush), so q never holds more than h2MaxOut and
// one such frame of DATA, whatever size the peer allows (Go's server
// allows 1 MiB; the upstream's side sends a retry's kept body, up to
// route.MaxRetryBuffer, as fast as the windows let it).
func (q *h2Out) dataMax(maxFrame uint32) int {
	return min(int(maxFrame), max(h2MaxOut-q.len(), h2MaxFrame))
}

// h2OutWrite writes q from its offset on to fd: its buffers in one
// writev, or over TLS (tc set) up to tlsBatch of them sealed and sent
// with one write (writeOut).
func (l *loop) h2OutWrite(q *h2Out, fd int, tc *tlsrec.Conn) (int, error) {
	b := (*q.buf)[*q.off:]
	if len(q.more) == 0 && tc == nil {
		return rawWrite(fd, b)
	}
	bufs := append(l.outv[:0], b)
	bufs = append(bufs, q.more[:min(len(q.more), maxOutIov-1)]...)
	return l.writeOut(fd, tc, bufs)
}

// writeOut writes bufs, in order, to fd: with one writev, or over TLS
// (tc set) with one write of the records of up to tlsBatch bytes of them
// (writeTLSv). It clears bufs, the loop's outv: they go back to free
// lists, and the loop keeps no pointer to them.
func (l *loop) writeOut(fd int, tc *tlsrec.Conn, bufs [][]byte) (int, error) {
	defer clear(bufs)
	if tc != nil {
		return writeTLSv(fd, tc, bufs)
	}
	iov := l.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			iov = appendIov(iov, b)
		}
	}
	if len(iov) == 0 {
		return 0, nil
	}
	return rawWritev(fd, iov)
}

func appendIov(iov []unix.Iovec, b []byte) []unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return append(iov, v)
}

// h2Wrote moves q on by n bytes written: the buffers written whole go
// back to the free list, the next becomes the connection's own.
func (l *loop) h2Wrote(q *h2Out, n int) {
	*q.off += n
	for len(q.more) > 0 && *q.off >= len(*q.buf) {
		*q.off -= len(*q.buf)
		l.putBuf(*q.buf)
		*q.buf = q.more[0]
		q.moreN -= len(*q.buf)
		copy(q.more, q.more[1:])
		q.more[len(q.more)-1] = nil
		q.more = q.more[:len(q.more)-1]
	}
}

// h2OutRelease gives back the buffers chained past the connection's own
// (its close puts that one back: forgetDown, closeUp).
func (l *loop) h2OutRelease(q *h2Out) {
	for i, b := range q.more {
		l.putBuf(b)
		q.more[i] = nil
	}
	q.more, q.moreN = q.more[:0], 0
}
