//go:build linux

package listener

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop"
)

// soOriginalDst is SO_ORIGINAL_DST (and IP6T_SO_ORIGINAL_DST), from
// linux/netfilter_ipv4.h: the destination a connection had before an
// iptables REDIRECT or DNAT rewrote it.
const soOriginalDst = 80

// OriginalDst returns the pre-NAT destination of an accepted TCP
// connection, or ok false when netfilter has no record of one (no NAT
// happened, or conntrack is not loaded).
func OriginalDst(c net.Conn) (addr netip.AddrPort, ok bool, err error) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return netip.AddrPort{}, false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v6 := local != nil && local.IP.To4() == nil
	ctrlErr := raw.Control(func(fd uintptr) { addr, ok, err = originalDstFD(int(fd), v6) })
	if ctrlErr != nil {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %w", ctrlErr)
	}
	return addr, ok, err
}

// originalDstFD is OriginalDst on a socket's descriptor; v6 says whether
// its local address is IPv6 (not IPv4-mapped).
func originalDstFD(fd int, v6 bool) (addr netip.AddrPort, ok bool, err error) {
	var sockErr error
	if v6 {
		// sockaddr_in6 is 28 bytes; IPv6MTUInfo is the getsockopt
		// helper whose buffer (32 bytes) holds it.
		var info *unix.IPv6MTUInfo
		info, sockErr = unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, soOriginalDst)
		if sockErr == nil {
			port := binary.BigEndian.Uint16((*[2]byte)(unsafePortBytes(&info.Addr.Port))[:])
			addr = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), port)
		}
	} else {
		// sockaddr_in is 16 bytes; IPv6Mreq (20 bytes) holds it.
		var m *unix.IPv6Mreq
		m, sockErr = unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, soOriginalDst)
		if sockErr == nil {
			b := m.Multiaddr
			port := binary.BigEndian.Uint16(b[2:4])
			addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), port)
		}
	}
	if sockErr != nil {
		if sockErr == unix.ENOENT || sockErr == unix.ENOPROTOOPT {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", sockErr)
	}
	return addr, true, nil
}

// connInfoFD is what handle learns of a connection before TLS
// inspection, read from its descriptor: the peer, and the local address
// or, with originalDst, the destination before NAT when there was one.
//
// It reads the addresses with package syscall's Getsockname and
// Getpeername: x/sys/unix's ask the socket's protocol besides
// (getsockopt SO_PROTOCOL, for L2TP). BenchmarkClassify (docs/bench/proxy.md,
// round 11): 3 system calls and 3 allocations (88 B) per connection,
// against 5 and 5 (312 B) with x/sys/unix's; the times (2.2-4.8 µs
// against 3.5-4.6 µs) were within the loaded machine's noise.
func connInfoFD(fd int, originalDst bool) (ConnInfo, error) {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return ConnInfo{}, fmt.Errorf("getsockname: %w", err)
	}
	pa, err := syscall.Getpeername(fd)
	if err != nil {
		return ConnInfo{}, fmt.Errorf("getpeername: %w", err)
	}
	local, src := evloop.AddrPortOf(sa), evloop.AddrPortOf(pa)
	ci := ConnInfo{Dst: local, Src: src, DirectSrc: src}
	if originalDst {
		od, ok, err := originalDstFD(fd, local.Addr().Is6())
		if err != nil {
			return ConnInfo{}, err
		}
		if ok {
			ci.Dst = netip.AddrPortFrom(od.Addr().Unmap(), od.Port())
		}
	}
	return ci, nil
}
