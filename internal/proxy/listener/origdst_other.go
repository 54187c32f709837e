//go:build !linux

package listener

import (
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux; elsewhere no connection has one.
func OriginalDst(net.Conn) (netip.AddrPort, bool, error) { return netip.AddrPort{}, false, nil }
