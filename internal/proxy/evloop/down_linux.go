package evloop

// The downstream side of a loop: accepting clients, reading their
// requests and handing each head to dispatch (dispatch_linux.go),
// writing responses back, closing.

import (
	"bytes"
	"context"
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

func (l *loop) accept(ctx context.Context) {
	for range acceptBatch {
		fd, _, err := unix.Accept4(l.ln, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN):
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
				continue
			default:
				l.srv.log.Error("accept", "err", err)
			}
			return
		}
		ls := l.srv.cfg.Listener
		if l.srv.conns.Load() >= int64(l.srv.cfg.MaxConns) {
			// Counted before the close: a client that sees the close
			// may read the counter next (TestListenerConnectionCap).
			if ls != nil {
				ls.CxOverflow.Inc()
			}
			unix.Close(fd)
			continue
		}
		g := l.srv.gen.Load()
		var acc Accept
		if c := l.srv.cfg.Classify; c != nil && l.srv.cfg.HandOff != nil {
			if acc = c(fd); acc.HandOff {
				if ls != nil {
					ls.CxTotal.Inc() // the goroutine path counts it active
				}
				l.srv.cfg.HandOff(fd, nil, 0)
				continue
			}
			if acc.Chain != nil {
				g = acc.Chain.g
			}
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if g.tls != nil {
			l.startHandshake(ctx, fd, g)
			continue
		}
		// The head of the first request is timed from the accept: a
		// connection that sends nothing is closed after the timeout.
		d := &down{fd: fd, last: l.now, idx: len(l.downs), headStart: l.now + 1, gen: g}
		l.logAddrs(d, &acc)
		if g.retired.Load() {
			// Classified with a chain an update retired meanwhile: served
			// one request, if it comes in time, as a connection drained
			// before its first.
			g.st.cxDrainClose.Inc()
			d.drainNext, d.drainBy = true, l.now+int64(freshDrainGrace)
		}
		l.srv.conns.Add(1)
		l.downs = append(l.downs, d)
		l.setFd(fd, fdRef{d: d})
		l.watchDown(d)
		l.arm(d)
		d.gen.st.cxTotal.Inc()
		d.gen.st.cxActive.Inc()
		if ls != nil {
			ls.CxTotal.Inc()
			ls.CxActive.Inc()
		}
	}
}

func (l *loop) onDown(d *down, ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 && d.pausedIn && !d.wantOut {
		l.closeDown(d) // nothing else would hear of it
		return
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && d.wantOut {
		l.flushDown(d)
		if d.closed {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 && !d.pausedIn {
		l.readDown(d)
	}
}

// drain ends a connection whose last response is out: no more is
// written, and what the client still sends is read and dropped until it
// closes (or maxDrain, or drainFor).
func (l *loop) drain(d *down) {
	if d.draining {
		return
	}
	l.closeNotify(d)
	if err := unix.Shutdown(d.fd, unix.SHUT_WR); err != nil {
		l.closeDown(d)
		return
	}
	d.draining, d.last, d.drained = true, l.now, 0
	if d.in != nil {
		l.putBuf(d.in)
		d.in, d.off = nil, 0
	}
	if d.pausedIn {
		d.pausedIn = false
		l.watchDown(d)
	}
}

// readDown reads what the client sent (one read: the loop is level
// triggered, so what remains is reported again) and acts on it.
func (l *loop) readDown(d *down) {
	if d.draining {
		b := l.getBuf()
		n, err := rawRead(d.fd, b[:cap(b)])
		l.putBuf(b)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		d.drained += n
		if n == 0 || err != nil || d.drained > maxDrain {
			l.closeDown(d)
		}
		return
	}
	if d.in == nil {
		d.in, d.off = l.getBuf(), 0
	}
	if len(d.in) == cap(d.in) {
		switch {
		case d.off > 0:
			n := copy(d.in, d.in[d.off:])
			d.in, d.off = d.in[:n], 0
		case d.state == dsHead && cap(d.in) < d.headRoom():
			d.in = l.growBuf(d.in, 2*cap(d.in)) // doubles, as it did; from the free list at bigBufSize
		default:
			// Pipelined requests fill the buffer while one is in flight:
			// wait for its response before reading more.
			d.pausedIn = true
			l.watchDown(d)
			return
		}
	}
	if d.tls != nil {
		l.readDownTLS(d)
		return
	}
	n, err := rawRead(d.fd, d.in[len(d.in):cap(d.in)])
	if l.readEnded(d, n, err) {
		return
	}
	d.in = d.in[:len(d.in)+n]
	l.readIdle(d, d.in[len(d.in)-n:])
	l.process(d)
}

// headRoom is what d's read buffer may grow to while a head is read: a
// request head's limit and a read more, or on an HTTP/2 connection the
// header block it waits for (h2conn.blockMax) and the whole frame that
// passes it, which h2FrameLen waits for before it hands the block over.
func (d *down) headRoom() int {
	n := d.gen.limits.Bytes() + bufSize
	if d.h2c != nil {
		n = max(n, d.h2c.blockMax()+9+h2MaxFrame)
	}
	return n
}

// readIdle restarts the idle timeout for the client bytes b just read,
// unless they open no request: CR and LF while none is under way (between
// requests, after a body) do not, as bytes that open no stream do not
// restart Envoy's idle timer, so a client sending only them is closed at
// the idle timeout as on the goroutine path. An h2 connection's idle
// timeout moves with its streams (h2Deadline), not with its reads.
func (l *loop) readIdle(d *down, b []byte) {
	if d.h2c != nil {
		return
	}
	if d.state == dsHead && d.headStart == 0 && len(bytes.Trim(b, "\r\n")) == 0 {
		return
	}
	d.last = l.now
}

func (l *loop) releaseIn(d *down) {
	if d.in != nil && d.off == len(d.in) {
		l.putBuf(d.in)
		d.in, d.off = nil, 0
	}
}

// readEnded deals with a client read that brought nothing to parse: no
// bytes yet (the buffer is released until the next), or the client gone
// (EOF or an error). False means n bytes arrived.
func (l *loop) readEnded(d *down, n int, err error) bool {
	if err != nil && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) {
		l.releaseIn(d)
		return true
	}
	if err != nil || n == 0 {
		l.clientGone(d)
		return true
	}
	return false
}

// process handles the buffered client bytes: the next request head, or
// the body of the one in flight.
func (l *loop) process(d *down) {
	if d.h2c != nil {
		l.h2Input(d)
		return
	}
	if d.h2 != nil {
		defer l.h2Credit(d.h2)
	}
	was := d.processing
	d.processing = true
	defer func() { d.processing = was }()
	for !d.closed && !d.draining && d.h2c == nil {
		switch d.state {
		case dsHead:
			if d.closeAfter || d.handOffNext {
				return // the connection ends with the response in flight, or goes to HandOff once it is out
			}
			b := d.in[d.off:]
			if len(b) == 0 {
				l.releaseIn(d)
				return
			}
			if d.headStart == 0 {
				// The last request's: a reply to this head before
				// dispatch (a 400, a 408) is not shaped by them.
				d.head, d.grpc = false, false
			}
			skip, n, err := d.scan.scanRequest(b, d.gen.limits.Bytes())
			if err != nil {
				l.badRequest(d, err)
				return
			}
			if d.headStart == 0 && (n != 0 || d.scan.start < len(b)) {
				// From the request line's first byte: CR and LF before it
				// (after a body, say) open no request, as in Envoy's
				// codec, and the connection idles meanwhile (the idle
				// timeout, which they do not restart, readIdle, bounds
				// them; they count in the head's size).
				d.headStart = l.now + 1 // 0 means no head under way
			}
			if n == 0 {
				return
			}
			d.headStart = 0
			if skip > 0 && bytes.HasPrefix(b[skip:n], []byte(h2cPreface)) {
				// Not a connection preface: the goroutine path reads it as
				// an HTTP/2.0 request line, which it refuses.
				l.badRequest(d, errLowVersion)
				return
			}
			d.off += skip
			l.dispatch(d, b[skip:n])
		case dsBody:
			if d.hb != nil {
				if !l.h1uBody(d) {
					return
				}
				continue
			}
			if d.u == nil {
				l.holdBody(d) // a retry's back-off: kept for the next attempt
				return
			}
			b := d.in[d.off:]
			if len(b) == 0 {
				l.releaseIn(d)
				return
			}
			data := d.chunks.data
			take, done, err := d.bodyPart(b)
			if err != nil {
				l.badBody(d)
				return
			}
			d.off += take
			d.received(take, data)
			if done {
				d.state = dsWait
				l.reqComplete(d)
			}
			if !l.sendUp(d.u, b[:take]) {
				return
			}
		case dsSkip:
			if !l.skipBody(d) {
				return
			}
		case dsWait:
			if d.in != nil && len(d.in) == cap(d.in) && d.off == 0 && !d.pausedIn {
				d.pausedIn = true
				l.watchDown(d)
			}
			l.releaseIn(d)
			return
		}
	}
}

// flushDown writes the pending client bytes. When they are all out it
// resumes the upstream it paused, or closes the connection if it ends.
func (l *loop) flushDown(d *down) {
	if d.h2 != nil {
		l.h2Complete(d)
		return
	}
	for d.outOff < len(d.out) || d.tlsPending() {
		var n int
		var err error
		if d.h2c != nil {
			n, err = l.h2OutWrite(&d.h2c.out, d.fd, d.tls) // d.out and the buffers chained past it
		} else {
			n, err = l.writeSock(d, d.out[d.outOff:])
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				if !d.wantOut {
					d.wantOut, d.outAt = true, l.now
					l.watchDown(d)
				}
				return
			}
			l.closeDown(d)
			return
		}
		if d.h2c != nil {
			l.h2Wrote(&d.h2c.out, n)
		} else {
			d.outOff += n
		}
		if n > 0 {
			d.outAt = l.now // progress: the stall's bound runs from here (h1StallDeadline)
		}
	}
	if d.out != nil {
		l.putBuf(d.out)
		d.out, d.outOff = nil, 0
	}
	if d.wantOut {
		d.wantOut = false
		l.watchDown(d)
	}
	if d.closeAfter && d.u == nil && d.state == dsHead {
		l.drain(d)
		return
	}
	if d.h2c != nil {
		l.h2Drained(d.h2c)
		return
	}
	if d.handOffNext {
		l.handOff(d)
		return
	}
	if d.hb != nil {
		l.h1uFlushed(d)
	}
	if u := d.u; u != nil && u.pausedIn {
		u.pausedIn = false
		l.watchUp(u)
		l.processUp(u)
	}
}

// writeDown sends response body bytes: appended to the pending bytes if
// any (the head just built), written directly otherwise.
func (l *loop) writeDown(d *down, b []byte) {
	if d.h2 != nil {
		l.h2Body(d, b)
		return
	}
	if d.out != nil && d.outOff < len(d.out) && len(d.out)+len(b) <= cap(d.out) {
		d.out = append(d.out, b...)
		return
	}
	if d.out != nil && d.outOff < len(d.out) {
		l.flushDown(d)
		if d.closed {
			return
		}
		if d.out != nil {
			d.out = append(d.out, b...)
			return
		}
	}
	for len(b) > 0 {
		n, err := l.writeSock(d, b)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			l.closeDown(d)
			return
		}
		b = b[n:]
	}
	if len(b) > 0 {
		d.out, d.outOff = append(l.getBuf(), b...), 0
		d.wantOut, d.outAt = true, l.now
		l.watchDown(d)
	} else if d.tlsPending() && !d.wantOut {
		d.wantOut, d.outAt = true, l.now // records sealed, not all sent: flushDown sends them
		l.watchDown(d)
	}
}

// lastChunk ends a chunked body without trailers.
var lastChunk = []byte("0\r\n\r\n")

// writeChunks writes b to d, an HTTP/1.1 client, as chunks: a body
// framed by its upstream's close, which the client is sent chunked so
// that its connection outlives the response.
func (l *loop) writeChunks(d *down, b []byte) {
	const room = bufSize - 16 // a chunk's size line and CRLF fit beside it
	for len(b) > 0 && !d.closed {
		n := min(len(b), room)
		c := l.getBuf()
		c = strconv.AppendInt(c, int64(n), 16)
		c = append(c, "\r\n"...)
		c = append(c, b[:n]...)
		c = append(c, "\r\n"...)
		l.writeDown(d, c) // copies what the socket did not take
		l.putBuf(c)
		b = b[n:]
	}
}

func (l *loop) closeDown(d *down) {
	if d.closed {
		return
	}
	if d.h2 != nil {
		l.h2Reset(d)
		return
	}
	l.closeNotify(d)
	unix.Close(d.fd)
	l.forgetDown(d)
	d.gen.st.cxActive.Dec()
	d.gen.st.cxDestroy.Inc()
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxActive.Dec() // before the destroy: who saw it sees the connection gone
		ls.CxDestroy.Inc()
	}
}

// forgetDown drops a connection from the loop (its descriptor closed or
// handed off) with what it holds.
func (l *loop) forgetDown(d *down) {
	l.srv.conns.Add(-1)
	if d.h2c != nil {
		l.h2Forget(d)
	}
	l.logEnded(d)
	l.h1uRelease(d)
	d.closed = true
	l.stopTimer(d)
	l.endRetries(d)
	l.fds[d.fd] = fdRef{}
	last := l.downs[len(l.downs)-1]
	l.downs[d.idx], last.idx = last, d.idx
	l.downs = l.downs[:len(l.downs)-1]
	if d.in != nil {
		l.putBuf(d.in)
		d.in = nil
	}
	if d.out != nil {
		l.putBuf(d.out)
		d.out = nil
	}
	if u := d.u; u != nil {
		// Mid-exchange: the upstream connection cannot be reused.
		d.u, u.d = nil, nil
		l.closeUp(u)
	}
}
