// Package h2ads serves one gRPC bidirectional-streaming method over
// HTTP/2 with golang.org/x/net/http2's Framer and hpack, and nothing of
// grpc-go's server: it exists to measure what a push costs when the
// transport has no writer goroutine and no hand-off to a handler
// goroutine (bench/adsfloor, docs/bench/xds.md round 12).
//
// The flow, per connection: one reader goroutine reads frames and calls
// the Handler inline for each request message; Stream.Send, called from
// any goroutine, frames one response and writes it to the socket under
// the connection's lock. Nothing else runs per push.
//
// What it does of HTTP/2 and gRPC: the preface and SETTINGS (acknowledged
// both ways), PING answered, the peer's flow-control windows honoured
// (a response the windows cannot take waits as the stream's one pending
// response, replaced by a newer one, and goes out when a WINDOW_UPDATE
// makes room), WINDOW_UPDATE for the data received once a quarter of the
// receive window is used, response HEADERS once per stream, trailers
// (grpc-status) when the client half-closes, RST_STREAM and GOAWAY for
// protocol errors. No compression, no TLS, no deadlines from grpc-timeout,
// no server-initiated PINGs: what a production server would need is listed
// in docs/bench/xds.md (round 12).
package h2ads

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Defaults of Options.
const (
	// DefaultRecvWindow is the receive window advertised for every
	// stream and the connection: weft's xDS listener's (1 MiB).
	DefaultRecvWindow = 1 << 20
	// DefaultMaxRecvMsgSize bounds one request message (grpc-go's
	// default, as weft's).
	DefaultMaxRecvMsgSize = 4 << 20
	// DefaultMaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS.
	DefaultMaxConcurrentStreams = 100
	// DefaultWriteTimeout bounds one socket write: a client that does
	// not read its socket for this long is disconnected, so that the
	// goroutine pushing to it (the fan-out) is never held longer.
	DefaultWriteTimeout = 5 * time.Second
	// maxHeaderListSize bounds a request's headers, as weft's listener.
	maxHeaderListSize = 64 << 10
)

// Options configure a Server. A zero field takes its default.
type Options struct {
	RecvWindow           uint32
	MaxRecvMsgSize       int
	MaxConcurrentStreams uint32
	WriteTimeout         time.Duration
}

func (o Options) withDefaults() Options {
	if o.RecvWindow < 65535 {
		o.RecvWindow = DefaultRecvWindow
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	return o
}

// Handler is what the Server calls; every call for one connection comes
// from that connection's reader goroutine, in order, so a Handler sees a
// stream's Open, then its Messages, then Closed.
type Handler interface {
	// Open is called when a client opens a stream on the Server's path.
	Open(s *Stream)
	// Message is called with each complete request message of s. msg is
	// only valid during the call.
	Message(s *Stream, msg []byte)
	// Closed is called once when s ends: the client half-closed it (err
	// nil), reset it, or the connection ended.
	Closed(s *Stream, err error)
}

// ErrClosed is returned by Send on a stream or connection that has ended.
var ErrClosed = errors.New("h2ads: stream closed")

// Server serves Path on the connections it accepts.
type Server struct {
	path string
	h    Handler
	opts Options

	mu    sync.Mutex // protects conns, ln, done
	conns map[*conn]struct{}
	ln    net.Listener
	done  bool
}

// New returns a Server of the method path ("/package.Service/Method").
func New(path string, h Handler, opts Options) *Server {
	return &Server{path: path, h: h, opts: opts.withDefaults(), conns: map[*conn]struct{}{}}
}

// Serve accepts connections on ln until ln fails or Close is called; it
// returns nil after Close. Connections already accepted are served until
// they end or Close closes them.
func (srv *Server) Serve(ln net.Listener) error {
	srv.mu.Lock()
	if srv.done {
		srv.mu.Unlock()
		ln.Close()
		return nil
	}
	srv.ln = ln
	srv.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			srv.mu.Lock()
			done := srv.done
			srv.mu.Unlock()
			if done {
				return nil
			}
			return err
		}
		c := newConn(srv, nc)
		srv.mu.Lock()
		if srv.done {
			srv.mu.Unlock()
			nc.Close()
			continue
		}
		srv.conns[c] = struct{}{}
		srv.mu.Unlock()
		go c.serve() // ends when the connection fails or closes (Close closes it)
	}
}

// Close stops accepting and closes every connection.
func (srv *Server) Close() {
	srv.mu.Lock()
	srv.done = true
	ln := srv.ln
	conns := srv.conns
	srv.conns = map[*conn]struct{}{}
	srv.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for c := range conns {
		c.nc.Close()
	}
}

func (srv *Server) forget(c *conn) {
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
}
