package evloop

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/bodychain"
	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

const (
	// bufSize is the size of the buffers connections borrow from their
	// loop while they have bytes to hold; an idle connection holds none.
	bufSize = 16 << 10
	// maxFreeBufs bounds the buffers a loop keeps for reuse. The free
	// buffers a whole poolSweepEvery did not need are freed (trimBufs):
	// at 1,000 requests/s a loop's working set is a few buffers, while a
	// burst (wrk -c256 at saturation) leaves the list full, 4 MB per
	// loop held until the process ends before trimBufs (docs/bench/
	// proxy.md, "Memory: h2c and weft proxy with mTLS").
	maxFreeBufs = 256
	// bigBufSize is the second size class of the free lists: a buffer
	// of bufSize grown once (growBuf, appendBuf). A full-size HTTP/2
	// DATA frame (16,384 bytes and its 9-byte header) does not fit one
	// of bufSize: the output buffers of HTTP/2 connections, client's and
	// upstream's, and an HTTP/2 upstream's read buffer grow to it on
	// every large response or body, and were made anew each time (about
	// six per 100 KiB response) when only buffers of bufSize were kept.
	// A buffer grown past it is not kept.
	bigBufSize = 2 * bufSize
	// maxFreeBigBufs bounds the grown buffers a loop keeps for reuse,
	// trimmed as the others (trimBufs): with maxFreeBufs, a loop's free
	// lists hold 6 MiB at most (4 MiB of bufSize, 2 MiB of bigBufSize).
	// A connection holds one only while it has bytes in it, as any
	// buffer: an idle one holds none.
	maxFreeBigBufs = 64
	// maxEvents is how many events one epoll_wait returns at most.
	maxEvents = 256
	// acceptBatch bounds the connections accepted per wake-up.
	acceptBatch = 64
	// maxDrain and drainFor bound how much and how long a connection that
	// ends is read after its last response, so that closing it with
	// unread bytes does not reset it before the client read the answer
	// (weft proxy's HTTP/1.1 path does the same).
	maxDrain = proxyroute.DrainBytes
	drainFor = proxyroute.DrainFor
	// freshDrainGrace is how long a connection drained before its first
	// request has to send it (weft proxy's HTTP/1.1 path waits as long).
	freshDrainGrace = time.Second
	// maxRetries is the static routes' retry budget for a request that
	// failed before any response byte (connect failure, reset): App
	// Mesh's default retry policy gives 2. A Router's targets bring their
	// route's policy (Target.Retry).
	maxRetries = 2
)

// Downstream states.
const (
	dsHead = iota // reading a request head
	dsBody        // forwarding the request's body
	dsWait        // request sent, waiting for the end of the response
	dsSkip        // dropping the body of a request answered before it was read (skipBody)
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
	fd          int
	in          []byte // borrowed; nil when no byte is buffered
	off         int    // first unconsumed byte of in
	scan        headScanner
	out         []byte // borrowed; bytes still to write to the client, from outOff
	outOff      int
	state       uint8
	bodyLeft    int64 // request body bytes still to forward (Content-Length)
	chunked     bool  // the request body is chunked: chunks finds its end
	chunks      chunkScanner
	u           *up  // the upstream exchange in flight
	closeAfter  bool // close once the current response is written
	head        bool // the request in flight is a HEAD: its answer has no body
	grpc        bool // the request in flight is gRPC: a local reply is a gRPC status (localReply)
	pausedIn    bool // not reading: the buffer is full or the upstream is not taking the body
	wantOut     bool // waiting for the socket to take out
	mask        uint32
	closed      bool
	idx         int   // position in loop.downs
	last        int64 // last activity, loop time
	outAt       int64 // loop time out last made progress while wantOut: an HTTP/1.1 response's stall runs from it (h1StallDeadline)
	reqStart    int64
	timeout     int64       // the request's route timeout (Target.Timeout); 0: none
	idle        int64       // the request's stream idle timeout (the route's, else the chain's); 0: none
	idleOn      bool        // idle bounds the request after its end too: no route timeout, or a longer one (idleAt)
	rtFrom      int64       // loop time the route timeout runs from: the request's end (reqComplete)
	bodyIn      bool        // the request's body is still coming: its route timeout waits (reqComplete)
	headStart   int64       // when the first byte of the head being read came
	retries     int         // retries of the request in flight
	gen         *generation // the configuration it was accepted under
	requests    int         // requests dispatched
	drainNext   bool        // drained before its first request: that one is its last
	drainBy     int64       // loop time by which the first request must come when drainNext
	staleRetry  bool        // a pooled connection found closed was replaced
	draining    bool        // the last response is out: reading what the client still sends, then closing
	handOffNext bool        // the next request goes to HandOff once the answers before it are written
	drained     int
	skipBy      int64        // loop time by which a skipped body must end (dsSkip); drained counts its bytes
	processing  bool         // process is at work on its bytes: replyDone need not call it
	rs          retryState   // retry_linux.go
	tm          timerSlot    // timer_linux.go
	lg          *logState    // accesslog_linux.go; nil when not logged
	tls         *tlsrec.Conn // the connection's TLS after its handshake; nil in plaintext
	h2c         *h2conn      // an HTTP/2 connection's (h2conn_linux.go)
	h2          *h2stream    // an HTTP/2 stream's request: no descriptor of its own (h2stream_linux.go)
	hb          *h1h2        // an HTTP/1.1 request's stream to an HTTP/2 upstream (h1h2_linux.go)
}

// up is an upstream connection, idle in its pool or serving one request.
type up struct {
	fd     int
	pool   *clusterPool
	d      *down  // the client it serves; nil when idle
	in     []byte // borrowed response bytes
	off    int
	out    []byte // borrowed request bytes, kept until the response starts (a retry replays them)
	outOff int
	// kept holds, ahead of out, the first bytes of a request kept for a
	// retry once its body outgrew one buffer (sendUp): a chain of the
	// loop's buffers, not one buffer grown as the body comes; out then
	// stays empty while it is kept. keptOff is how much of kept went
	// upstream, counted from kept.Base() (a released chain's front moves
	// to its end): flushUp writes kept before out (writeKept, keptWritten).
	kept       bodychain.Chain
	keptOff    int
	replayable bool // out (after kept) holds all of the request read so far, kept for a retry: a body still arriving too while one may come (dispatch, sendUp, dropKept)
	streamed   bool // the request's body did not all come with its first write: not sent again on a stale pooled connection (upFailed)
	connecting bool
	// timedOut: its connect timeout ended the connect (connectTimedOut);
	// connErr: why else its connect or TLS handshake failed (the
	// socket's errno, the handshake's error). The reply to its request
	// says which (proxyroute.ConnectFailed).
	timedOut bool
	connErr  error
	reused   bool
	scan     headScanner
	rstate   uint8
	left     int64
	chunks   chunkScanner
	status   int
	gotResp  bool // a response byte arrived
	keep     bool // reusable once the response ends
	pausedIn bool
	wantOut  bool
	mask     uint32
	closed   bool
	started  int64 // connect start, then request sent
	// connectFor is the connect's timeout (connectBy): its pool's when
	// it started, kept as Envoy's connect timer is armed once.
	connectFor int64
	// With an Observer: the attempt's target, and whether its outcome is
	// still to be told.
	tag       any
	cluster   string
	observing bool
	// rh is the attempt's final response head as the Observer hears of
	// it (readHead); grpcWait: its Head waits for the gRPC response's
	// end (observeGRPCDone); headOpen: the Observer heard of the head
	// and not yet of the response's end (observeCut).
	rh                 proxyroute.ResponseHead
	grpcWait, headOpen bool
	// Over TLS: the connection's records after the handshake, and whether
	// the handshake runs (on a goroutine; connecting meanwhile).
	tls         *tlsrec.Conn
	handshaking bool
	h2          *h2up // an HTTP/2 connection's (h2up_linux.go)
	// cx is what the Observer's Connected gave back for the connection
	// (counted), told to its Closed once when the connection closes.
	cx      any
	counted bool
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
	used int64 // loop time of the last request (pools of a Router's hosts)
	gone bool  // dropped from hostPools: connections that finish close
	h2   []*up // HTTP/2 connections (h2up_linux.go)
	// h2Idle is Target.IdleTimeout of the last request (h2up_linux.go).
	h2Idle time.Duration
	// h2Win is Target.H2Windows of the last request: the windows its new
	// HTTP/2 connections give the upstream (h2up_linux.go).
	h2Win proxyroute.H2Windows

	// tls: new connections originate TLS with it (the Target's of the
	// last request); nil: plaintext.
	tls ClientTLS
	// connect bounds the connects it starts (connectFor): the Target's
	// ConnectTimeout of the last request; 0: Config's.
	connect time.Duration
	// tag is the Target's Tag of the last request (its host), told to
	// the Observer with the connections the pool opens (cxConnected).
	tag any
}

// hostKey names the pool of one host of a Router's cluster.
type hostKey struct {
	cluster string
	host    netip.AddrPort
}

const (
	// maxHostPools bounds the pools of a Router's hosts per loop; beyond
	// it, the sweep drops the pools unused the longest.
	maxHostPools = 4096
	// hostPoolIdle is how long a host's pool is kept without requests.
	hostPoolIdle = time.Minute
)

// loop is one event loop: its epoll, listening socket, connections,
// upstream pools and buffers. Only its own goroutine touches it after
// newLoop, except wakeUp.
type loop struct {
	srv     *Server
	id      int
	ep      int
	ln      int
	wake    int // eventfd: written to stop the loop
	fds     []fdRef
	downs   []*down
	pools   []clusterPool
	hpools  map[hostKey]*clusterPool // with a Router
	hv      headView
	drained uint64   // the Server's drainGen last acted on
	retired uint64   // the Server's retireGen last acted on
	bufs    [][]byte // free buffers of bufSize
	bufsLow int      // the fewest free buffers held since the last trimBufs
	bigs    [][]byte // free buffers of bigBufSize
	bigsLow int      // the fewest free bigs held since the last trimBufs
	req     request
	resp    response
	mut     headerMutation // the request header mutations being written upstream (headerops.go)
	rng     *mrand.ChaCha8
	epoch   time.Time
	now     int64
	dt      loopDate  // date_linux.go
	sweptAt int64     // the host pools' last sweep
	timers  timerHeap // timer_linux.go
	events  [maxEvents]unix.EpollEvent

	// TLS: the handshakes this loop started and has not taken back, and
	// their outcomes, posted by their goroutines (hsMu guards hsDone and
	// hsClosed; the rest is the loop's).
	handshaking int
	hsMu        sync.Mutex
	hsDone      []handshaken
	hsClosed    bool   // closeAll ran: a finishing handshake closes its socket itself
	tlsIn       []byte // ciphertext read, before Feed

	// The hosts posted gone (gone_linux.go) and not yet taken; goneMu
	// guards gone.
	goneMu sync.Mutex
	gone   []hostKey

	h2dirty   []*h2conn             // HTTP/2 connections with frames to write at the iteration's end
	h2updirty []*h2up               // upstream HTTP/2 connections with frames to write (h2up_linux.go)
	iov       [maxOutIov]unix.Iovec // the writevs of writeOut (h2OutWrite, writeKept)
	outv      [maxOutIov][]byte     // the buffers of one writeOut, cleared after it

	// HTTP/2 client and upstream streams, recycled (h2pool_linux.go).
	streams  streamPool[h2stream]
	ustreams streamPool[h2ustream]
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
		req:  request{lines: make([]headerLine, 0, 32)},
		resp: response{lines: make([]headerLine, 0, 32)}, hpools: map[hostKey]*clusterPool{}}
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
func (l *loop) run(ctx context.Context) error {
	var w waiter = threadWaiter{l.ep}
	switch {
	case l.srv.cfg.RawWait:
		// Not locked: preempted (every 10 ms by sysmon), the goroutine
		// is picked up again by whichever thread is free, with no
		// hand-off between threads.
		w = rawWaiter{l.ep}
	case l.srv.cfg.LockThreads:
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	default:
		nw, err := newNetpollWaiter(l.ep)
		if err != nil {
			return fmt.Errorf("netpoll waiter: %w", err)
		}
		w = nw
	}
	defer w.close()
	for {
		n, err := w.wait(l.events[:], l.waitFor())
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
				l.accept(ctx)
			case fd == l.wake:
				var b [8]byte
				_, _ = unix.Read(l.wake, b[:]) // resets the eventfd
				if l.srv.stopping.Load() {
					return nil
				}
				l.takeHandshakes()
				l.takeGone()
				if l.srv.shutdown.Load() && l.ln >= 0 {
					// Accept no more: the kernel sends new connections to
					// the listeners left (none once every loop is here).
					_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, l.ln, nil)
					unix.Close(l.ln)
					l.srv.lns[l.id] = -1 // read by Serve after this loop returned
					l.ln = -1
				}
				if g := l.srv.drainGen.Load(); g != l.drained {
					l.drained = g
					l.drainConns(false)
				}
				if g := l.srv.retireGen.Load(); g != l.retired {
					l.retired = g
					l.drainConns(true)
				}
			case fd < len(l.fds):
				r := l.fds[fd]
				if d := r.d; d != nil {
					l.onDown(d, ev.Events)
					l.arm(d)
				} else if u := r.u; u != nil {
					d := u.d
					l.onUp(ctx, u, ev.Events)
					if d != nil {
						l.arm(d)
					}
				}
			}
		}
		l.expireTimers()
		if len(l.h2dirty) > 0 || len(l.h2updirty) > 0 {
			l.flushH2()
		}
		if len(l.streams.dead) > 0 || len(l.ustreams.dead) > 0 {
			l.recycleDead(recycleStreams)
		}
		if l.now-l.sweptAt >= int64(poolSweepEvery) {
			l.sweptAt = l.now
			l.sweepPools(hostPoolIdle)
			l.lightenH2()
			l.trimBufs()
		}
		if l.ln < 0 && len(l.downs) == 0 && l.handshaking == 0 {
			return nil // shut down and drained
		}
	}
}

// closeAll closes every connection and the loop's descriptors. It runs
// after run returned.
func (l *loop) closeAll() {
	l.dropHandshakes()
	for len(l.downs) > 0 {
		l.closeDown(l.downs[len(l.downs)-1])
	}
	for i := range l.pools {
		for _, u := range l.pools[i].idle {
			l.closeUp(u)
		}
		l.pools[i].idle = nil
	}
	for k, p := range l.hpools {
		l.dropPool(k, p)
	}
	// Whatever upstream connection is left (an HTTP/2 one of a pool
	// without hosts, one mid-handshake) closes too: the Observer hears
	// of every connection's close.
	for _, r := range l.fds {
		if r.u != nil && !r.u.closed {
			l.closeUp(r.u)
		}
	}
	unix.Close(l.ep)
	unix.Close(l.wake)
}

// drainConns closes the connections without a request in flight and
// makes the others close after their response: every one, or with
// retired those of retired chains.
func (l *loop) drainConns(retired bool) {
	for i := len(l.downs) - 1; i >= 0; i-- {
		if i >= len(l.downs) {
			continue
		}
		d := l.downs[i]
		if d.drainNext || d.closeAfter || retired && !d.gen.retired.Load() {
			continue
		}
		if d.h2c != nil {
			l.h2Drain(d)
			continue
		}
		d.gen.st.cxDrainClose.Inc()
		idle := d.u == nil && d.state == dsHead && (d.in == nil || d.off == len(d.in)) && d.outOff >= len(d.out)
		switch {
		case idle && d.requests == 0:
			// Its client may have sent a request already that is on its
			// way: it is served, as the connection's last, if it comes
			// within freshDrainGrace.
			d.drainNext, d.drainBy = true, l.now+int64(freshDrainGrace)
		case idle:
			l.closeDown(d)
		default:
			d.closeAfter = true
		}
	}
	for _, d := range l.downs {
		l.arm(d)
	}
}

// hostPool returns the pool of a Router's cluster host, made on first use.
func (l *loop) hostPool(cluster string, host netip.AddrPort) *clusterPool {
	k := hostKey{cluster, host}
	p := l.hpools[k]
	if p == nil {
		if len(l.hpools) >= maxHostPools {
			l.sweepPools(0)
		}
		p = &clusterPool{def: &clusterDef{name: cluster, endpoints: []netip.AddrPort{host}}, st: l.srv.clusterCounters(cluster)}
		l.hpools[k] = p
	}
	p.used = l.now
	return p
}

// sweepPools drops the host pools without a request for longer than
// idle, or, when there are too many, the older half.
func (l *loop) sweepPools(idle time.Duration) {
	cut := l.now - int64(idle)
	if idle == 0 {
		cut = l.now
		for _, p := range l.hpools {
			cut = min(cut, p.used)
		}
		cut += (l.now - cut) / 2
	}
	for k, p := range l.hpools {
		if p.used <= cut {
			l.dropPool(k, p)
		} else if len(p.h2) > 0 {
			l.h2UpCloseIdle(p)
		}
	}
}

func (l *loop) dropPool(k hostKey, p *clusterPool) {
	for _, u := range p.idle {
		l.closeUp(u)
	}
	p.idle, p.gone = nil, true
	l.h2UpDropPool(p)
	delete(l.hpools, k)
}

// --- registration -----------------------------------------------------

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

func (l *loop) watchDown(d *down) {
	if d.h2 != nil {
		return // a stream: its connection is watched
	}
	l.watch(d.fd, &d.mask, !d.pausedIn, d.wantOut)
}
func (l *loop) watchUp(u *up) {
	if u.handshaking {
		return // out of the epoll set: its handshake goroutine has the socket
	}
	l.watch(u.fd, &u.mask, !u.pausedIn, u.wantOut || u.connecting)
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
