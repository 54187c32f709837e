package httpconn

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// limitedReader is the connection as the read buffer sees it: while a
// request head is read, at most n bytes, so that a huge head fails
// instead of growing without bound.
type limitedReader struct {
	c   net.Conn
	n   int64
	chk *headCheck // fed what is read while a head is checked; else nil
	err error      // the last read error
	// pending is what the connection's idle wait read, read before the
	// connection; pendingBuf, when set, holds it and goes back to h1Bufs
	// once it is read.
	pending    []byte
	pendingBuf *[h1BufSize]byte
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	var n int
	var err error
	if len(l.pending) > 0 {
		n = copy(p, l.pending)
		l.pending = l.pending[n:]
		if len(l.pending) == 0 {
			if l.pendingBuf != nil {
				h1Bufs.Put(l.pendingBuf)
			}
			l.pending, l.pendingBuf = nil, nil
		}
	} else {
		n, err = l.c.Read(p)
	}
	l.n -= int64(n)
	if err != nil {
		l.err = err
	}
	if l.chk != nil && n > 0 && l.chk.scan(p[:n]) {
		l.chk = nil
	}
	return n, err
}

var errHeadTooLarge = errors.New("request head too large")

// replayConn hands a connection to the net/http server with the bytes
// already buffered in front.
type replayConn struct {
	net.Conn
	br *bufio.Reader // nil once drained
}

// h2ReadConn reads an HTTP/2 connection through its buffered reader,
// which holds the client preface and whatever followed it.
type h2ReadConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *h2ReadConn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *replayConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// startHead starts counting the next request head against maxHead, the
// empty lines before it included: the bytes already in the read buffer
// (a pipelined request read with the last one, or during its body) count
// as well as those read from now on through lim, so that a head past the
// limit is refused (431) however it arrived, as the loops refuse it.
// serveOne takes what is still buffered once the head is read off.
func (hc *h1Conn) startHead() {
	hc.lim.n = hc.maxHead - int64(hc.br.Buffered())
}

// waitRequest waits for the first byte of the next request on a
// keep-alive connection: without holding a read buffer when nothing is
// buffered and the connection allows (idleReader). CR and LF bytes before
// it are read and dropped meanwhile (serveOne's empty lines): they start
// no request, as they open no stream in Envoy's codec, so the connection
// idles under its idle timeout, not the header timeout. They are read
// through lim and count in the next head's size: past it, the head is
// read (and refused 431).
func (hc *h1Conn) waitRequest() error {
	for {
		err := hc.waitByte()
		if errors.Is(err, errHeadTooLarge) {
			return nil
		}
		if err != nil {
			return err
		}
		for {
			b, err := hc.br.Peek(1)
			if err != nil || b[0] != '\r' && b[0] != '\n' {
				return nil
			}
			_, _ = hc.br.Discard(1)
			if hc.br.Buffered() == 0 {
				break
			}
		}
	}
}

// waitByte is waitRequest's wait for one byte.
func (hc *h1Conn) waitByte() error {
	switch {
	case hc.br.Buffered() > 0:
	case hc.idle != nil:
		return hc.idle.wait(hc)
	case hc.tls:
		return hc.waitTLS()
	}
	_, err := hc.br.Peek(1)
	return err
}

// waitTLS waits for the next request on a TLS connection with a one-byte
// read, its read buffer back in the pool meanwhile. crypto/tls reads the
// whole record into its own buffer and returns one byte of it: the rest
// of the request is read from there, with no system call more than
// reading it into the buffer would take.
func (hc *h1Conn) waitTLS() error {
	hc.br.Reset(nil)
	h1Readers.Put(hc.br)
	n, err := hc.lim.c.Read(hc.one[:])
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.lim)
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	// An error with the byte (a close after it) comes again on the next
	// read, as the request's.
	hc.lim.pending = hc.one[:n]
	_, err = hc.br.Peek(1)
	return err
}

// startsWithPreface waits for the first bytes and reports whether they
// are the HTTP/2 connection preface, reading no further than needed to
// tell.
func startsWithPreface(br *bufio.Reader) (bool, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if err != nil {
			return false, err
		}
		if !strings.HasPrefix(h2Preface, string(b)) {
			return false, nil
		}
		if n == len(h2Preface) {
			return true, nil
		}
		if br.Buffered() > n {
			n = min(br.Buffered(), len(h2Preface)) - 1
		}
	}
}

// h1Body is a request's body as the handler reads it. It records whether
// the whole body has arrived (Received): it was read to its end, or what
// is left of its length is in the read buffer already, as Envoy's codec
// (and an event loop) would have parsed it by then, reading whatever
// arrives. A chunked body has arrived once read to its end. One
// goroutine reads it at a time (the upstream's writer, then serveOne's
// drain; Arrived while no one does); Received may be called from any.
type h1Body struct {
	rc  io.ReadCloser
	br  *bufio.Reader  // the connection's read buffer, under rc
	lim *limitedReader // under br
	// queued is what the socket holds beyond br (socketQueued), or nil.
	queued func() int
	tls    bool  // lim reads TLS records: the socket's bytes are not the body's
	left   int64 // a body with a length: its bytes not read yet; -1 for a chunked one
	// mu is held by each read, so that Arrived, which reads too, runs
	// only while no one else reads.
	mu       sync.Mutex
	received atomic.Bool
	ended    atomic.Bool // read to its end
}

// newH1Body wraps req's body, read through br and, under it, lim. queued
// is what the socket holds beyond br, when that can be told
// (socketQueued), asked only for a body with a length that br does not
// hold whole: what has reached the socket has arrived, as Envoy would
// read it at once.
func newH1Body(req *http.Request, br *bufio.Reader, lim *limitedReader, queued func() int, tls bool) *h1Body {
	b := &h1Body{rc: req.Body, br: br, lim: lim, queued: queued, tls: tls, left: req.ContentLength}
	b.check()
	if !b.received.Load() && b.left >= 0 && queued != nil && int64(br.Buffered()+queued()) >= b.left {
		b.received.Store(true)
	}
	return b
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.rc.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	if err == io.EOF {
		b.received.Store(true)
		b.ended.Store(true)
	} else {
		b.check()
	}
	return n, err
}

// check notes a body with a length whose rest is buffered.
func (b *h1Body) check() {
	if b.left >= 0 && int64(b.br.Buffered()) >= b.left {
		b.received.Store(true)
	}
}

func (b *h1Body) Close() error { return b.rc.Close() }

// Received reports whether the whole body has arrived (h1Body).
func (b *h1Body) Received() bool { return b.received.Load() }

// Arrived reports whether the whole body has arrived by now, looking
// further than Received, for a local reply (stream.replyCloses): a body
// with a length has when its rest is in the read buffer or the
// socket's; a chunked one is read to its end from what is there,
// without waiting for more, and dropped (the request is answered: no one
// needs it any more), as Envoy's codec would have parsed it by then.
// Over TLS only what the read buffer holds counts for a chunked body (a
// read of the socket's bytes could wait for the rest of a record). A
// body being read (the upstream's writer waits for more of it) has not
// arrived.
func (b *h1Body) Arrived() bool {
	if b.received.Load() {
		return true
	}
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	queued := 0
	if b.queued != nil {
		queued = b.queued()
	}
	if b.left >= 0 {
		if int64(b.br.Buffered()+queued) >= b.left {
			b.received.Store(true)
		}
		return b.received.Load()
	}
	if b.tls {
		queued = 0
	}
	// lim's bound makes a read past what is there fail (errHeadTooLarge)
	// rather than wait: the body is then cut, and the connection closes
	// after the reply.
	bound := b.lim.n
	b.lim.n = int64(queued)
	_, err := io.Copy(io.Discard, b.rc)
	b.lim.n = bound
	if err == nil {
		b.received.Store(true)
		b.ended.Store(true)
	}
	return b.received.Load()
}

// readWhole reports whether the body was read to its end: a connection
// closing after its response with some of it unread lingers (linger).
func (b *h1Body) readWhole() bool { return b.ended.Load() }

// linger ends a connection whose last response is out while the client
// may still be sending (a refused head, a response that came before the
// request's body): its write side is closed and what comes is read and
// dropped for a moment (up to maxDrain), so that the response is not
// lost to the reset a close with unread bytes sends. The caller closes
// the connection.
func (hc *h1Conn) linger() {
	if halfClose(hc.c.Conn) {
		_, _ = io.CopyN(io.Discard, hc.c.Conn, maxDrain)
	}
}

// halfClose sends c's FIN after what was written to it and bounds what
// is still read from it to rstAvoidance from now (linger,
// lingerUpgraded); false when c cannot close its write side alone.
func halfClose(c net.Conn) bool {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(rstAvoidance))
	return true
}
