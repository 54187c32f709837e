//go:build linux

package cluster

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peekIdle checks a connection with one non-blocking MSG_PEEK receive.
func peekIdle(raw syscall.RawConn) peeked {
	var buf [1]byte
	var n int
	var err error
	rerr := raw.Read(func(fd uintptr) bool {
		n, _, err = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	switch {
	case rerr == nil && err == unix.EAGAIN:
		return peekOpen
	case rerr == nil && err == nil && n > 0:
		return peekBytes
	}
	return peekEnded
}
