//go:build linux

package listener

import "unsafe"

// unsafePortBytes views the network-order port field of a raw sockaddr as
// its two bytes; the kernel stores it big-endian whatever the host order.
func unsafePortBytes(p *uint16) unsafe.Pointer { return unsafe.Pointer(p) }
