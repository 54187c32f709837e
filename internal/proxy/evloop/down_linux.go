package evloop

import (
	"bytes"
	"context"
	"errors"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
)

// The downstream side of a loop: accepting clients, reading and parsing
// their requests, dispatching them, writing responses back.

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
	d.draining, d.last = true, l.now
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
		case d.state == dsHead && cap(d.in) < maxHeadBytes+bufSize:
			nb := make([]byte, len(d.in), 2*cap(d.in))
			copy(nb, d.in)
			l.putBuf(d.in)
			d.in = nb
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
	if d.h2c == nil {
		d.last = l.now // an h2 connection's moves with its streams (h2Deadline)
	}
	l.process(d)
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
				d.headStart = l.now + 1 // 0 means no head under way
				// The last request's: a reply to this head before
				// dispatch (a 400, a 408) is not shaped by them.
				d.head, d.grpc = false, false
			}
			n, err := d.scan.scan(b)
			if err != nil {
				l.badRequest(d, err)
				return
			}
			if n == 0 {
				return
			}
			d.headStart = 0
			l.dispatch(d, b[:n])
		case dsBody:
			if d.hb != nil {
				if !l.h1uBody(d) {
					return
				}
				continue
			}
			b := d.in[d.off:]
			if len(b) == 0 {
				l.releaseIn(d)
				return
			}
			data := d.chunks.data
			take, done, err := d.bodyPart(b)
			if err != nil {
				// The upstream has part of a request: it cannot be reused.
				u := d.u
				u.d, d.u = nil, nil
				l.closeUp(u)
				l.badBody(d)
				return
			}
			d.off += take
			d.logReceived(take, data)
			if done {
				d.state = dsWait
			}
			if !l.sendUp(d.u, b[:take]) {
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

// dispatch routes one parsed request head and sends it upstream.
func (l *loop) dispatch(d *down, head []byte) {
	st := d.gen.st
	r := &l.req
	if err := parseRequest(head, r); err != nil {
		if bytes.HasPrefix(head, []byte(h2cPreface)) && l.startH2(d, head) {
			l.process(d)
			return
		}
		if (errors.Is(err, errUpgrade) || bytes.HasPrefix(head, []byte(h2cPreface))) && l.handOffWhenWritten(d) {
			return
		}
		l.badRequest(d, err)
		return
	}
	var t Target
	if rtr := d.gen.router; rtr != nil {
		l.hv = headView{head, r}
		if d.h2 != nil {
			t = rtr.(H2Router).RouteH2(&l.hv)
		} else {
			t = rtr.Route(&l.hv)
			t.HandOff = t.HandOff || t.HTTP2 && !l.srv.cfg.H2 // HTTP/2 upstreams are behind the switch
		}
		if t.HandOff && d.h2 == nil && l.handOffWhenWritten(d) {
			return
		}
		if t.HandOff && d.h2 != nil && l.h2Refuse(d) {
			return
		}
	}
	st.rqTotal.Inc()
	if d.h2 != nil {
		st.rqHTTP2.Inc()
	} else {
		st.rqHTTP1.Inc()
		if d.requests == 0 {
			st.cxHTTP1.Inc() // once per connection; a hand-off says so (handOff)
		}
	}
	d.off += len(head)
	// A request read after its chain was retired is the connection's
	// last even when this loop has not yet acted on the retirement (its
	// wake-up may come later in the same batch of events).
	last := r.closeAfter || d.drainNext
	if !last && d.h2 == nil && d.gen.retired.Load() {
		last = true
		d.gen.st.cxDrainClose.Inc() // drainConns passes it by: it closes after this one
	}
	d.head, d.grpc, d.closeAfter, d.reqStart = r.head, r.grpc, last, l.now
	d.timeout = int64(l.srv.cfg.RequestTimeout)
	if t.Timeout > 0 {
		d.timeout = int64(t.Timeout)
	}
	d.requests++
	l.startRetries(d, &t, d.gen.router != nil)
	l.logStart(d, head, r, &t)
	target := r.target.of(head)
	path := target
	for i, c := range target {
		if c == '?' {
			path = target[:i]
			break
		}
	}
	var pool *clusterPool
	if d.gen.router != nil {
		if t.HandOff {
			l.localReply(d, 501, "", true) // no HandOff to take it
			return
		}
		if t.Status != 0 {
			switch {
			case t.Status == 404:
				st.noRoute.Inc()
				d.logFlags(accesslog.NoRouteFound, "route_not_found")
			case t.Flags != 0:
				if t.Flags&accesslog.NoClusterFound != 0 {
					st.noCluster.Inc()
				}
				d.logFlags(t.Flags, t.Details)
			}
			l.localReply(d, t.Status, t.Body, r.hasLength && r.contentLength > 0)
			return
		}
		pool = l.hostPool(t.Cluster, t.Host)
		l.poolTLS(pool, t.TLS)
	} else {
		rt := l.srv.table.match(r.host.of(head), path)
		if rt == nil {
			st.noRoute.Inc()
			l.localReply(d, 404, "", r.hasLength && r.contentLength > 0)
			return
		}
		pool = &l.pools[rt.cluster]
	}
	pool.st.rqTotal.Inc()
	if t.HTTP2 && d.h2 != nil {
		if t.Path != "" {
			d.h2.path = t.Path + string(target[len(path):])
		}
		l.h2uDispatch(d, pool, &t, r)
		return
	}
	if t.HTTP2 {
		l.h1uDispatch(d, pool, &t, r, head)
		return
	}
	u, err := l.getUp(pool)
	if err == nil {
		l.observeStart(u, t.Cluster, t.Tag)
	}
	if err != nil {
		d.logFlags(accesslog.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}")
		l.localReply(d, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", r.hasLength && r.contentLength > 0)
		return
	}
	// The upstream request: the client's head without its hop-by-hop
	// headers, plus x-forwarded-proto and x-request-id as weft adds them.
	o := u.out
	o = append(o, r.method.of(head)...)
	o = append(o, ' ')
	if t.Path != "" {
		o = append(o, t.Path...)
		o = append(o, target[len(path):]...) // the query
	} else {
		o = append(o, target...)
	}
	o = append(o, " HTTP/1.1\r\n"...)
	run := -1 // start of a run of header lines copied at once
	for i := range r.lines {
		h := &r.lines[i]
		if h.hop {
			if run >= 0 {
				o = append(o, head[run:h.line.off]...)
				run = -1
			}
			continue
		}
		if run < 0 {
			run = int(h.line.off)
		}
	}
	if run >= 0 {
		o = append(o, head[run:r.lines[len(r.lines)-1].line.end]...)
	}
	if !r.hasXFP && d.overTLS() {
		o = append(o, "x-forwarded-proto: https\r\n"...)
	} else if !r.hasXFP {
		o = append(o, "x-forwarded-proto: http\r\n"...)
	}
	if !r.hasRequestID {
		o = append(o, "x-request-id: "...)
		o = appendUUID(o, l.rng)
		if d.logged() {
			d.lg.rid = append(d.lg.rid[:0], o[len(o)-36:]...)
		}
		o = append(o, "\r\n"...)
	}
	if r.hasLength {
		// Connection's tokens may have named Content-Length: it is
		// written again so that the body's framing always reaches the
		// upstream.
		if l.lengthDropped(head, r) {
			o = append(o, "content-length: "...)
			o = strconv.AppendInt(o, r.contentLength, 10)
			o = append(o, "\r\n"...)
		}
	}
	o = append(o, "\r\n"...)
	d.bodyLeft, d.chunked, d.chunks = 0, r.chunked, chunkScanner{}
	if r.hasLength {
		d.bodyLeft = r.contentLength
	}
	more := d.chunked || d.bodyLeft > 0 // a body follows the head
	if r.expectContinue && more && d.off == len(d.in) {
		// The client waits for this before it sends the body.
		if d.out == nil {
			d.out, d.outOff = l.getBuf(), 0
		}
		d.out = append(d.out, "HTTP/1.1 100 Continue\r\n\r\n"...)
		l.flushDown(d)
		if d.closed {
			l.closeUp(u)
			return
		}
	}
	// As much of the body as fits goes with the head, in one write.
	if more {
		avail := d.in[d.off:]
		data := d.chunks.data
		take, done, err := d.bodyPart(avail[:min(len(avail), max(0, cap(o)-len(o)))])
		if err != nil {
			l.closeUp(u)
			l.badBody(d)
			return
		}
		o = append(o, avail[:take]...)
		d.off += take
		d.logReceived(take, data)
		more = !done
	}
	u.out, u.outOff = o, 0
	u.replayable = !more
	u.d, d.u = d, u
	u.started = l.now
	d.state = dsWait
	if more {
		d.state = dsBody
	}
	if !u.connecting {
		l.flushUp(u)
	}
}

// bodyPart returns how many of b's bytes belong to the request body in
// flight, and whether the body ends with them.
func (d *down) bodyPart(b []byte) (int, bool, error) {
	if d.chunked {
		return d.chunks.scan(b)
	}
	take := int(min(int64(len(b)), d.bodyLeft))
	d.bodyLeft -= int64(take)
	return take, d.bodyLeft == 0, nil
}

// lengthDropped reports whether the Content-Length line was left out as
// hop-by-hop.
func (l *loop) lengthDropped(head []byte, r *request) bool {
	for i := range r.lines {
		if equalFold(r.lines[i].name.of(head), "content-length") {
			return r.lines[i].hop
		}
	}
	return false
}

// flushDown writes the pending client bytes. When they are all out it
// resumes the upstream it paused, or closes the connection if it ends.
func (l *loop) flushDown(d *down) {
	if d.h2 != nil {
		l.h2Complete(d)
		return
	}
	for d.outOff < len(d.out) || d.tlsPending() {
		n, err := l.writeSock(d, d.out[d.outOff:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				if !d.wantOut {
					d.wantOut = true
					l.watchDown(d)
				}
				return
			}
			l.closeDown(d)
			return
		}
		d.outOff += n
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
		d.wantOut = true
		l.watchDown(d)
	} else if d.tlsPending() && !d.wantOut {
		d.wantOut = true // records sealed, not all sent: flushDown sends them
		l.watchDown(d)
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
	d.gen.st.cxDestroy.Inc()
	d.gen.st.cxActive.Dec()
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxDestroy.Inc()
		ls.CxActive.Dec()
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
