//go:build !linux

package httpconn

import "net"

// idleReader is Linux only; elsewhere an idle connection keeps its read
// buffer.
type idleReader struct{}

func newIdleReader(net.Conn) *idleReader { return nil }

func (r *idleReader) wait(hc *h1Conn) error {
	_, err := hc.br.Peek(1)
	return err
}

// socketQueued is Linux only (SIOCINQ).
func socketQueued(net.Conn) func() int { return nil }
