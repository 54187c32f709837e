package httpconn

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
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
