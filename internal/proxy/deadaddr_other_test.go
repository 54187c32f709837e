//go:build !unix

package proxy

import (
	"net"
	"testing"
)

// deadAddr is a loopback address nothing listens on (its port freed just
// now).
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}
