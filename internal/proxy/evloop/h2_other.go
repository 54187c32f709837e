//go:build !linux

package evloop

// H2Conns is 0 off Linux.
func (s *Server) H2Conns() int64 { return 0 }

// H2UpstreamStreams is 0 off Linux.
func (s *Server) H2UpstreamStreams() int64 { return 0 }
