package tcpproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// copyBufSize is the size of the buffers bytes are copied through.
const copyBufSize = 32 << 10

// copyBufs holds the copy buffers between reads. A direction that reads a
// plain socket takes one only once bytes have arrived (reader.read), so an
// idle proxied connection holds none: two 32 KiB buffers each before.
var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// copyCounting copies src to dst until either fails or src ends, noting
// in last when bytes last arrived, and returns how many it wrote.
func copyCounting(dst io.Writer, src net.Conn, last *atomic.Int64) int64 {
	r := newReader(src)
	var n int64
	for {
		b, k, err := r.read()
		if k > 0 {
			last.Store(time.Now().UnixNano())
			w, werr := dst.Write(b[:k])
			n += int64(w)
			if werr != nil {
				err = werr
			}
		}
		if b != nil {
			copyBufs.Put(b)
		}
		if err != nil {
			return n
		}
	}
}

// reader reads a connection into pooled buffers.
type reader struct {
	c   net.Conn
	raw syscall.RawConn       // the socket, when reading c is reading it; else nil
	fn  func(fd uintptr) bool // r.rawRead, bound once so that waiting allocates nothing
	buf *[copyBufSize]byte    // what the last raw read filled
	n   int
	err error
}

func newReader(c net.Conn) *reader {
	r := &reader{c: c, raw: socketOf(c)}
	r.fn = r.rawRead
	return r
}

// socketOf returns the socket under c when nothing above it buffers or
// transforms bytes: a plain TCP connection accepted by a listener (not one
// whose first bytes an inspector replays, nor TLS), or a cluster's plain
// upstream connection (which exposes its socket). Otherwise nil.
func socketOf(c net.Conn) syscall.RawConn {
	if lc, ok := c.(*listener.Conn); ok {
		c = lc.Conn
	}
	var sc syscall.Conn
	switch t := c.(type) {
	case *net.TCPConn:
		sc = t
	case syscall.Conn: // the cluster's counted connection over a plain socket
		sc = t
	default:
		return nil
	}
	return rawSocket(sc)
}

// read returns a pooled buffer holding the next k bytes (nil when there
// are none), or the error that ended the connection (io.EOF at its end).
// The caller puts the buffer back.
func (r *reader) read() (*[copyBufSize]byte, int, error) {
	if r.raw == nil {
		b := copyBufs.Get().(*[copyBufSize]byte)
		k, err := r.c.Read(b[:])
		return b, k, err
	}
	r.buf, r.n, r.err = nil, 0, nil
	if err := r.raw.Read(r.fn); err != nil {
		return r.buf, r.n, err
	}
	if r.err == nil && r.n == 0 {
		r.err = io.EOF
	}
	return r.buf, r.n, r.err
}
