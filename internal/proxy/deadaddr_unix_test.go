//go:build unix

package proxy

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// deadAddr is a loopback address nothing listens on, and nothing can
// while the test runs: a TCP socket bound to the port and never listening
// holds it, so a connect is refused. A port freed by closing a listener
// could be taken by another test's server (the suite runs packages in
// parallel), and the "dead" cluster then reached it.
func deadAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
