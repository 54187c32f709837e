package httpconn

import (
	"bufio"
	"errors"
	"net"
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
