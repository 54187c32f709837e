package evloop

import (
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// bufSize is the size of the buffers connections borrow from their
	// loop while they have bytes to hold; an idle connection holds none.
	bufSize = 16 << 10
	// maxFreeBufs bounds the buffers a loop keeps for reuse.
	maxFreeBufs = 256
	// maxEvents is how many events one epoll_wait returns at most.
	maxEvents = 256
	// acceptBatch bounds the connections accepted per wake-up.
	acceptBatch = 64
	// sweepEvery is how often a loop checks its timeouts.
	sweepEvery = time.Second
	// maxRetries is the route's retry budget for a request that failed
	// before any response byte (connect failure, reset): App Mesh's
	// default retry policy gives 2.
	maxRetries = 2
)

// Downstream states.
const (
	dsHead = iota // reading a request head
	dsBody        // forwarding the request's body
	dsWait        // request sent, waiting for the end of the response
)

// Upstream response states.
const (
	rsHead    = iota // reading the response head
	rsLength         // Content-Length body
	rsChunked        // chunked body
	rsClose          // body delimited by the upstream's close
)

// down is a client connection. Every field is owned by its loop.
type down struct {
	fd         int
	in         []byte // borrowed; nil when no byte is buffered
	off        int    // first unconsumed byte of in
	scan       headScanner
	out        []byte // borrowed; bytes still to write to the client, from outOff
	outOff     int
	state      uint8
	bodyLeft   int64 // request body bytes still to forward
	u          *up   // the upstream exchange in flight
	closeAfter bool  // close once the current response is written
	head       bool  // the request in flight is a HEAD
	pausedIn   bool  // not reading: the buffer is full or the upstream is not taking the body
	wantOut    bool  // waiting for the socket to take out
	mask       uint32
	closed     bool
	idx        int   // position in loop.downs
	last       int64 // last activity, loop time
	reqStart   int64
	headStart  int64 // when the first byte of the head being read came
	retries    int
}

// up is an upstream connection, idle in its pool or serving one request.
type up struct {
	fd         int
	pool       *clusterPool
	d          *down  // the client it serves; nil when idle
	in         []byte // borrowed response bytes
	off        int
	out        []byte // borrowed request bytes, kept until the response starts (a retry replays them)
	outOff     int
	replayable bool // out holds the whole request
	connecting bool
	reused     bool
	scan       headScanner
	rstate     uint8
	left       int64
	chunks     chunkScanner
	status     int
	gotResp    bool // a response byte arrived
	keep       bool // reusable once the response ends
	pausedIn   bool
	wantOut    bool
	mask       uint32
	closed     bool
	started    int64 // connect start, then request sent
}

type fdRef struct {
	d *down
	u *up
}

type clusterPool struct {
	def  *clusterDef
	idle []*up
	next int // round robin over the endpoints
	st   *clusterCounters
}

// loop is one event loop: its epoll, listening socket, connections,
// upstream pools and buffers. Only its own goroutine touches it after
// newLoop, except wakeUp.
type loop struct {
	srv      *Server
	id       int
	ep       int
	ln       int
	wake     int // eventfd: written to stop the loop
	fds      []fdRef
	downs    []*down
	pools    []clusterPool
	bufs     [][]byte
	req      request
	resp     response
	rng      *mrand.ChaCha8
	epoch    time.Time
	now      int64
	sweptAt  int64
	maxConns int
	events   [maxEvents]unix.EpollEvent
}

func newLoop(s *Server, id, ln int) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	var seed [32]byte
	_, _ = rand.Read(seed[:]) // never fails (crypto/rand)
	l := &loop{srv: s, id: id, ep: ep, ln: ln, wake: wake, rng: mrand.NewChaCha8(seed), epoch: time.Now(),
		maxConns: max(1, s.cfg.MaxConns/len(s.lns)), req: request{lines: make([]headerLine, 0, 32)},
		resp: response{lines: make([]headerLine, 0, 32)}}
	for i := range s.table.clusters {
		l.pools = append(l.pools, clusterPool{def: &s.table.clusters[i], st: &s.st.clusters[i]})
	}
	for _, fd := range []int{ln, wake} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			unix.Close(ep)
			unix.Close(wake)
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return l, nil
}

// wakeUp makes the loop return; safe from any goroutine.
func (l *loop) wakeUp() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.wake, one[:])
}

// run serves events until woken up. With LockThreads it holds its OS
// thread, the only goroutine that runs on it.
func (l *loop) run() error {
	var w waiter = threadWaiter{l.ep}
	if l.srv.cfg.LockThreads {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	} else {
		nw, err := newNetpollWaiter(l.ep)
		if err != nil {
			return fmt.Errorf("netpoll waiter: %w", err)
		}
		w = nw
	}
	defer w.close()
	for {
		n, err := w.wait(l.events[:], sweepEvery)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		l.now = int64(time.Since(l.epoch))
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.ln:
				l.accept()
			case fd == l.wake:
				return nil
			case fd < len(l.fds):
				r := l.fds[fd]
				if r.d != nil {
					l.onDown(r.d, ev.Events)
				} else if r.u != nil {
					l.onUp(r.u, ev.Events)
				}
			}
		}
		if l.now-l.sweptAt >= int64(sweepEvery) {
			l.sweep()
		}
	}
}

// closeAll closes every connection and the loop's descriptors. It runs
// after run returned.
func (l *loop) closeAll() {
	for len(l.downs) > 0 {
		l.closeDown(l.downs[len(l.downs)-1])
	}
	for i := range l.pools {
		for _, u := range l.pools[i].idle {
			l.closeUp(u)
		}
		l.pools[i].idle = nil
	}
	unix.Close(l.ep)
	unix.Close(l.wake)
}

// --- buffers and registration -----------------------------------------

func (l *loop) getBuf() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b[:0]
	}
	return make([]byte, 0, bufSize)
}

func (l *loop) putBuf(b []byte) {
	if cap(b) == bufSize && len(l.bufs) < maxFreeBufs {
		l.bufs = append(l.bufs, b[:0])
	}
}

func (l *loop) setFd(fd int, r fdRef) {
	for fd >= len(l.fds) {
		l.fds = append(l.fds, fdRef{})
	}
	l.fds[fd] = r
}

// registered marks a mask whose descriptor is in the epoll set (not an
// epoll flag).
const registered = 1 << 24

// watch sets the events a descriptor is registered for, with one
// epoll_ctl when they change. With neither, it still hears of errors and
// hang-ups (EPOLLERR and EPOLLHUP are always reported).
func (l *loop) watch(fd int, mask *uint32, in, out bool) {
	m := uint32(registered)
	if in {
		m |= unix.EPOLLIN
	}
	if out {
		m |= unix.EPOLLOUT
	}
	if m == *mask {
		return
	}
	op := unix.EPOLL_CTL_MOD
	if *mask&registered == 0 {
		op = unix.EPOLL_CTL_ADD
	}
	*mask = m
	if err := unix.EpollCtl(l.ep, op, fd, &unix.EpollEvent{Events: m &^ registered, Fd: int32(fd)}); err != nil {
		l.srv.log.Error("epoll_ctl", "fd", fd, "err", err)
	}
}

func (l *loop) watchDown(d *down) { l.watch(d.fd, &d.mask, !d.pausedIn, d.wantOut) }
func (l *loop) watchUp(u *up)     { l.watch(u.fd, &u.mask, !u.pausedIn, u.wantOut || u.connecting) }

// --- downstream --------------------------------------------------------

func (l *loop) accept() {
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
		if len(l.downs) >= l.maxConns {
			unix.Close(fd)
			continue
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		d := &down{fd: fd, last: l.now, idx: len(l.downs)}
		l.downs = append(l.downs, d)
		l.setFd(fd, fdRef{d: d})
		l.watchDown(d)
		l.srv.st.cxTotal.Inc()
		l.srv.st.cxActive.Inc()
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

// readDown reads what the client sent (one read: the loop is level
// triggered, so what remains is reported again) and acts on it.
func (l *loop) readDown(d *down) {
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
	n, err := rawRead(d.fd, d.in[len(d.in):cap(d.in)])
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			l.releaseIn(d)
			return
		}
		l.closeDown(d)
		return
	}
	if n == 0 {
		l.closeDown(d)
		return
	}
	d.in = d.in[:len(d.in)+n]
	d.last = l.now
	l.process(d)
}

func (l *loop) releaseIn(d *down) {
	if d.in != nil && d.off == len(d.in) {
		l.putBuf(d.in)
		d.in, d.off = nil, 0
	}
}

// process handles the buffered client bytes: the next request head, or
// the body of the one in flight.
func (l *loop) process(d *down) {
	for !d.closed {
		switch d.state {
		case dsHead:
			if d.closeAfter {
				return // the connection ends with the response in flight
			}
			b := d.in[d.off:]
			if len(b) == 0 {
				l.releaseIn(d)
				return
			}
			if d.headStart == 0 {
				d.headStart = l.now + 1 // 0 means no head under way
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
			b := d.in[d.off:]
			if len(b) == 0 {
				l.releaseIn(d)
				return
			}
			take := int(min(int64(len(b)), d.bodyLeft))
			d.off += take
			d.bodyLeft -= int64(take)
			if d.bodyLeft == 0 {
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

func (l *loop) badRequest(d *down, err error) {
	st := 400
	var pe *parseError
	if errors.As(err, &pe) {
		st = pe.status
	}
	l.srv.st.cxProtocolError.Inc()
	l.srv.st.rqTotal.Inc()
	d.off = len(d.in)
	l.localReply(d, st, err.Error(), true)
}

// dispatch routes one parsed request head and sends it upstream.
func (l *loop) dispatch(d *down, head []byte) {
	st := l.srv.st
	r := &l.req
	if err := parseRequest(head, r); err != nil {
		l.badRequest(d, err)
		return
	}
	st.rqTotal.Inc()
	st.rqHTTP1.Inc()
	d.off += len(head)
	d.head, d.closeAfter, d.reqStart, d.retries = r.head, r.closeAfter, l.now, 0
	target := r.target.of(head)
	path := target
	for i, c := range target {
		if c == '?' {
			path = target[:i]
			break
		}
	}
	rt := l.srv.table.match(r.host.of(head), path)
	if rt == nil {
		st.noRoute.Inc()
		l.localReply(d, 404, "", r.hasLength && r.contentLength > 0)
		return
	}
	pool := &l.pools[rt.cluster]
	pool.st.rqTotal.Inc()
	u, err := l.getUp(pool)
	if err != nil {
		l.localReply(d, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", r.hasLength && r.contentLength > 0)
		return
	}
	// The upstream request: the client's head without its hop-by-hop
	// headers, plus x-forwarded-proto and x-request-id as weft adds them.
	o := u.out
	o = append(o, r.method.of(head)...)
	o = append(o, ' ')
	o = append(o, target...)
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
	if !r.hasXFP {
		o = append(o, "x-forwarded-proto: http\r\n"...)
	}
	if !r.hasRequestID {
		o = append(o, "x-request-id: "...)
		o = appendUUID(o, l.rng)
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
	d.bodyLeft = 0
	if r.hasLength {
		d.bodyLeft = r.contentLength
	}
	// As much of the body as fits goes with the head, in one write.
	if d.bodyLeft > 0 {
		avail := d.in[d.off:]
		take := int(min(int64(len(avail)), d.bodyLeft, int64(max(0, cap(o)-len(o)))))
		o = append(o, avail[:take]...)
		d.off += take
		d.bodyLeft -= int64(take)
	}
	u.out, u.outOff = o, 0
	u.replayable = d.bodyLeft == 0
	u.d, d.u = d, u
	u.started = l.now
	d.state = dsWait
	if d.bodyLeft > 0 {
		d.state = dsBody
	}
	if !u.connecting {
		l.flushUp(u)
	}
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

func reason(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Unknown"
}

// localReply answers the client from the proxy, as Envoy's local replies.
func (l *loop) localReply(d *down, status int, body string, closeAfter bool) {
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	d.closeAfter = d.closeAfter || closeAfter
	o := append(d.out, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, reason(status)...)
	o = append(o, "\r\ncontent-length: "...)
	o = strconv.AppendInt(o, int64(len(body)), 10)
	o = append(o, "\r\ncontent-type: text/plain\r\nserver: envoy\r\n"...)
	if d.closeAfter {
		o = append(o, "connection: close\r\n"...)
	}
	o = append(o, "\r\n"...)
	o = append(o, body...)
	d.out = o
	l.srv.st.response(status)
	l.srv.st.rqTime.Record(uint64((l.now - d.reqStart) / int64(time.Millisecond)))
	d.state = dsHead
	l.flushDown(d)
}

// flushDown writes the pending client bytes. When they are all out it
// resumes the upstream it paused, or closes the connection if it ends.
func (l *loop) flushDown(d *down) {
	for d.outOff < len(d.out) {
		n, err := rawWrite(d.fd, d.out[d.outOff:])
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
		l.closeDown(d)
		return
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
		n, err := rawWrite(d.fd, b)
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
	}
}

func (l *loop) closeDown(d *down) {
	if d.closed {
		return
	}
	d.closed = true
	unix.Close(d.fd)
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
	l.srv.st.cxDestroy.Inc()
	l.srv.st.cxActive.Dec()
}

// --- upstream ----------------------------------------------------------

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
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		p.st.cxConnectFail.Inc()
		return nil, fmt.Errorf("socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	u := &up{fd: fd, pool: p, started: l.now, out: l.getBuf()}
	err = unix.Connect(fd, sockaddr(ep))
	switch {
	case err == nil:
	case errors.Is(err, unix.EINPROGRESS):
		u.connecting = true
	default:
		unix.Close(fd)
		l.putBuf(u.out)
		p.st.cxConnectFail.Inc()
		return nil, fmt.Errorf("connect %s: %w", ep, err)
	}
	p.st.cxTotal.Inc()
	l.setFd(fd, fdRef{u: u})
	l.watchUp(u)
	return u, nil
}

func (l *loop) onUp(u *up, ev uint32) {
	if u.connecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			u.pool.st.cxConnectFail.Inc()
			l.upFailed(u)
			return
		}
		u.connecting = false
		l.watchUp(u)
		l.flushUp(u)
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
	for u.outOff < len(u.out) {
		n, err := rawWrite(u.fd, u.out[u.outOff:])
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
		u.outOff += n
	}
	if !u.replayable && u.out != nil {
		u.out, u.outOff = u.out[:0], 0
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

// sendUp forwards request body bytes; false if the exchange ended.
func (l *loop) sendUp(u *up, b []byte) bool {
	if u.connecting || u.outOff < len(u.out) {
		u.out = append(u.out, b...) // bounded: the client is paused below until it drains
	} else {
		u.out, u.outOff = append(u.out[:0], b...), 0
	}
	if !u.connecting {
		l.flushUp(u)
	}
	if u.closed || u.d == nil {
		return false
	}
	if u.outOff < len(u.out) {
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
		// Idle in the pool: the upstream closed, or sent bytes nobody
		// asked for. Either way the connection is done.
		l.removeIdle(u)
		l.closeUp(u)
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
			nb := make([]byte, len(u.in), 2*cap(u.in))
			copy(nb, u.in)
			l.putBuf(u.in)
			u.in = nb
		default:
			l.badGateway(u)
			return
		}
	}
	n, err := rawRead(u.fd, u.in[len(u.in):cap(u.in)])
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		l.upFailed(u)
		return
	}
	if n == 0 {
		if u.rstate == rsClose {
			l.finish(u, false)
			return
		}
		l.upFailed(u)
		return
	}
	u.in = u.in[:len(u.in)+n]
	if !u.gotResp {
		u.gotResp = true
		if u.out != nil {
			l.putBuf(u.out)
			u.out, u.outOff, u.replayable = nil, 0, false
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
			n, err := u.scan.scan(b)
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
			l.writeDown(d, b[:take])
			if d.closed {
				return
			}
			if u.left == 0 {
				l.finish(u, true)
				return
			}
		case rsChunked:
			take, done, err := u.chunks.scan(b)
			if err != nil {
				l.cutResponse(u)
				return
			}
			u.off += take
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
			l.writeDown(d, b)
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

// responseHead writes the client's response head for the upstream's head
// b and sets how the body is framed; false if the exchange ended.
func (l *loop) responseHead(u *up, d *down, b []byte) bool {
	rs := &l.resp
	if err := parseResponse(b, rs); err != nil || rs.status == 101 {
		l.badGateway(u)
		return false
	}
	u.status = rs.status
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	o := append(d.out, "HTTP/1.1 "...)
	o = append(o, rs.statusLine.of(b)[9:]...)
	if rs.statusLine.end == 12 {
		o = append(o, ' ')
	}
	o = append(o, "\r\n"...)
	for i := range rs.lines {
		if h := &rs.lines[i]; !h.hop {
			o = append(o, h.line.of(b)...)
		}
	}
	if rs.status < 200 {
		// An interim response goes down as it is; the final one follows.
		d.out = append(o, "\r\n"...)
		u.scan = headScanner{}
		return true
	}
	switch {
	case rs.bodyless(d.head):
		u.rstate = rsHead
		if rs.hasLength {
			o = append(o, "content-length: "...)
			o = strconv.AppendInt(o, rs.contentLength, 10)
			o = append(o, "\r\n"...)
		}
	case rs.chunked:
		u.rstate, u.chunks = rsChunked, chunkScanner{}
		o = append(o, "transfer-encoding: chunked\r\n"...)
	case rs.hasLength:
		u.rstate, u.left = rsLength, rs.contentLength
		o = append(o, "content-length: "...)
		o = strconv.AppendInt(o, rs.contentLength, 10)
		o = append(o, "\r\n"...)
	default:
		u.rstate = rsClose
		d.closeAfter = true
	}
	u.keep = !rs.closeAfter && u.rstate != rsClose
	if d.state == dsBody {
		// The response came before the whole body: the rest of the body
		// cannot be told from the next request.
		d.closeAfter = true
		u.keep = false
	}
	o = append(o, "server: envoy\r\nx-envoy-upstream-service-time: "...)
	o = strconv.AppendInt(o, (l.now-u.started)/int64(time.Millisecond), 10)
	o = append(o, "\r\n"...)
	if d.closeAfter {
		o = append(o, "connection: close\r\n"...)
	}
	d.out = append(o, "\r\n"...)
	u.scan = headScanner{}
	l.srv.st.response(rs.status)
	u.pool.st.response(rs.status)
	u.pool.st.rqTime.Record(uint64((l.now - u.started) / int64(time.Millisecond)))
	return true
}

// finish ends an exchange whose response is complete: the upstream goes
// back to its pool if it can be reused, and the client's next request
// (pipelined already, perhaps) is processed.
func (l *loop) finish(u *up, reusable bool) {
	d := u.d
	extra := u.in != nil && u.off < len(u.in)
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
	p := u.pool
	if reusable && u.keep && !extra && !u.wantOut && len(p.idle) < l.srv.cfg.MaxIdleUpstream {
		u.pausedIn = false
		l.watchUp(u)
		p.idle = append(p.idle, u)
	} else {
		l.closeUp(u)
	}
	l.srv.st.rqTime.Record(uint64((l.now - d.reqStart) / int64(time.Millisecond)))
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

// upFailed handles an upstream that failed before or during its
// response: the request is retried on a new connection if nothing of the
// response came and the whole request is at hand, answered 503 if
// nothing went to the client yet, and cut otherwise.
func (l *loop) upFailed(u *up) {
	d := u.d
	if d == nil {
		l.removeIdle(u)
		l.closeUp(u)
		return
	}
	if !u.gotResp && u.replayable && d.retries < maxRetries {
		d.retries++
		nu, err := l.dial(u.pool)
		if err == nil {
			nu.out = append(nu.out, u.out...)
			l.putBuf(u.out)
			u.out = nil
			nu.replayable, nu.d, d.u = true, d, nu
			nu.started = l.now
			u.d = nil
			l.closeUp(u)
			if !nu.connecting {
				l.flushUp(nu)
			}
			return
		}
	}
	if u.status == 0 {
		u.d, d.u = nil, nil
		l.closeUp(u)
		l.localReply(d, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", d.state == dsBody)
		return
	}
	l.cutResponse(u)
}

// badGateway answers 502 for an upstream that sent a malformed response
// head, or cuts the client's connection if a response already started.
func (l *loop) badGateway(u *up) {
	d := u.d
	if d == nil || u.status != 0 {
		l.cutResponse(u)
		return
	}
	u.d, d.u = nil, nil
	l.closeUp(u)
	l.localReply(d, 502, "upstream sent a malformed response", d.state == dsBody)
}

// cutResponse closes both sides: the client cannot be told the response
// is incomplete in any other way (Envoy resets the stream).
func (l *loop) cutResponse(u *up) {
	d := u.d
	l.closeUp(u)
	if d != nil {
		if d.outOff < len(d.out) {
			l.flushDown(d)
		}
		l.closeDown(d)
	}
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
	u.closed = true
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
	if d := u.d; d != nil {
		d.u, u.d = nil, nil
	}
}

// sweep enforces the timeouts: idle clients, upstream connects and the
// request timeout.
func (l *loop) sweep() {
	l.sweptAt = l.now
	cfg := &l.srv.cfg
	// Backwards: closing a connection moves the last one into its place,
	// which was checked already.
	for i := len(l.downs) - 1; i >= 0; i-- {
		if i >= len(l.downs) {
			continue
		}
		d := l.downs[i]
		u := d.u
		switch {
		case u == nil && d.state == dsHead && d.headStart != 0 && l.now-d.headStart > int64(cfg.HeadersTimeout):
			l.srv.st.rqHeaderTimeout.Inc()
			d.off = len(d.in)
			d.reqStart = l.now
			l.localReply(d, 408, "request header timeout", true)
		case u == nil && d.state == dsHead && l.now-d.last > int64(cfg.IdleTimeout):
			l.closeDown(d)
		case u != nil && u.connecting && l.now-u.started > int64(cfg.ConnectTimeout):
			u.pool.st.cxConnectFail.Inc()
			l.upFailed(u)
		case u != nil && l.now-d.reqStart > int64(cfg.RequestTimeout):
			l.srv.st.rqTimeout.Inc()
			if u.status != 0 {
				l.cutResponse(u)
				continue
			}
			u.d, d.u = nil, nil
			l.closeUp(u)
			l.localReply(d, 504, "upstream request timeout", true)
		}
	}
}

const hexDigits = "0123456789abcdef"

// appendUUID appends a random version 4 UUID, as weft's x-request-id.
func appendUUID(b []byte, r *mrand.ChaCha8) []byte {
	var u [16]byte
	x, y := r.Uint64(), r.Uint64()
	for i := range 8 {
		u[i], u[8+i] = byte(x>>(8*i)), byte(y>>(8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}
