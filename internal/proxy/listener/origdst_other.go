//go:build !linux

package listener

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux; elsewhere no connection has one.
func OriginalDst(net.Conn) (netip.AddrPort, bool, error) { return netip.AddrPort{}, false, nil }

// connInfoFD is only needed by the event loops, which are Linux's.
func connInfoFD(int, bool) (ConnInfo, error) {
	return ConnInfo{}, errors.New("connection addresses from a descriptor: Linux only")
}
