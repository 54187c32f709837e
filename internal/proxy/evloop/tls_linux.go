package evloop

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// TLS on the loops (Config.TLS). A new connection's handshake runs on a
// goroutine over a duplicate of its descriptor (crypto/tls cannot pause a
// handshake half-way); the outcome comes back to the loop that accepted
// it, which from then on reads ciphertext into tlsrec.Conn.Feed, parses
// the plaintext as any connection's, and sends what Write sealed
// (tlsrec's Pending) with its ordinary write path. The listener counts
// the connection from its accept (and its cap holds it during the
// handshake), the connection manager once the handshake is done, as the
// goroutine path does.

// handshaken is a handshake's outcome, posted to the loop that accepted
// the connection.
type handshaken struct {
	fd      int
	gen     *generation
	tc      *tlsrec.Conn // nil: the handshake failed
	drained uint64       // the Server's drainGen at the accept
}

// startHandshake hands a new connection to a handshake goroutine.
func (l *loop) startHandshake(ctx context.Context, fd int, g *generation) {
	l.srv.conns.Add(1)
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxTotal.Inc()
		ls.CxActive.Inc()
	}
	l.handshaking++
	timeout := g.tls.Timeout
	if timeout <= 0 {
		timeout = tlsctx.HandshakeTimeout
	}
	h := handshaken{fd: fd, gen: g, drained: l.srv.drainGen.Load()}
	l.srv.hs.Add(1)
	go func() { // one TLS handshake; ends when it completes or fails, within timeout (or when Serve's ctx ends)
		defer l.srv.hs.Done()
		h.tc = l.srv.handshake(ctx, fd, g.tls.Handshake, timeout)
		l.post(h)
	}()
}

// handshake runs hs on a duplicate of fd, which it closes after; fd stays
// the loop's. nil means the handshake failed (the caller closes fd).
func (s *Server) handshake(ctx context.Context, fd int, hs tlsrec.HandshakeFunc, timeout time.Duration) *tlsrec.Conn {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		s.log.Debug("downstream TLS handshake: dup", "err", err)
		return nil
	}
	f := os.NewFile(uintptr(dup), "tls-handshake")
	c, err := net.FileConn(f) // another duplicate, in Go's poller; f's is closed below
	_ = f.Close()
	if err != nil {
		s.log.Debug("downstream TLS handshake: socket", "err", err)
		return nil
	}
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc, err := tlsrec.Handshake(hctx, c, hs)
	if err != nil {
		s.log.Debug("downstream TLS handshake failed", "src", c.RemoteAddr().String(), "err", err)
		return nil
	}
	return tc
}

// post gives a handshake's outcome to the loop, from its goroutine. Once
// the loop has closed (closeAll), the connection is dropped here.
func (l *loop) post(h handshaken) {
	l.hsMu.Lock()
	defer l.hsMu.Unlock()
	if l.hsClosed {
		l.dropHandshake(h)
		return
	}
	l.hsDone = append(l.hsDone, h)
	l.wakeUp() // under hsMu: closeAll closes the eventfd after setting hsClosed
}

// takeHandshakes serves the connections whose handshakes ended.
func (l *loop) takeHandshakes() {
	l.hsMu.Lock()
	done := l.hsDone
	l.hsDone = nil
	l.hsMu.Unlock()
	for _, h := range done {
		l.handshaking--
		if h.tc == nil {
			l.dropHandshake(h)
			continue
		}
		l.addTLS(h)
	}
}

// dropHandshakes closes the connections whose handshakes ended and makes
// those still running close theirs: the loop is closing.
func (l *loop) dropHandshakes() {
	l.hsMu.Lock()
	l.hsClosed = true
	done := l.hsDone
	l.hsDone = nil
	l.hsMu.Unlock()
	for _, h := range done {
		l.dropHandshake(h)
	}
}

// dropHandshake closes a connection that never reached the connection
// manager. It may run on a handshake goroutine: it touches only the
// socket and atomic counters.
func (l *loop) dropHandshake(h handshaken) {
	if h.tc != nil {
		_ = h.tc.Close()
		if p := h.tc.Pending(); len(p) > 0 {
			_, _ = rawWrite(h.fd, p) // best effort: close_notify
		}
	}
	unix.Close(h.fd)
	l.srv.conns.Add(-1)
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxDestroy.Inc()
		ls.CxActive.Dec()
	}
}

// addTLS serves a connection whose handshake succeeded on the loop.
func (l *loop) addTLS(h handshaken) {
	// The head of the first request is timed from the end of the
	// handshake, as the goroutine path times it.
	d := &down{fd: h.fd, last: l.now, idx: len(l.downs), headStart: l.now + 1, gen: h.gen, tls: h.tc}
	l.downs = append(l.downs, d)
	l.setFd(d.fd, fdRef{d: d})
	l.watchDown(d)
	d.gen.st.cxTotal.Inc()
	d.gen.st.cxActive.Inc()
	l.srv.tlsConns.Add(1)
	if h.drained != l.srv.drainGen.Load() {
		// Drained during its handshake: like a connection drained before
		// its first request, it is served one, if it comes in time.
		d.gen.st.cxDrainClose.Inc()
		d.drainNext, d.drainBy = true, l.now+int64(freshDrainGrace)
	}
	// The handshake may have read records behind its last message (the
	// first request, often); the socket will not report them again.
	l.feedDown(d, nil)
}

// readDownTLS reads ciphertext (no more than d.in has room for, so that
// the plaintext fits in it but for a record begun earlier) and parses
// its plaintext.
func (l *loop) readDownTLS(d *down) {
	if l.tlsIn == nil {
		l.tlsIn = make([]byte, bufSize)
	}
	room := min(cap(d.in)-len(d.in), len(l.tlsIn))
	n, err := rawRead(d.fd, l.tlsIn[:room])
	if err != nil && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) {
		l.releaseIn(d)
		return
	}
	if err != nil || n == 0 {
		l.clientGone(d)
		return
	}
	d.last = l.now
	l.feedDown(d, l.tlsIn[:n])
}

// clientGone closes a connection its client ended (FIN, reset or
// close_notify).
func (l *loop) clientGone(d *down) {
	if d.u != nil {
		d.gen.st.rqRxReset.Inc() // the client went with its request in flight
	}
	l.closeDown(d)
}

// feedDown opens the records in ciphertext and processes their plaintext.
func (l *loop) feedDown(d *down, ciphertext []byte) {
	if d.in == nil {
		d.in, d.off = l.getBuf(), 0
	}
	plain, err := d.tls.Feed(d.in, ciphertext)
	if cap(plain) != cap(d.in) {
		l.putBuf(d.in) // Feed needed more room: a record begun in an earlier read
	}
	d.in = plain
	if d.tlsPending() {
		// An answer to a KeyUpdate, or the alert of err.
		l.flushDown(d)
		if d.closed {
			return
		}
	}
	if d.off < len(d.in) {
		l.process(d)
	} else {
		l.releaseIn(d)
	}
	switch {
	case d.closed || err == nil:
	case errors.Is(err, io.EOF):
		l.clientGone(d) // close_notify
	default:
		l.srv.log.Debug("downstream TLS record", "fd", d.fd, "err", err)
		l.closeDown(d)
	}
}

// writeSock is the downstream write path: rawWrite, or over TLS, b sealed
// (all of it, at once) after what was sealed earlier has been sent.
// EAGAIN, before b was taken, means the socket is full; after, the records
// wait in Pending for flushDown.
func (l *loop) writeSock(d *down, b []byte) (int, error) {
	if d.tls == nil {
		return rawWrite(d.fd, b)
	}
	if err := l.sendPending(d); err != nil {
		return 0, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	if _, err := d.tls.Write(b); err != nil {
		return 0, err
	}
	if err := l.sendPending(d); err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0, err
	}
	return len(b), nil
}

// sendPending writes the sealed records until the socket is full (EAGAIN).
func (l *loop) sendPending(d *down) error {
	for p := d.tls.Pending(); len(p) > 0; p = d.tls.Pending() {
		n, err := rawWrite(d.fd, p)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		d.tls.Drain(n)
	}
	return nil
}

// tlsPending reports whether sealed records wait to be sent.
func (d *down) tlsPending() bool { return d.tls != nil && len(d.tls.Pending()) > 0 }

// closeNotify sends close_notify (once) before the connection's write
// side ends, as the goroutine path's tls.Conn.Close does; best effort:
// what the socket does not take at once is lost with the close.
func (l *loop) closeNotify(d *down) {
	if d.tls == nil {
		return
	}
	_ = d.tls.CloseWrite() // a second call sends nothing
	_ = l.sendPending(d)
}
