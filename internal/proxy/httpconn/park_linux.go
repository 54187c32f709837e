//go:build linux

package httpconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking: a keep-alive HTTP/1.1 connection idle between requests for
// longer than the server's parkAfter gives up its goroutine. Its socket
// goes into an epoll instance of the Server's own (EPOLLONESHOT, so one
// wake-up per park), its read buffer back to the pool, and the goroutine
// returns, freeing its stack; when the socket becomes readable (the next
// request, or the client's close) the poller starts a goroutine that
// carries on from there (h1Conn.resume). The socket stays registered with
// Go's own netpoller, which is edge-triggered: the resumed goroutine just
// reads, as one that had waited would.
//
// Only when nothing is buffered above the socket: the connection's read
// buffer is empty (a pipelined request is served at once) and, over TLS,
// crypto/tls holds no record it has read but not returned. The wait up to
// parkAfter is a read with that deadline: it returns what crypto/tls
// buffers, so a timeout means only the socket can bring more. Anything
// wrapping the socket besides crypto/tls must say it buffers nothing
// (listener's peeked connections do).
//
// What a parked connection keeps: its h1Conn and the timer of its idle
// timeout. The idle timeout, drain and shutdown claim it back from the
// poller as a wake-up does and close it on a goroutine of their own.

// bufferedConn is a wrapper that may hold bytes read from the connection
// under it (listener's peeked connections).
type bufferedConn interface {
	Buffered() int
	NetConn() net.Conn
}

// parkState is a connection's parking bookkeeping, owned by the goroutine
// serving it, except token, deadline and timer, which the poller, the
// timer and drain read under poller.mu.
type parkState struct {
	raw        syscall.RawConn // the socket; nil until found, or when the connection cannot park
	probed     bool            // raw was looked for
	registered bool            // the socket is in the poller's epoll set (armed or not)
	token      uint64          // the current park's key in poller.conns
	deadline   time.Time       // the current park's idle deadline; zero: none
	timer      *time.Timer     // fires the idle timeout of a parked connection
}

// maxPollEvents is how many readiness events one epoll_wait returns.
const maxPollEvents = 256

// poller is the Server's epoll instance for parked connections and the
// goroutine waiting on it. The epoll descriptor is itself registered with
// Go's netpoller (an epoll descriptor becomes readable when one of its own
// has an event), so the goroutine waits for it as for a socket: no thread
// of its own, and a wake-up costs no hand-off between threads.
type poller struct {
	log    *slog.Logger
	epfd   int
	ep     *os.File        // epfd, as Go's netpoller sees it; owns the descriptor
	rc     syscall.RawConn // ep's
	stopfd int             // eventfd that stops run
	mu     sync.Mutex
	conns  map[uint64]*h1Conn // parked connections by token; protected by mu
	next   uint64             // last token handed out; protected by mu
	shut   bool               // no more parking; protected by mu
}

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// Token 0 is the eventfd's: connections get 1 and up.
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, fmt.Errorf("epoll descriptor non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		_ = unix.Close(wake)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	return &poller{log: log, epfd: epfd, ep: ep, rc: rc, stopfd: wake, conns: map[uint64]*h1Conn{}}, nil
}

// run waits for parked connections to become readable and starts a
// goroutine serving each, until stop. It waits in Go's netpoller: each
// round takes the ready events without blocking (epoll_wait with a zero
// timeout) and, when there are none, parks the goroutine until the epoll
// descriptor is readable. close releases the descriptors once it
// returned.
func (p *poller) run() {
	events := make([]unix.EpollEvent, maxPollEvents)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			if errors.Is(werr, unix.EINTR) {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			// Not expected with a valid epoll descriptor: nothing parks
			// any more, and the parked connections wait on goroutines.
			p.log.Error("connection poller stopped", "err", err)
			p.stopParking()
			p.resumeAll()
			return
		}
		for i := range events[:n] {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				return // stop
			}
			hc := p.claim(tok)
			if hc == nil {
				continue // claimed by its idle timer or a drain meanwhile
			}
			// Draining meanwhile: the swap fails and resume closes it.
			hc.state.CompareAndSwap(connParked, connIdle)
			go hc.resume() // ends when the connection parks again or closes
		}
	}
}

// stop makes run return; it must be called once, when no connection can
// park any more (every tracked connection is gone).
func (p *poller) stop() {
	p.stopParking()
	one := [8]byte{1} // any non-zero count makes the eventfd readable
	_, _ = unix.Write(p.stopfd, one[:])
}

func (p *poller) stopParking() {
	p.mu.Lock()
	p.shut = true
	p.mu.Unlock()
}

// close releases the descriptors, after run returned.
func (p *poller) close() {
	_ = p.ep.Close()
	_ = unix.Close(p.stopfd)
}

// resumeAll hands every parked connection back to a goroutine.
func (p *poller) resumeAll() {
	p.mu.Lock()
	var hcs []*h1Conn
	for tok, hc := range p.conns {
		delete(p.conns, tok)
		if hc.park.timer != nil {
			hc.park.timer.Stop()
		}
		hcs = append(hcs, hc)
	}
	p.mu.Unlock()
	for _, hc := range hcs {
		hc.state.CompareAndSwap(connParked, connIdle)
		go hc.resume() // ends when the connection closes (it cannot park again)
	}
}

// claim takes a parked connection out of the poller; nil when another
// claimed it first.
func (p *poller) claim(tok uint64) *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	hc := p.conns[tok]
	if hc == nil {
		return nil
	}
	delete(p.conns, tok)
	if hc.park.timer != nil {
		hc.park.timer.Stop()
	}
	return hc
}

// parkDeadline is when a connection waiting for its next request parks
// (the read deadline of that wait), given its idle deadline; zero when it
// does not: parking is off or unavailable, the connection cannot park, or
// its idle timeout comes first.
func (hc *h1Conn) parkDeadline(idle time.Time) time.Time {
	s := hc.srv
	if s == nil || s.parkAfter < 0 || s.poll.Load() == nil || hc.parkConn() == nil {
		return time.Time{}
	}
	at := time.Now().Add(s.parkAfter)
	if !idle.IsZero() && !at.Before(idle) {
		return time.Time{}
	}
	return at
}

// parkConn returns the connection's socket when what wraps it buffers
// nothing the socket's readiness would not announce: crypto/tls (see
// above), or a wrapper reporting no buffered bytes. Else nil.
func (hc *h1Conn) parkConn() syscall.RawConn {
	if !hc.park.probed {
		hc.park.probed = true
		var c net.Conn = hc.c.Conn
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		for {
			w, ok := c.(bufferedConn)
			if !ok {
				break
			}
			c = w.NetConn()
		}
		if tc, ok := c.(*net.TCPConn); ok {
			hc.park.raw, _ = tc.SyscallConn()
		}
	}
	if hc.park.raw == nil || hc.wrapperBuffered() {
		return nil
	}
	return hc.park.raw
}

// wrapperBuffered reports whether a wrapper between crypto/tls (or the
// connection) and the socket still holds bytes.
func (hc *h1Conn) wrapperBuffered() bool {
	var c net.Conn = hc.c.Conn
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	for {
		b, ok := c.(bufferedConn)
		if !ok {
			return false
		}
		if b.Buffered() > 0 {
			return true
		}
		c = b.NetConn()
	}
}

// park hands hc, idle with nothing buffered, to the poller: true when it
// is parked and the caller must not touch it again. false (hc unchanged,
// still the caller's) when it is draining, nothing may park, or epoll
// refused the socket.
func (s *Server) park(hc *h1Conn, idle time.Time) bool {
	p := s.poll.Load()
	raw := hc.parkConn()
	if p == nil || raw == nil || hc.br.Buffered() > 0 || len(hc.lim.pending) > 0 {
		return false
	}
	// The resumed goroutine's wait ends at the idle deadline, as the
	// timer's claim does.
	_ = hc.c.SetReadDeadline(idle)
	br := hc.br
	if !p.add(hc, raw, idle) {
		return false
	}
	// Parked: another goroutine may own hc already. br is no longer its
	// (resume takes one from the pool).
	br.Reset(nil)
	h1Readers.Put(br)
	return true
}

// add registers a parked connection. hc.br is dropped under mu, before
// the socket is armed, so that a resumed goroutine never sees it.
func (p *poller) add(hc *h1Conn, raw syscall.RawConn, idle time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut || !hc.state.CompareAndSwap(connIdle, connParked) {
		return false
	}
	p.next++
	tok := p.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	var err error
	cerr := raw.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_MOD
		if !hc.park.registered {
			op = unix.EPOLL_CTL_ADD
		}
		err = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if err != nil && op == unix.EPOLL_CTL_MOD && errors.Is(err, unix.ENOENT) {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil || err != nil {
		hc.state.CompareAndSwap(connParked, connIdle)
		return false
	}
	hc.park.registered = true
	hc.park.token, hc.park.deadline = tok, idle
	hc.br = nil
	p.conns[tok] = hc
	if !idle.IsZero() {
		if hc.park.timer == nil {
			hc.park.timer = time.AfterFunc(time.Until(idle), func() { p.expire(hc) }) // stopped by claim
		} else {
			hc.park.timer.Reset(time.Until(idle))
		}
	}
	return true
}

// expire is a parked connection's idle timeout: it is claimed back and
// resumed with a read that fails at once, which closes it and counts the
// timeout as a waiting connection's would.
func (p *poller) expire(hc *h1Conn) {
	p.mu.Lock()
	if p.conns[hc.park.token] != hc || hc.park.deadline.IsZero() || time.Now().Before(hc.park.deadline) {
		// Claimed already, or a late run of a timer since re-armed for a
		// later park.
		p.mu.Unlock()
		return
	}
	delete(p.conns, hc.park.token)
	p.mu.Unlock()
	_ = hc.c.SetReadDeadline(aLongTimeAgo)
	hc.state.CompareAndSwap(connParked, connIdle)
	go hc.resume() // ends at once: the read times out and the connection closes
}

// unpark claims a parked connection back for drain (which set its state
// to closing and its read deadline in the past) and resumes it, to close.
// Nothing happens when the poller or the idle timer claimed it first:
// their goroutine sees the drain.
func (s *Server) unpark(hc *h1Conn) {
	p := s.poll.Load()
	if p == nil {
		return
	}
	p.mu.Lock()
	tok := hc.park.token
	p.mu.Unlock()
	if p.claim(tok) == hc {
		go hc.resume() // ends at once: the connection is draining
	}
}
