package httpconn

import (
	"context"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// h2c connections are served by net/http servers, one per distinct set
// of connection settings (SETTINGS_MAX_CONCURRENT_STREAMS and the idle
// timeout), since net/http takes them per server. Almost every HCM uses
// the defaults, served by Server.srv.

// h2Key is the connection settings a net/http server applies.
type h2Key struct {
	maxStreams uint32
	idle       time.Duration
}

// h2Server is one net/http server and the listener feeding it.
type h2Server struct {
	srv *http.Server
	ln  *chanListener
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

// newHTTPServer returns a net/http server for h2c connections with the
// given settings.
func (s *Server) newHTTPServer(k h2Key) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:        http.HandlerFunc(s.serveHTTP),
		Protocols:      p,
		IdleTimeout:    k.idle,
		MaxHeaderBytes: maxHeaderBytes, // Envoy's max_request_headers_kb default
		// net/http's server runs at most this many handlers per
		// connection and queues a few more; a client opening streams
		// beyond the queue gets ENHANCE_YOUR_CALM.
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: int(k.maxStreams)},
		ErrorLog:    log.New(slogWriter{s.log}, "", 0),
		BaseContext: func(net.Listener) context.Context { return s.base },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx = context.WithValue(ctx, connKey{}, c.(*listener.Conn))
			return context.WithValue(ctx, resetKey{}, &resetTracker{})
		},
		ConnState: s.connState,
	}
}

// serveH2 hands an h2c connection to the net/http server for m's
// settings, starting one if needed. The server owns c from then on.
func (s *Server) serveH2(ctx context.Context, c *listener.Conn, m *HCM) {
	k := h2Key{maxStreams: m.h2MaxStreams, idle: m.idleTimeout}
	s.mu.Lock()
	hs, ok := s.h2[k]
	if !ok && !s.draining {
		hs = &h2Server{srv: s.newHTTPServer(k), ln: newChanListener()}
		s.h2[k] = hs
		s.h2wg.Add(1)
		go func() { // ends when Run closes hs.ln and shuts hs.srv down
			defer s.h2wg.Done()
			_ = hs.srv.Serve(hs.ln)
		}()
	}
	s.mu.Unlock()
	if hs == nil {
		_ = c.Close()
		return
	}
	hs.ln.push(ctx, c)
}

// stopH2 stops every h2c server's listener and returns the servers, for
// Run to shut down. No server starts afterwards.
func (s *Server) stopH2() []*h2Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	out := make([]*h2Server, 0, len(s.h2))
	for _, hs := range s.h2 {
		hs.ln.close()
		out = append(out, hs)
	}
	return out
}

// Envoy's premature-reset heuristic against HTTP/2 rapid reset
// (CVE-2023-44487), with its runtime defaults: a stream reset by the
// client within prematureResetLifetime of its start is premature; once
// prematureResetTotal streams of a connection have ended, the connection
// is closed when at least half of them were premature, and before that
// as soon as prematureResetTotal/2 were.
const (
	prematureResetLifetime = time.Second // overload.premature_reset_min_stream_lifetime_seconds
	prematureResetTotal    = 500         // overload.premature_reset_total_stream_count
	// goAwayGrace is how long a connection closed for premature resets
	// has to finish after its GOAWAY before it is closed regardless.
	goAwayGrace = 2 * time.Second
)

type resetKey struct{}

// resetTracker counts one HTTP/2 connection's ended and prematurely reset
// streams. Its handlers update it concurrently.
type resetTracker struct {
	ended, premature atomic.Int64
	tripped          atomic.Bool // the connection is being closed
}

func resetTrackerFrom(ctx context.Context) *resetTracker {
	t, _ := ctx.Value(resetKey{}).(*resetTracker)
	return t
}

// streamEnded records a stream's end; it reports true once, for the
// stream whose end makes the connection one to close.
func (t *resetTracker) streamEnded(premature bool) bool {
	ended := t.ended.Add(1)
	if !premature {
		return false
	}
	p := t.premature.Add(1)
	over := p*2 >= ended
	if ended < prematureResetTotal {
		over = p*2 >= prematureResetTotal
	}
	return over && t.tripped.CompareAndSwap(false, true)
}

// closeForResets makes the connection send GOAWAY and close: net/http's
// HTTP/2 server starts a graceful shutdown of a connection when a
// response carries "Connection: close" (the header is not sent). w's
// response must not have been written yet. The connection is closed
// after goAwayGrace in any case.
func closeForResets(w http.ResponseWriter, c *listener.Conn) {
	w.Header().Set("Connection", "close")
	time.AfterFunc(goAwayGrace, func() { _ = c.Close() }) // one-shot; the connection may be gone already
}
