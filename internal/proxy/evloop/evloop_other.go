//go:build !linux

package evloop

import (
	"context"
	"errors"
)

// Server is one listener served by event loops (Linux only).
type Server struct{}

// Listen reports that the event loops need Linux's epoll.
func Listen(cfg Config) (*Server, error) {
	return nil, errors.New("evloop: event loops need Linux (epoll)")
}

// Addr is the listener's address.
func (s *Server) Addr() string { return "" }

// Serve does nothing off Linux.
func (s *Server) Serve(ctx context.Context) error {
	return errors.New("evloop: event loops need Linux (epoll)")
}

// Close does nothing off Linux.
func (s *Server) Close() {}

// Drain does nothing off Linux.
func (s *Server) Drain() {}

// Update does nothing off Linux.
func (s *Server) Update(router Router, statPrefix string, tls *TLS) {}

// TLSConns is 0 off Linux.
func (s *Server) TLSConns() int64 { return 0 }

// Shutdown does nothing off Linux.
func (s *Server) Shutdown() {}

// generation is the loops' configuration of a connection (Linux only).
type generation struct{}

// NewChain does nothing off Linux.
func (s *Server) NewChain(c ChainConfig) *Chain { return &Chain{} }

// Retire does nothing off Linux.
func (s *Server) Retire(chains ...*Chain) {}
