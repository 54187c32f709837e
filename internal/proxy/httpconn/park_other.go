//go:build !linux

package httpconn

import (
	"log/slog"
	"time"
)

// Parking needs epoll: elsewhere idle connections keep their goroutine.

type parkState struct{}

type poller struct{}

func newPoller(*slog.Logger) (*poller, error) { return nil, errNoPoller }

func (p *poller) run()   {}
func (p *poller) stop()  {}
func (p *poller) close() {}

func (hc *h1Conn) parkDeadline(time.Time) time.Time { return time.Time{} }

func (s *Server) park(*h1Conn, time.Time) bool { return false }

func (s *Server) unpark(*h1Conn) {}
