//go:build linux

package cluster

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peekIdle reports whether a connection has nothing to read and is not
// closed, with one non-blocking MSG_PEEK receive.
func peekIdle(raw syscall.RawConn) bool {
	var buf [1]byte
	var err error
	rerr := raw.Read(func(fd uintptr) bool {
		// EOF (0 bytes), a reset or unsolicited bytes all mean the
		// connection cannot carry another exchange.
		_, _, err = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	return rerr == nil && err == unix.EAGAIN
}
