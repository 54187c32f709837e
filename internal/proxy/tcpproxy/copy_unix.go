//go:build unix

package tcpproxy

import (
	"os"
	"syscall"
)

// rawSocket returns sc's socket for raw reads.
func rawSocket(sc syscall.Conn) syscall.RawConn {
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// rawRead is the RawConn callback: it takes a buffer only for bytes that
// are there, and returns false (wait for readiness, holding nothing) when
// the read would block.
func (r *reader) rawRead(fd uintptr) bool {
	b := copyBufs.Get().(*[copyBufSize]byte)
	for {
		n, err := syscall.Read(int(fd), b[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			copyBufs.Put(b)
			return false
		case err != nil:
			copyBufs.Put(b)
			r.err = os.NewSyscallError("read", err)
		case n > 0:
			r.buf, r.n = b, n
		default: // the peer's FIN
			copyBufs.Put(b)
		}
		return true
	}
}
