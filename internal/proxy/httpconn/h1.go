package httpconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// The HTTP/1.1 fast path: a downstream connection is served on the
// goroutine that accepted it, one request after another, with net/http's
// own message reader (http.ReadRequest) and a small response writer
// (h1Writer). net/http's server would add a background reader goroutine
// per request (to notice a client that goes away) and hand each request
// between goroutines; together with the upstream client in package
// cluster, a proxied request here involves no goroutine hand-off at all.
//
// Connections that open with the HTTP/2 preface go to the net/http
// server (h2c). Upgrades stay here: the response writer can be hijacked.
//
// What it gives up: a client that disconnects while its request waits for
// the upstream is noticed once the wait passes watchAfter (h1gone.go),
// not at once as Envoy and the loops notice it; a client that leaves
// while a response body it began to get is idle is noticed at the next
// write.

const (
	// h1BufSize is the size of each downstream connection's read and
	// write buffers (net/http's server uses the same).
	h1BufSize = 4 << 10
	// maxHeaderBytes bounds a request head unless the connection
	// manager sets max_request_headers_kb: Envoy's default (60 KiB).
	maxHeaderBytes = route.MaxHeadBytes
	// maxDrain is how much of a request body the handler left unread is
	// read to keep the connection (net/http's server reads 256 KiB).
	maxDrain = route.DrainBytes
	// rstAvoidance is how long a connection refusing a request reads
	// what the client still sends before closing.
	rstAvoidance = route.DrainFor
)

// h2Preface is what a prior-knowledge HTTP/2 connection starts with.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// connState tracks a fast-path connection for draining: fresh (accepted,
// its first request not begun), idle (between requests, safe to close) or
// busy; closing once it drains (shutdown, or its listener or filter chain
// changed).
const (
	connBusy int32 = iota
	connIdle
	connFresh
	connClosing
	// connParked: idle, with no goroutine; the Server's poller (park_linux.go)
	// owns the connection until it claims it back.
	connParked
)

// freshDrainGrace is how long a connection that drains before its first
// request may still send that request. A client that has just connected
// has usually written its request already (HTTP/1.1 has no way to refuse
// one before it is sent, and clients retry only on reused connections), so
// closing at once would fail it with an EOF; Envoy, too, serves a draining
// connection's request and closes after the response. The wait is bounded
// by this, or the first-byte timeout when shorter.
const freshDrainGrace = time.Second

// h1Conn is one downstream connection on the fast path. Owned by the
// goroutine running serveH1, except state, which shutdown also sets.
type h1Conn struct {
	c       *listener.Conn
	lim     limitedReader
	br      *bufio.Reader
	idle    *idleReader   // waits between requests without the read buffer; nil when the connection cannot
	tls     bool          // the connection is TLS: it waits between requests with a one-byte read (waitTLS)
	queued  func() int    // the socket's bytes not read yet (socketQueued); set at the first request with a body
	one     [1]byte       // waitTLS's read
	bw      *bufio.Writer // from h1Writers while a request is served; nil between requests
	state   atomic.Int32  // connBusy, connIdle, connFresh or connClosing
	scratch [64]byte      // status lines, chunk sizes, dates
	chk     headCheck

	// maxHead and maxLines bound a request head: its bytes (the empty
	// lines before it included) and header lines (route.Limits).
	maxHead  int64
	maxLines int

	headerTimeout time.Duration // from a request's first byte to the end of its head; 0: none
	firstDeadline time.Time     // the read deadline for the first byte; set before the connection is tracked
	idleTimeout   time.Duration // waiting for a request; 0: none
	// Counters of the connection manager; nil in tests.
	onHeaderTimeout, onIdleTimeout func()
	// onRefused counts and logs a request head the connection refused
	// (refuse), which began at start; nil in tests.
	onRefused func(r route.Refusal, start time.Time)
	// server is the Server header of the answers the connection makes
	// itself (refuse); "" for none.
	server string
	// http10: HTTP/1.0 requests are served (the connection manager's
	// accept_http_10), else refused 426 as Envoy refuses them by default.
	http10 bool
	// httpsRefused: an absolute-form https:// target is refused
	// (route.RefuseHTTPSInPlaintext): a plaintext connection whose
	// connection manager uses the remote address.
	httpsRefused bool
	// onDrainClose counts a connection closed because it was draining
	// (shutdown, or its listener or filter chain changed); nil in tests.
	onDrainClose func()

	// Parking (park_linux.go): set when a Server serves the connection, so that
	// a goroutine the poller starts can carry on where the loop parked.
	srv   *Server
	h     handlerFunc
	onEnd func() // untracks and counts the connection's end; runs once, by whichever goroutine ends it
	park  parkState
	// writeDeadline: a response's handler set a write deadline
	// (h1Writer.SetWriteDeadline), cleared before the next request.
	writeDeadline atomic.Bool

	// Watching for a client that leaves while its request waits
	// (h1gone.go): the watch's state and the request's body, the
	// watcher's end (made at the first watch), and the cancel of the
	// context loop serves the connection's requests with.
	goneState atomic.Int32
	goneBody  atomic.Pointer[h1Body]
	goneDone  chan struct{}
	leave     context.CancelCauseFunc
}

// h1Writers holds the write buffers of downstream connections between
// their requests: a response is written within serveOne, so a
// keep-alive connection waiting for its next request holds none. At
// 1,000 idle keep-alive connections that is 4 MiB less.
var h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufSize) }}

// h1Readers and h1Bufs hold the read buffers of keep-alive connections
// waiting for their next request (idleReader), likewise.
var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1BufSize) }}
	h1Bufs    = sync.Pool{New: func() any { return new([h1BufSize]byte) }}
)

func newH1Conn(c *listener.Conn) *h1Conn {
	hc := &h1Conn{c: c, server: "envoy",
		headerTimeout: DefaultRequestHeadersTimeout, idleTimeout: DefaultIdleTimeout,
		maxHead: maxHeaderBytes, maxLines: route.MaxHeaders}
	hc.lim = limitedReader{c: c.Conn, n: hc.maxHead}
	hc.idle = newIdleReader(c.Conn)
	_, hc.tls = c.Conn.(*tls.Conn)
	// From the pool: a keep-alive connection puts its reader back while
	// it waits (idleReader), and new connections reuse those.
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.lim)
	return hc
}

// deadline is the read deadline for a timeout d from now; none for 0.
func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

func count(f func()) {
	if f != nil {
		f()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// drain makes the connection close after its current response, which
// then says "Connection: close", or now if it waits for a request after
// one it served. A fresh connection gets freshDrainGrace to send its first
// request, served as its last. Called by shutdown, under Server.mu, and
// when the listener drains the connection.
func (hc *h1Conn) drain() {
	switch hc.state.Swap(connClosing) {
	case connIdle:
		_ = hc.c.SetReadDeadline(aLongTimeAgo)
	case connParked:
		// No goroutine waits on it: one is started to close it (unless
		// the poller or the idle timer claimed it first, and started one).
		_ = hc.c.SetReadDeadline(aLongTimeAgo)
		hc.srv.unpark(hc)
	case connFresh:
		if d := deadline(freshDrainGrace); hc.firstDeadline.IsZero() || d.Before(hc.firstDeadline) {
			_ = hc.c.SetReadDeadline(d)
		}
	}
}

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// serveH1 serves a connection's HTTP/1.1 requests until it closes, an
// error or a hijack ends it, or shutdown. It returns when the connection is
// done with or handed to the net/http server.
func (s *Server) serveH1(ctx context.Context, c *listener.Conn, m *HCM) {
	hc := newH1Conn(c)
	hc.headerTimeout, hc.idleTimeout = m.headersTimeout, m.idleTimeout
	hc.onHeaderTimeout, hc.onIdleTimeout = m.stats.rqHeaderTimeout.Inc, m.stats.cxIdleTimeout.Inc
	hc.onRefused = func(r route.Refusal, start time.Time) { m.refused(c, r, start) }
	hc.server, hc.http10 = m.localServer(), m.http10
	hc.httpsRefused = m.useRemoteAddress && c.Scheme() == "http"
	hc.maxHead, hc.maxLines = int64(m.limits.Bytes()), m.limits.Lines()
	hc.lim.n = hc.maxHead
	if m.stats.cxDrainClose != nil {
		hc.onDrainClose = m.stats.cxDrainClose.Inc
	}
	// Tracked, and idle, from the start: shutdown must not wait for a
	// connection that has not sent its first bytes yet.
	//
	// A new connection gets the header timeout for its first byte too,
	// not the idle timeout: one that connects and never speaks would
	// otherwise hold a slot of the listener's connection cap for an hour.
	// Envoy arms request_headers_timeout at the first byte; nginx's
	// client_header_timeout and haproxy's timeout http-request start at
	// the connection, as here.
	first := hc.headerTimeout
	if first <= 0 || hc.idleTimeout > 0 && hc.idleTimeout < first {
		first = hc.idleTimeout
	}
	hc.firstDeadline = deadline(first)
	_ = c.SetReadDeadline(hc.firstDeadline)
	hc.state.Store(connFresh)
	if !s.track(hc) {
		_ = c.Close()
		return
	}
	c.OnDrain(hc.drain)
	_, err := hc.br.Peek(1)
	if err != nil {
		s.untrack(hc)
		if !errors.Is(err, io.EOF) {
			s.log.Debug("connection closed before its first request", "src", c.Src.String(), "err", err, "draining", hc.state.Load() == connClosing)
		}
		if hc.state.Load() == connClosing {
			count(hc.onDrainClose)
		} else if isTimeout(err) {
			if first == hc.headerTimeout {
				count(hc.onHeaderTimeout)
			} else {
				count(hc.onIdleTimeout)
			}
		}
		_ = c.Close()
		return
	}
	// Drained meanwhile (the swap fails, the state stays closing): the
	// request is served all the same, as the connection's last.
	hc.state.CompareAndSwap(connFresh, connBusy)
	// The request header timeout runs from the first byte.
	_ = c.SetReadDeadline(deadline(hc.headerTimeout))
	h2, err := startsWithPreface(hc.br)
	if err != nil {
		s.untrack(hc)
		s.log.Debug("connection closed in its first bytes", "src", c.Src.String(), "err", err)
		if isTimeout(err) {
			count(hc.onHeaderTimeout)
		}
		_ = c.Close()
		return
	}
	if h2 {
		s.untrack(hc)
		_ = c.SetReadDeadline(time.Time{})
		hc.lim.n = math.MaxInt64
		// The reader stays in front of the connection for its life:
		// golang.org/x/net/http2's server reads each frame's 9-byte
		// header and then its payload straight from the connection it
		// is given, two read syscalls per frame where a buffer takes
		// one for all the frames that arrived together (measured in
		// docs/bench/proxy.md, round 10). It is not put back in the
		// pool: the connection keeps it until it closes.
		c.Conn = &h2ReadConn{Conn: c.Conn, br: hc.br}
		s.serveH2(ctx, c, m)
		return
	}
	// A connection the loops handed off was counted there in part
	// (listener.Conn.CountedCx): each counts once.
	if !c.CountedCx {
		m.stats.cxTotal.Inc()
	}
	if !c.CountedHTTP1 {
		m.stats.cxHTTP1.Inc()
	}
	m.stats.cxActive.Inc()
	s.serveFast(hc, func(ctx context.Context, w http.ResponseWriter, r *http.Request) { m.serve(ctx, w, r, c) }, func() {
		m.stats.cxActive.Dec()
		m.stats.cxDestroy.Inc()
		s.untrack(hc)
	})
}

// serveFast serves the requests of a tracked connection whose first
// bytes have arrived. end runs once when the connection is done with: on
// this goroutine, or on the one that served its last request after it
// was parked.
func (s *Server) serveFast(hc *h1Conn, h handlerFunc, end func()) {
	hc.srv, hc.h, hc.onEnd = s, h, end
	if !hc.loop(s.base, s.log, h) {
		end()
	}
}

// resume carries on serving a connection the poller, its idle timer or
// a drain claimed back from parking: its next request (or its end) is
// there to read. Runs on a goroutine of its own.
func (hc *h1Conn) resume() {
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.lim)
	if hc.wake(hc.waitRequest()) && hc.loop(hc.srv.base, hc.srv.log, hc.h) {
		return // parked again
	}
	hc.onEnd()
}

// handlerFunc serves one request; ctx ends with the connection.
type handlerFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request)

// loop serves requests until the connection ends, or parks it between
// two requests (parked true: another goroutine owns it now). base is the
// parent of the connection's context; when it ends, the connection is
// closed.
func (hc *h1Conn) loop(base context.Context, log *slog.Logger, h handlerFunc) (parked bool) {
	c := hc.c
	cctx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	hc.leave = cancel
	stop := context.AfterFunc(cctx, func() { _ = c.Close() })
	defer stop()
	for {
		bw := h1Writers.Get().(*bufio.Writer)
		bw.Reset(c)
		hc.bw = bw
		hijacked, keep := hc.serveOne(cctx, log, h)
		if hijacked {
			return false // the hijacker owns and closes the connection, and the buffer
		}
		// Everything was flushed (or the connection is closing): the
		// buffer is free for another connection's response.
		bw.Reset(nil)
		h1Writers.Put(bw)
		hc.bw = nil
		// The idle deadline is set before the connection is marked idle,
		// so that shutdown's abort (drain) comes after it. A connection
		// that may park waits on its goroutine only until parkAfter.
		idleDeadline := deadline(hc.idleTimeout)
		parkAt := hc.parkDeadline(idleDeadline)
		if parkAt.IsZero() {
			_ = c.SetReadDeadline(idleDeadline)
		} else {
			_ = c.SetReadDeadline(parkAt)
		}
		if !keep || !hc.state.CompareAndSwap(connBusy, connIdle) {
			if hc.state.Load() == connClosing {
				count(hc.onDrainClose)
			}
			_ = c.Close()
			return false
		}
		hc.startHead()
		err := hc.waitRequest()
		if !parkAt.IsZero() && isTimeout(err) && (idleDeadline.IsZero() || time.Now().Before(idleDeadline)) {
			// Idle past parkAt, not past the idle timeout: park, unless
			// draining (the timeout was drain's abort) or the connection
			// cannot (then it waits here for the rest of its idle time).
			if hc.srv.park(hc, idleDeadline) {
				return true // the deferred stop and cancel touch only this loop's context
			}
			_ = c.SetReadDeadline(idleDeadline)
			if hc.state.Load() != connClosing {
				err = hc.waitRequest()
			}
		}
		if !hc.wake(err) {
			return false
		}
	}
}

// wake takes a connection that waited for its next request back to
// serving it; false (the connection closed) when the wait failed or the
// connection is draining.
func (hc *h1Conn) wake(err error) bool {
	if !hc.state.CompareAndSwap(connIdle, connBusy) || err != nil {
		if hc.state.Load() == connClosing {
			count(hc.onDrainClose)
		}
		if err != nil && isTimeout(err) && hc.state.Load() != connClosing {
			count(hc.onIdleTimeout)
		}
		_ = hc.c.Close()
		return false
	}
	_ = hc.c.SetReadDeadline(deadline(hc.headerTimeout))
	return true
}

// serveOne reads and answers one request. keep is false when the
// connection cannot carry another request.
func (hc *h1Conn) serveOne(ctx context.Context, log *slog.Logger, h handlerFunc) (hijacked, keep bool) {
	c := hc.c
	// RFC 9112 section 2.2: ignore empty lines before a request line, as
	// Envoy's codecs skip any CR and LF there. They are read through
	// lim, so they count in the head's size (431 past it). Before a
	// connection's first request the header timeout runs meanwhile (as
	// on the loops, from the connection's start); before a later one
	// waitRequest dropped them under the idle timeout.
	for {
		b, err := hc.br.Peek(1)
		if err != nil || b[0] != '\r' && b[0] != '\n' {
			break
		}
		_, _ = hc.br.Discard(1)
	}
	start := time.Now()
	hc.chk.reset()
	if b, _ := hc.br.Peek(hc.br.Buffered()); !hc.chk.scan(b) {
		hc.lim.chk = &hc.chk // the rest of the head is checked as it arrives
	}
	hc.lim.err = nil
	req, err := http.ReadRequest(hc.br)
	hc.lim.chk = nil
	// What the head took past the limit: startHead counted the bytes
	// buffered before it, and those buffered now are the next request's.
	// Past it, the head is refused for its size whatever the reader
	// found after the limit, as a head read through lim alone fails
	// there (errHeadTooLarge) and as the loops refuse it.
	over := hc.lim.n+int64(hc.br.Buffered()) < 0
	hc.lim.n = math.MaxInt64
	if over {
		hc.refuse(route.RefuseHeadTooLarge, start)
		return false, false
	}
	if err != nil {
		if isTimeout(hc.lim.err) {
			// A line cut by the deadline may reach the parser as a
			// malformed one: the deadline is the cause.
			err = hc.lim.err
		}
		if r := readRefusal(err); r != 0 {
			hc.refuse(r, start)
		}
		return false, false
	}
	_ = c.SetReadDeadline(time.Time{})
	if r := hc.checkHead(req); r != 0 {
		hc.refuse(r, start)
		return false, false
	}
	var body *h1Body
	if req.Body != http.NoBody {
		if hc.queued == nil {
			hc.queued = socketQueued(c.Conn)
		}
		body = newH1Body(req, hc.br, &hc.lim, hc.queued, hc.tls)
		req.Body = body
	}
	w := &h1Writer{hc: hc, req: req, header: make(http.Header), length: -1}
	expect := route.ExpectNothing
	for _, v := range req.Header["Expect"] {
		expect = route.ExpectLine(expect, v)
	}
	if expect == route.ExpectContinue {
		// As Envoy's connection manager does unless proxy_100_continue
		// (decodeHeaders): 100 Continue as soon as the head is read,
		// before routing or any upstream, and Expect not forwarded. The
		// client then sends its body whatever the final answer, which a
		// local reply treats as any other's (stream.replyCloses). Any other
		// expectation is forwarded, as Envoy forwards it. An HTTP/1.0
		// client's is ignored (RFC 9110, section 10.1.1).
		req.Header.Del("Expect")
		if req.ProtoAtLeast(1, 1) && !hc.writeContinue() {
			return false, false
		}
	}
	// For HTTP/1.0, Close is set unless the client asked for keep-alive.
	w.closeAfter = req.Close
	hc.armGone(body)
	ok := hc.run(ctx, log, h, w, req)
	hc.stopGone()
	if !ok {
		return false, false
	}
	if w.hijacked {
		return true, false
	}
	// The last flush (a small response's whole, a chunked body's end) is
	// made after the handler returned, when no stream timeout runs any
	// more: a client that stopped reading would hold it, the connection
	// and its goroutine for good. It is bounded by the idle timeout, as
	// the loops bound a response the client does not take (no activity on
	// a connection with no request in flight), unless a timeout of this
	// response already bounded it more tightly (abortWrites).
	bounded := false
	if hc.idleTimeout > 0 && !hc.writeDeadline.Load() {
		bounded = true
		_ = c.SetWriteDeadline(time.Now().Add(hc.idleTimeout))
	}
	w.finish()
	if w.err != nil {
		if bounded && isTimeout(w.err) {
			count(hc.onIdleTimeout)
		}
		return false, false
	}
	if w.closeAfter {
		if body != nil && !body.readWhole() {
			// A response that came before the request's body was read
			// (the connection manager closes after it, as Envoy does):
			// the rest may still be coming, or be in the socket, whose
			// close would then reset the response away.
			hc.linger()
		}
		return false, false
	}
	if hc.writeDeadline.Swap(false) || bounded {
		// Set for this response, which completed.
		_ = c.SetWriteDeadline(time.Time{})
	}
	// A body the handler left unread: read it, up to a point, to reach the
	// next request.
	if req.Body != nil && req.Body != http.NoBody {
		// Bounded in time as well as size: a client that stops sending
		// must not hold the connection.
		_ = c.SetReadDeadline(time.Now().Add(rstAvoidance))
		n, err := io.CopyN(io.Discard, req.Body, maxDrain+1)
		if n > maxDrain || err != nil && err != io.EOF {
			return false, false
		}
	}
	return false, true
}

// writeContinue sends 100 Continue, bounded by the idle timeout as the
// last flush of a response is (serveOne): no stream timer runs yet, and a
// client that pipelines and stops reading would otherwise hold the
// connection and its goroutine once the socket's send buffer is full.
// False when the write failed (the connection ends), counted as an idle
// timeout when it timed out.
func (hc *h1Conn) writeContinue() bool {
	if hc.idleTimeout > 0 {
		_ = hc.c.SetWriteDeadline(time.Now().Add(hc.idleTimeout))
	}
	_, _ = io.WriteString(hc.bw, "HTTP/1.1 100 Continue\r\n\r\n")
	err := hc.bw.Flush()
	if hc.idleTimeout > 0 {
		_ = hc.c.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		if hc.idleTimeout > 0 && isTimeout(err) {
			count(hc.onIdleTimeout)
		}
		return false
	}
	return true
}

// run calls the HCM, turning a panic into a closed connection as net/http's
// server does; http.ErrAbortHandler is the expected one (a response that
// broke after its head was sent).
func (hc *h1Conn) run(ctx context.Context, log *slog.Logger, h handlerFunc, w *h1Writer, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log.Error("panic serving HTTP request", "panic", p, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	h(ctx, w, req)
	return true
}
