//go:build !linux

package cluster

import "syscall"

// peekIdle cannot check without blocking here; a connection the upstream
// closed fails on reuse and idempotent requests are sent again.
func peekIdle(syscall.RawConn) peeked { return peekOpen }
