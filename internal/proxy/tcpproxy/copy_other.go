//go:build !unix

package tcpproxy

import "syscall"

// rawSocket: elsewhere connections are read through their net.Conn.
func rawSocket(syscall.Conn) syscall.RawConn { return nil }

// rawRead is never called: without a socket the reader reads the net.Conn.
func (r *reader) rawRead(uintptr) bool { return true }
