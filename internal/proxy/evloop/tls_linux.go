package evloop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
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
// (or dialled) the connection.
type handshaken struct {
	fd      int
	gen     *generation
	tc      *tlsrec.Conn // nil: the handshake failed
	err     error        // why it failed
	drained uint64       // the Server's drainGen at the accept
	u       *up          // an upstream connection's; fd and gen unused then
}

// startHandshake hands a new connection to a handshake goroutine.
func (l *loop) startHandshake(ctx context.Context, fd int, g *generation) {
	l.srv.conns.Add(1)
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxTotal.Inc()
		ls.CxActive.Inc()
	}
	timeout := g.tls.Timeout
	if timeout <= 0 {
		timeout = tlsctx.HandshakeTimeout
	}
	h := handshaken{fd: fd, gen: g, drained: l.srv.drainGen.Load()}
	l.goHandshake(ctx, fd, g.tls.Handshake, timeout, h)
}

// goHandshake runs hs on a duplicate of fd on a goroutine and posts h
// with its outcome. The duplicate is made here, on the loop: the loop may
// close fd (an upstream's connect timeout) while the handshake runs.
func (l *loop) goHandshake(ctx context.Context, fd int, hs tlsrec.HandshakeFunc, timeout time.Duration, h handshaken) {
	l.handshaking++
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		l.srv.log.Debug("TLS handshake: dup", "err", err)
		dup, h.err = -1, fmt.Errorf("TLS handshake: dup: %v", err) // not the connect's errno (proxyroute.ConnectFailed)
	}
	l.srv.hs.Add(1)
	go func() { // one TLS handshake; ends when it completes or fails, within timeout (or when Serve's ctx ends)
		defer l.srv.hs.Done()
		if dup >= 0 {
			h.tc, h.err = l.srv.handshake(ctx, dup, hs, timeout)
		}
		l.post(h)
	}()
}

// handshake runs hs on dup, a duplicate of a loop's descriptor, and closes
// it; a nil Conn and why when the handshake failed.
func (s *Server) handshake(ctx context.Context, dup int, hs tlsrec.HandshakeFunc, timeout time.Duration) (*tlsrec.Conn, error) {
	f := os.NewFile(uintptr(dup), "tls-handshake")
	c, err := net.FileConn(f) // another duplicate, in Go's poller; f's is closed below
	_ = f.Close()
	if err != nil {
		s.log.Debug("TLS handshake: socket", "err", err)
		return nil, err
	}
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc, err := tlsrec.Handshake(hctx, c, hs)
	if err != nil {
		s.log.Debug("TLS handshake failed", "peer", c.RemoteAddr().String(), "err", err)
		return nil, err
	}
	return tc, nil
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
		switch {
		case h.u != nil:
			l.upHandshaken(h)
		case h.tc == nil:
			l.dropHandshake(h)
		default:
			l.addTLS(h)
		}
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
	if h.u != nil {
		if h.tc != nil {
			_ = h.tc.Close() // the socket is the up's, closed with it
		}
		return
	}
	if h.tc != nil {
		_ = h.tc.Close()
		if p := h.tc.Pending(); len(p) > 0 {
			_, _ = rawWrite(h.fd, p) // best effort: close_notify
		}
	}
	unix.Close(h.fd)
	l.srv.conns.Add(-1)
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxActive.Dec() // before the destroy: who saw it sees the connection gone
		ls.CxDestroy.Inc()
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
	if h.drained != l.srv.drainGen.Load() || h.gen.retired.Load() {
		// Drained during its handshake: like a connection drained before
		// its first request, it is served one, if it comes in time.
		d.gen.st.cxDrainClose.Inc()
		d.drainNext, d.drainBy = true, l.now+int64(freshDrainGrace)
	}
	// The handshake may have read records behind its last message (the
	// first request, often); the socket will not report them again.
	l.feedDown(d, nil)
	l.arm(d)
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
	if l.readEnded(d, n, err) {
		return
	}
	l.feedDown(d, l.tlsIn[:n])
}

// clientGone closes a connection its client ended (FIN, reset or
// close_notify). Its request in flight, or each of its HTTP/2 streams',
// is reset and logged as Envoy's connection manager does on a
// RemoteClose (proxyroute.DetailsRemoteDisconnect).
func (l *loop) clientGone(d *down) {
	if d.h2c != nil {
		for _, st := range d.h2c.streams {
			l.streamGone(st.sd, proxyroute.DetailsRemoteDisconnect)
		}
	} else {
		l.streamGone(d, proxyroute.DetailsRemoteDisconnect)
	}
	l.firstHeadEnded(d)
	l.closeDown(d)
}

// streamGone records the client's end of d's request, if in flight:
// counted in downstream_rq_rx_reset, logged with details (DC when
// nothing else flagged it: logEnded).
func (l *loop) streamGone(d *down, details string) {
	if !d.closed && (d.u != nil || d.hb != nil || d.rs.waiting || d.h2 != nil && d.h2.us != nil) {
		d.gen.st.rqRxReset.Inc()
		d.logFlags(0, details)
	}
}

// feedDown opens the records in ciphertext and processes their plaintext.
func (l *loop) feedDown(d *down, ciphertext []byte) {
	if d.in == nil {
		d.in, d.off = l.getBuf(), 0
	}
	had := len(d.in)
	plain, err := d.tls.Feed(d.in, ciphertext)
	if cap(plain) != cap(d.in) {
		l.putBuf(d.in) // Feed needed more room: a record begun in an earlier read
	}
	d.in = plain
	if ciphertext != nil {
		l.readIdle(d, d.in[had:]) // a record not yet complete opens no request either
	}
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

// writeSock is the downstream write path: rawWrite, or writeTLS.
func (l *loop) writeSock(d *down, b []byte) (int, error) {
	if d.tls == nil {
		return rawWrite(d.fd, b)
	}
	return writeTLS(d.fd, d.tls, b)
}

// writeSockUp is the upstream write path: rawWrite, or writeTLS.
func (l *loop) writeSockUp(u *up, b []byte) (int, error) {
	if u.tls == nil {
		return rawWrite(u.fd, b)
	}
	return writeTLS(u.fd, u.tls, b)
}

// writeTLS seals b (all of it, at once) after what was sealed earlier has
// been sent. EAGAIN, before b was taken, means the socket is full; after,
// the records wait in Pending for the next flush (flushDown, flushUp).
func writeTLS(fd int, tc *tlsrec.Conn, b []byte) (int, error) {
	if err := sendPending(fd, tc); err != nil {
		return 0, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	if _, err := tc.Write(b); err != nil {
		return 0, err
	}
	if err := sendPending(fd, tc); err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0, err
	}
	return len(b), nil
}

// tlsBatch is the most plaintext writeTLSv seals for one write: three
// records of TLS's largest (16 KiB), whose ciphertext stays within the
// output buffer an idle tlsrec.Conn keeps (64 KiB), so that sealing them
// allocates nothing once a connection has that buffer (Conn.Reserve).
// Four would pass it by their overhead. The records wait in the Conn
// until the socket takes them: a connection's output is bounded as
// before (h2MaxOut, the kept chain), and past it by one batch.
const tlsBatch = 3 * 16384

// writeTLSv is writeTLS for several buffers: it seals bufs in order, up
// to tlsBatch bytes of them (the last in part), after what was sealed
// earlier has been sent, and sends the records with one write, where a
// buffer at a time cost a write per 16 KiB chunk of a retry's kept body
// (HTTP/1.1) and per 32 KiB of an HTTP/2 connection's output. It
// returns the bytes of bufs sealed.
func writeTLSv(fd int, tc *tlsrec.Conn, bufs [][]byte) (int, error) {
	if err := sendPending(fd, tc); err != nil {
		return 0, err
	}
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	n = min(n, tlsBatch)
	if n == 0 {
		return 0, nil
	}
	tc.Reserve(n)
	left := n
	for _, b := range bufs {
		b = b[:min(len(b), left)]
		if len(b) == 0 {
			continue
		}
		if _, err := tc.Write(b); err != nil {
			return 0, err
		}
		left -= len(b)
	}
	if err := sendPending(fd, tc); err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0, err
	}
	return n, nil
}

// sendPending writes the sealed records until the socket is full (EAGAIN).
func sendPending(fd int, tc *tlsrec.Conn) error {
	for p := tc.Pending(); len(p) > 0; p = tc.Pending() {
		n, err := rawWrite(fd, p)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		tc.Drain(n)
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
	_ = sendPending(d.fd, d.tls)
}

// --- upstream: TLS to a cluster's hosts ----------------------------------

// startUpHandshake runs the client side of a new upstream connection's
// handshake on a goroutine, within the connect timeout (counted from the
// connect's start by the sweep too). The socket leaves the loop's epoll
// set meanwhile; u stays connecting, so the request waits in u.out.
func (l *loop) startUpHandshake(ctx context.Context, u *up) {
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, u.fd, nil)
	u.mask, u.handshaking = 0, true
	tc, alpn := u.pool.tls, upALPN(u)
	hs := func(ctx context.Context, c net.Conn) (net.Conn, error) {
		return tc.Handshake(ctx, c, alpn)
	}
	// The timer ends the connect at connectBy; the goroutine's own bound
	// is what is left of it.
	l.goHandshake(ctx, u.fd, hs, time.Duration(l.connectBy(u)-l.now), handshaken{u: u})
}

// poolTLS makes p's new connections originate TLS with tc (nil:
// plaintext). When that changed (a cluster update), the idle connections
// made under the old setting are closed, and the HTTP/2 ones take no new
// stream: none is reused under the new.
func (l *loop) poolTLS(p *clusterPool, tc ClientTLS) {
	if p.tls == tc {
		return
	}
	for _, u := range p.idle {
		l.closeUp(u)
	}
	p.idle, p.tls = p.idle[:0], tc
	l.h2UpRetire(p)
}

// upHandshaken takes an upstream connection back from its handshake.
func (l *loop) upHandshaken(h handshaken) {
	u := h.u
	u.handshaking = false
	if d := u.d; d != nil {
		defer l.arm(d) // what follows may move its deadline
	}
	switch {
	case u.closed:
		// Timed out by its timer, or its client went: nothing waits.
		if h.tc != nil {
			_ = h.tc.Close()
		}
	case h.tc == nil:
		// As on the goroutine path, a connection that fails its
		// handshake never connected (the ssl.* counters tell why). One
		// that ran out of the connect timeout is its timeout, whether
		// the timer or the handshake's own bound saw it first.
		if l.now >= l.connectBy(u) {
			l.connectTimedOut(u)
		} else {
			l.connectFailed(u.pool)
			u.connErr = h.err
		}
		l.upFailed(u)
	default:
		u.tls, u.connecting = h.tc, false
		l.watchUp(u)
		// Records behind the handshake (a NewSessionTicket) are taken
		// when the socket reports them readable: a server speaks first
		// in no other way but HTTP/2's SETTINGS.
		l.flushUp(u)
		if u.h2 != nil {
			l.h2UpHandshaken(u)
		}
	}
}

// readUpTLS reads ciphertext (no more than u.in has room for) and appends
// its plaintext to u.in's spare capacity: readUp's rawRead over TLS. It
// returns the plaintext's length; 0 with a nil error is the end (FIN or
// close_notify); EAGAIN, no plaintext yet.
func (l *loop) readUpTLS(u *up) (int, error) {
	if l.tlsIn == nil {
		l.tlsIn = make([]byte, bufSize)
	}
	n, err := rawRead(u.fd, l.tlsIn[:min(cap(u.in)-len(u.in), len(l.tlsIn))])
	if err != nil || n == 0 {
		return 0, err
	}
	return l.feedUpTLS(u, l.tlsIn[:n])
}

// feedUpTLS opens the records in ciphertext and appends their plaintext
// to u.in's spare capacity, as readUpTLS returns it; ciphertext nil takes
// the plaintext of records already buffered.
func (l *loop) feedUpTLS(u *up, ciphertext []byte) (int, error) {
	had := len(u.in)
	plain, err := u.tls.Feed(u.in, ciphertext)
	if cap(plain) != cap(u.in) {
		l.putBuf(u.in) // Feed needed more room: a record begun in an earlier read
	}
	u.in = plain[:had]
	if sendPending(u.fd, u.tls) != nil && !u.wantOut {
		u.wantOut = true // an answer to a KeyUpdate: flushUp sends the rest
		l.watchUp(u)
	}
	got := len(plain) - had
	switch {
	case got > 0:
		return got, nil // an error or close_notify after it shows on the next read
	case err == nil:
		return 0, unix.EAGAIN
	case errors.Is(err, io.EOF):
		return 0, nil
	default:
		return 0, err
	}
}

// idleTLSRecords reads what an idle pooled connection's server sent:
// keep if it was only TLS housekeeping (a NewSessionTicket) and the
// connection stays in the pool; else the plaintext it held, if any.
func (l *loop) idleTLSRecords(u *up) (plain []byte, keep bool) {
	if l.tlsIn == nil {
		l.tlsIn = make([]byte, bufSize)
	}
	n, err := rawRead(u.fd, l.tlsIn)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return nil, true
	}
	if err != nil || n == 0 {
		return nil, false
	}
	plain, err = u.tls.Feed(nil, l.tlsIn[:n])
	_ = sendPending(u.fd, u.tls)
	return plain, err == nil && len(plain) == 0
}

// tlsPending reports whether sealed records wait to be sent.
func (u *up) tlsPending() bool { return u.tls != nil && len(u.tls.Pending()) > 0 }

// closeNotifyUp sends close_notify before an upstream connection closes,
// best effort, as the goroutine path's pools close tls.Conns.
func (l *loop) closeNotifyUp(u *up) {
	if u.tls == nil {
		return
	}
	_ = u.tls.CloseWrite()
	_ = sendPending(u.fd, u.tls)
}
