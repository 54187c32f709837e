package evloop

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/bodychain"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// The upstream side of a loop: pooled connections, sending requests,
// relaying responses, failures and retries.

// getUp returns an idle connection of the pool, or a new one (its connect
// under way).
func (l *loop) getUp(p *clusterPool) (*up, error) {
	if n := len(p.idle); n > 0 {
		u := p.idle[n-1]
		p.idle = p.idle[:n-1]
		u.reused = true
		u.out = l.getBuf()
		return u, nil
	}
	return l.dial(p)
}

func (l *loop) dial(p *clusterPool) (*up, error) {
	ep := p.def.endpoints[p.next%len(p.def.endpoints)]
	p.next++
	domain := unix.AF_INET
	if ep.Addr().Is6() && !ep.Addr().Is4In6() {
		domain = unix.AF_INET6
	}
	// Counted as each connect starts, one that fails at once too, as the
	// goroutine path counts it (cluster's connect) and as Envoy's pool
	// counts each connection it creates (ActiveClient), socket or not.
	p.st.cxTotal.Inc()
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.connectFailed(p)
		return nil, os.NewSyscallError("socket", err) // a local connection failure (proxyroute.ConnectFailed)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	u := &up{fd: fd, pool: p, started: l.now, out: l.getBuf(), connectFor: l.connectFor(p)}
	err = unix.Connect(fd, sockaddr(ep))
	switch {
	case err == nil:
		// Over TLS, connected once the handshake is done: onUp starts it
		// when the socket reports writable.
		u.connecting = p.tls != nil
	case errors.Is(err, unix.EINPROGRESS):
		u.connecting = true
	default:
		unix.Close(fd)
		l.putBuf(u.out)
		l.connectFailed(p)
		return nil, fmt.Errorf("connect %s: %w", ep, err)
	}
	if err == nil {
		l.cxConnected(u)
	}
	l.setFd(fd, fdRef{u: u})
	l.watchUp(u)
	return u, nil
}

func (l *loop) onUp(ctx context.Context, u *up, ev uint32) {
	if u.h2 != nil && !u.connecting {
		l.h2UpEvent(u, ev)
		return
	}
	if u.connecting { // an HTTP/2 connection's too (upFailed is its h2UpFailed)
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			l.connectFailed(u.pool)
			u.connErr = err
			if err == nil {
				u.connErr = unix.Errno(errno) // Envoy's "delayed connect error"
			}
			l.upFailed(u)
			return
		}
		l.cxConnected(u)
		if u.pool.tls != nil {
			l.startUpHandshake(ctx, u) // connecting until it is done
			return
		}
		u.connecting = false
		l.watchUp(u)
		l.flushUp(u)
		if u.h2 != nil && !u.closed && !u.wantOut {
			l.h2UpResume(u.h2) // streams held by h2MaxOut while connecting
		}
		return
	}
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 && u.pausedIn && !u.wantOut {
		l.upFailed(u) // nothing else would hear of it
		return
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && u.wantOut {
		l.flushUp(u)
		if u.closed {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 && !u.pausedIn {
		l.readUp(u)
	}
}

// flushUp writes the pending request bytes. When they are all out it
// resumes reading the client's body if that was paused.
func (l *loop) flushUp(u *up) {
	for u.outPending() || u.tlsPending() {
		var n int
		var err error
		switch {
		case u.h2 != nil:
			n, err = l.h2OutWrite(&u.h2.out, u.fd, u.tls) // out and the buffers chained past it
		case u.keptOff < u.kept.Len():
			n, err = l.writeKept(u)
		default:
			n, err = l.writeSockUp(u, u.out[u.outOff:])
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				if !u.wantOut {
					u.wantOut = true
					l.watchUp(u)
				}
				return
			}
			l.upFailed(u)
			return
		}
		if u.h2 != nil {
			l.h2Wrote(&u.h2.out, n)
			continue
		}
		k := min(n, u.kept.Len()-u.keptOff) // kept goes first
		u.keptOff += k
		u.outOff += n - k
		if k > 0 && !u.replayable {
			l.keptWritten(u)
		}
	}
	switch {
	case u.h2 != nil && u.out != nil:
		// An HTTP/2 connection outlives its streams: it holds an output
		// buffer only while it has bytes to write, as a client connection
		// (flushDown); its next frames take one (h2OutAdd).
		l.putBuf(u.out)
		u.out, u.outOff = nil, 0
	case !u.replayable && u.out != nil:
		u.out, u.outOff = u.out[:0], 0
		u.kept.Release(l.chunks()) // all went out: a retry's kept request sent when none may follow
		u.keptOff = 0
	}
	if u.wantOut {
		u.wantOut = false
		l.watchUp(u)
	}
	if d := u.d; d != nil && d.pausedIn && d.state == dsBody {
		d.pausedIn = false
		l.watchDown(d)
		l.process(d)
	}
}

// writeKept writes u's kept chain from keptOff on, and out after it,
// with one writev of the chain's chunks as they are, up to maxOutIov of
// them (16, as Envoy's IoSocketHandleImpl::write takes a buffer's first
// 16 slices), where a write per chunk cost a 512 KiB retried upload 32
// system calls (docs/bench/proxy.md, round 36); over TLS, the records of
// up to tlsBatch bytes of them with one write (writeOut), where a chunk
// at a time cost as many (round 38).
func (l *loop) writeKept(u *up) (int, error) {
	bufs := l.outv[:0]
	for off := u.kept.Base() + int64(u.keptOff); len(bufs) < maxOutIov; {
		b, _ := u.kept.At(off) // its unwritten part is never dropped
		if len(b) == 0 {
			break
		}
		bufs = append(bufs, b)
		off += int64(len(b))
	}
	if len(bufs) < maxOutIov && u.outOff < len(u.out) {
		bufs = append(bufs, u.out[u.outOff:])
	}
	return l.writeOut(u.fd, u.tls, bufs)
}

// outPending reports whether u has request bytes not yet written.
func (u *up) outPending() bool {
	return u.keptOff < u.kept.Len() || u.outOff < len(u.out)
}

// dropKept ends keeping u's request for a retry (up.replayable): what
// went upstream of it is let go, what has not yet stays to be written:
// the kept chain's unwritten tail as its chunks, not copied, each given
// back once written (keptWritten), then out.
func (l *loop) dropKept(u *up) {
	u.replayable = false
	if u.out == nil {
		return
	}
	l.keptWritten(u)
	if !u.outPending() {
		l.putBuf(u.out)
		u.out, u.outOff = nil, 0
	}
}

// keptWritten gives back the chunks of u's kept chain written whole,
// once it is no longer kept for a retry (flushUp, dropKept).
func (l *loop) keptWritten(u *up) {
	u.kept.Drop(l.chunks(), u.kept.Base()+int64(u.keptOff))
	u.keptOff = 0 // counted from the new front
}

// chunks is the loop's free list of buffers as a bodychain.Pool.
func (l *loop) chunks() bodychain.Pool { return (*loopChunks)(l) }

// loopChunks is a loop as the bodychain.Pool of its buffers of bufSize.
type loopChunks loop

func (c *loopChunks) Get() []byte  { return (*loop)(c).getBuf() }
func (c *loopChunks) Put(b []byte) { (*loop)(c).putBuf(b) }

// sendUp forwards request body bytes; false if the exchange ended.
func (l *loop) sendUp(u *up, b []byte) bool {
	if u.replayable && u.d != nil && u.d.rs.outgrew {
		// Past the bound no retry follows, as Envoy's Filter::decodeData
		// gives up its retries once the body outgrows its buffer limit:
		// the body alone counts (down.received), not the head and chunk
		// framing written with it.
		l.dropKept(u)
	}
	switch {
	case u.replayable && (u.kept.Len() > 0 || len(u.out)+len(b) > cap(u.out)):
		// Kept for a retry past one buffer: in a chain of the loop's
		// buffers (up.kept), where growing out would copy it at each
		// doubling, as Envoy's Buffer::OwnedImpl keeps a retry's body
		// as a chain of slices. out's bytes go first; out stays empty.
		if u.kept.Len() == 0 {
			u.kept.Append(l.chunks(), u.out)
			u.keptOff, u.out, u.outOff = u.outOff, u.out[:0], 0
		}
		u.kept.Append(l.chunks(), b)
	case u.connecting || u.replayable || u.outPending():
		// Bounded: the client is paused below until it drains, and what
		// is kept for a retry by proxyroute.MaxRetryBuffer.
		u.out = append(u.out, b...)
	default:
		u.out, u.outOff = append(u.out[:0], b...), 0
	}
	if !u.connecting {
		l.flushUp(u)
	}
	if u.closed || u.d == nil {
		return false
	}
	if u.outPending() {
		// The upstream is not keeping up: stop reading the body.
		d := u.d
		d.pausedIn = true
		l.watchDown(d)
		return false
	}
	return true
}

func (l *loop) readUp(u *up) {
	if u.d == nil {
		l.readIdleUp(u)
		return
	}
	if u.in == nil {
		u.in, u.off = l.getBuf(), 0
	}
	if len(u.in) == cap(u.in) {
		switch {
		case u.off > 0:
			n := copy(u.in, u.in[u.off:])
			u.in, u.off = u.in[:n], 0
		case u.rstate == rsHead && cap(u.in) < maxHeadBytes+bufSize:
			u.in = l.growBuf(u.in, maxHeadBytes+bufSize)
		default:
			l.badGateway(u)
			return
		}
	}
	var n int
	var err error
	if u.tls != nil {
		n, err = l.readUpTLS(u)
	} else {
		n, err = rawRead(u.fd, u.in[len(u.in):cap(u.in)])
	}
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		if u.rstate != rsClose {
			l.upFailed(u)
			return
		}
		n = 0 // a reset ends a body delimited by the close, as the close does (docs/proxy.md)
	}
	if n == 0 {
		if u.rstate == rsClose {
			if u.d.h2 == nil {
				d := u.d
				l.writeDown(d, lastChunk) // the body was re-framed chunked (responseHead)
				if d.closed {
					return // and u with it (forgetDown)
				}
			}
			l.finish(u, false)
			return
		}
		l.upFailed(u)
		return
	}
	u.in = u.in[:len(u.in)+n]
	l.responseActive(u.d)
	if !u.gotResp {
		u.gotResp = true
		if u.out != nil && (!u.replayable || !u.d.mayRetry()) {
			l.dropKept(u)
		}
	}
	l.processUp(u)
}

// processUp relays the buffered response bytes to the client.
func (l *loop) processUp(u *up) {
	for !u.closed && u.d != nil && !u.pausedIn {
		d := u.d
		b := u.in[u.off:]
		if len(b) == 0 {
			if u.in != nil {
				u.in, u.off = u.in[:0], 0
			}
			break
		}
		switch u.rstate {
		case rsHead:
			n, err := u.scan.scan(b, maxHeadBytes)
			if err != nil {
				l.badGateway(u)
				return
			}
			if n == 0 {
				return
			}
			if !l.responseHead(u, d, b[:n]) {
				return
			}
			u.off += n
			if u.rstate == rsLength && u.left == 0 {
				l.finish(u, true)
				return
			}
			if u.rstate == rsHead && u.status >= 200 {
				l.finish(u, true) // bodyless
				return
			}
		case rsLength:
			take := int(min(int64(len(b)), u.left))
			u.off += take
			u.left -= int64(take)
			d.logSent(int64(take))
			l.writeDown(d, b[:take])
			if d.closed {
				return
			}
			if u.left == 0 {
				l.finish(u, true)
				return
			}
		case rsChunked:
			data := u.chunks.data
			take, done, err := u.chunks.scan(b)
			if err != nil {
				l.h1ProtocolError(u)
				return
			}
			u.off += take
			d.logSent(u.chunks.data - data) // the body's bytes, as the goroutine path counts them
			l.writeDown(d, b[:take])
			if d.closed {
				return
			}
			if done {
				l.finish(u, true)
				return
			}
		case rsClose:
			u.off += len(b)
			d.logSent(int64(len(b)))
			if d.h2 == nil {
				l.writeChunks(d, b)
			} else {
				l.writeDown(d, b)
			}
			if d.closed {
				return
			}
		}
	}
	if d := u.d; d != nil && !d.closed {
		if d.outOff < len(d.out) {
			l.flushDown(d)
		}
		if !d.closed && d.wantOut && !u.pausedIn && u.d != nil {
			// The client is not keeping up: stop reading the response.
			u.pausedIn = true
			l.watchUp(u)
		}
	}
}

// finish ends an exchange whose response is complete: the upstream goes
// back to its pool if it can be reused, and the client's next request
// (pipelined already, perhaps) is processed.
func (l *loop) finish(u *up, reusable bool) {
	l.observeGRPCDone(u, proxyroute.NoGRPCStatus) // ended without trailers (an HTTP/1.1 upstream's are dropped)
	d := u.d
	extra := u.in != nil && u.off < len(u.in)
	code := u.status
	u.d, d.u = nil, nil
	u.rstate, u.left, u.off, u.gotResp, u.status = rsHead, 0, 0, false, 0
	if u.in != nil {
		l.putBuf(u.in)
		u.in = nil
	}
	if u.out != nil {
		l.putBuf(u.out)
		u.out, u.outOff = nil, 0
	}
	u.kept.Release(l.chunks())
	u.keptOff = 0
	p := u.pool
	if reusable && u.keep && !extra && !u.wantOut && !p.gone && len(p.idle) < l.srv.cfg.MaxIdleUpstream {
		u.pausedIn = false
		l.watchUp(u)
		p.idle = append(p.idle, u)
	} else {
		l.closeUp(u)
	}
	if d.h2 == nil {
		l.h1Done(d) // the response's end is in d.out; a stream's, once its END_STREAM goes (h2Sent)
	}
	l.endRetries(d)
	l.logDone(d, code)
	if d.state == dsBody {
		d.closeAfter = true
	}
	d.state = dsHead
	l.flushDown(d)
	if d.closed {
		return
	}
	if d.pausedIn && d.outOff >= len(d.out) {
		d.pausedIn = false
		l.watchDown(d)
	}
	l.process(d)
}

// cutResponse closes both sides: the client cannot be told the response
// is incomplete in any other way (Envoy resets the stream). why is the
// response flag of the cut and details its response code details (""
// keeps those logged): UPE and route.DetailsCutProtocolError when the
// upstream broke the response, its connection closed or its framing
// broken (Envoy's HTTP/1.1 codec fails both as its protocol error); UT
// when a timeout cut it, which resets the upstream request without its
// reset counting as the upstream's (Envoy's Filter::onResponseTimeout
// takes the request off before it resets it, and its HttpUpstream
// removes its callbacks first: the log says UT alone).
func (l *loop) cutResponse(u *up, why accesslog.Flags, details string) {
	if why != accesslog.UpstreamRequestTimeout {
		// The upstream broke the response (Envoy's chargeUpstreamAbort);
		// a timeout's cut counts nothing (onResponseTimeout).
		l.observeCut(u, false)
		l.observeGRPCDone(u, proxyroute.NoGRPCStatus)
	}
	d := u.d
	if d != nil {
		d.logFlags(why, details)
		if u.status != 0 {
			l.logEnded(d) // with the status sent
		}
	}
	l.closeUp(u)
	if d != nil {
		if d.outOff < len(d.out) {
			l.flushDown(d)
		}
		l.closeDown(d)
	}
}

// readIdleUp reads what the upstream of an idle pooled connection sent:
// its close, or bytes nobody asked for, which end the connection, counted
// in upstream_cx_protocol_error as Envoy counts them
// (route.ReadIdleBytes); over TLS, a NewSessionTicket, say, which keeps
// it. Only the bytes of one read (bufSize) are looked at: a head they do
// not hold whole counts nothing, as part of a head then the close does.
func (l *loop) readIdleUp(u *up) {
	var got []byte
	if u.tls != nil {
		plain, keep := l.idleTLSRecords(u)
		if keep {
			return
		}
		got = plain
	} else {
		b := l.getBuf()
		defer l.putBuf(b)
		n, err := rawRead(u.fd, b[:cap(b)])
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		got = b[:n] // nothing on an error
	}
	if proxyroute.ReadIdleBytes(got) == proxyroute.IdleProtocolError {
		u.pool.st.cxProtocolError.Inc()
	}
	l.removeIdle(u)
	l.closeUp(u)
}

func (l *loop) removeIdle(u *up) {
	idle := u.pool.idle
	for i, x := range idle {
		if x == u {
			idle[i] = idle[len(idle)-1]
			u.pool.idle = idle[:len(idle)-1]
			return
		}
	}
}

func (l *loop) closeUp(u *up) {
	if u.closed {
		return
	}
	l.observeDone(u, -1, false) // ended from the client's side
	u.closed = true
	if u.counted {
		u.counted = false
		l.srv.cfg.Observer.Closed(u.cx)
		u.cx = nil
	}
	l.closeNotifyUp(u)
	unix.Close(u.fd)
	l.fds[u.fd] = fdRef{}
	if u.in != nil {
		l.putBuf(u.in)
		u.in = nil
	}
	if u.out != nil {
		l.putBuf(u.out)
		u.out = nil
	}
	if u.h2 != nil {
		l.h2OutRelease(&u.h2.out) // the buffers past out
	}
	u.kept.Release(l.chunks())
	u.keptOff = 0
	if d := u.d; d != nil {
		d.u, u.d = nil, nil
	}
}
