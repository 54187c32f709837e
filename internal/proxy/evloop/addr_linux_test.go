package evloop

import (
	"net/netip"
	"syscall"
	"testing"
)

// TestAddrPortOf: a socket address reads as the goroutine path reads a
// connection's, an IPv4 peer of a dual-stack socket included.
func TestAddrPortOf(t *testing.T) {
	mapped := &syscall.SockaddrInet6{Port: 8080, Addr: netip.MustParseAddr("::ffff:10.0.0.7").As16()}
	for _, c := range []struct {
		sa   syscall.Sockaddr
		want string
	}{
		{&syscall.SockaddrInet4{Port: 15001, Addr: [4]byte{127, 0, 0, 1}}, "127.0.0.1:15001"},
		{mapped, "10.0.0.7:8080"},
		{&syscall.SockaddrInet6{Port: 443, Addr: netip.MustParseAddr("fd00::1").As16()}, "[fd00::1]:443"},
		{&syscall.SockaddrUnix{Name: "/tmp/s"}, "invalid AddrPort"},
	} {
		if got := AddrPortOf(c.sa).String(); got != c.want {
			t.Errorf("AddrPortOf(%v) = %s, want %s", c.sa, got, c.want)
		}
	}
}
