//go:build linux

package httpconn

import (
	"bufio"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// idleReader waits for a keep-alive connection's next request without
// holding a read buffer: it reads the socket through its RawConn with a
// pooled buffer that goes back to the pool whenever the read would block,
// so a connection parked between requests holds neither buffer. It makes
// the same system calls as a read through the net.Conn (one read that
// answers EAGAIN, the wait, the read). Plain TCP connections only: a TLS
// connection reads records through its own buffers.
//
// Why raw reads: with the read and write buffers held, an idle plaintext
// keep-alive connection cost 23.0 KB of RSS (13.1 KB Go heap); with both
// pooled, 16.0 KB (5.6 KB heap), the rest mostly the goroutine's 8 KB
// stack. Measured with 1,000 idle connections on a fresh proxy,
// `go run ./bench/proxybench -idle-conns 1000` on a quiet 2 vCPU machine
// (docs/bench/proxy.md, "Speed work, step 2", for the full command and
// load).
type idleReader struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool // r.read, bound once so that waiting allocates nothing
	buf *[h1BufSize]byte      // what the last read filled; nil when it read nothing
	n   int
	err error
}

func newIdleReader(c net.Conn) *idleReader {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &idleReader{raw: raw}
	r.fn = r.read
	return r
}

// read is the RawConn callback: false (wait for readiness) when nothing
// is there to read yet.
func (r *idleReader) read(fd uintptr) bool {
	b := h1Bufs.Get().(*[h1BufSize]byte)
	for {
		n, err := syscall.Read(int(fd), b[:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			h1Bufs.Put(b)
			return false
		}
		if err != nil || n <= 0 {
			h1Bufs.Put(b)
			r.n, r.err = 0, err
			if err != nil {
				r.err = os.NewSyscallError("read", err)
			}
			return true
		}
		r.buf, r.n = b, n
		return true
	}
}

// wait returns hc's read buffer to the pool, waits for the next bytes
// (bounded by the connection's read deadline), and puts them in front of
// a pooled read buffer for the next request.
func (r *idleReader) wait(hc *h1Conn) error {
	hc.br.Reset(nil)
	h1Readers.Put(hc.br)
	r.buf, r.n, r.err = nil, 0, nil
	err := r.raw.Read(r.fn)
	hc.br = h1Readers.Get().(*bufio.Reader)
	hc.br.Reset(&hc.lim)
	if r.buf != nil {
		hc.lim.pending, hc.lim.pendingBuf = r.buf[:r.n], r.buf
		r.buf = nil
	}
	switch {
	case err != nil:
		return err
	case r.err != nil:
		return r.err
	case r.n == 0:
		return io.EOF
	}
	_, err = hc.br.Peek(1)
	return err
}

// socketQueued returns a func telling how many bytes c's socket has
// received that were not read yet (SIOCINQ): of a TLS connection, the
// records' bytes, which crypto/tls has not read (what it holds already is
// not counted). Nil when c is not over TCP.
func socketQueued(c net.Conn) func() int {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() int {
		n := 0
		_ = raw.Control(func(fd uintptr) {
			if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
				n = v
			}
		})
		return n
	}
}
