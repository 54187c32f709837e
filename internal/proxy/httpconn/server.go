package httpconn

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// Server serves the HTTP connections of every listener: HTTP/1.1 on the
// fast path (h1.go) and HTTP/2 with golang.org/x/net/http2 (h2.go), both
// on the goroutine that accepted the connection.
type Server struct {
	log *slog.Logger

	// base is every request's parent context; Run cancels it on shutdown
	// so that what is left of the connections, hijacked (upgraded) ones
	// included, ends too.
	base       context.Context
	cancelBase context.CancelFunc

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int                  // HTTP/2 handlers running; protected by mu
	closing  bool                 // protected by mu
	draining bool                 // shutdown began: no new connections; protected by mu
	h1conns  map[*h1Conn]struct{} // fast-path connections; protected by mu
	h2conns  map[*h2Conn]struct{} // HTTP/2 connections; protected by mu
	none     chan struct{}        // closed when draining leaves no connection; protected by mu

	// parkAfter is how long a keep-alive HTTP/1.1 connection waits for
	// its next request on its goroutine before it parks (park_linux.go);
	// negative: never. poll is the poller while Run runs; nil: none.
	parkAfter time.Duration
	poll      atomic.Pointer[poller]
}

// Options tune a Server.
type Options struct {
	// ParkIdleAfter is how long a keep-alive HTTP/1.1 connection waits
	// between requests holding a goroutine before it parks: its socket
	// goes to an epoll instance of the server's and its goroutine ends,
	// until the next request (Linux). 0 uses DefaultParkIdleAfter; a
	// negative value never parks.
	ParkIdleAfter time.Duration
}

// DefaultParkIdleAfter is Options.ParkIdleAfter's default: a connection
// that carries a request every second or more often never parks (no
// epoll_ctl and no new goroutine per request), one idle for longer gives
// its goroutine's stack back. Chosen by measurement (docs/bench/proxy.md,
// "Idle connections without a goroutine").
const DefaultParkIdleAfter = time.Second

var errNoPoller = errors.New("connection parking needs epoll (Linux)")

type connKey struct{}

// errShutdown is the cause every request's context ends with at
// shutdown (stream.clientLeft tells it from a client's end).
var errShutdown = errors.New("weft proxy is shutting down")

// NewServer returns a server; Run serves.
func NewServer(logger *slog.Logger, o Options) *Server {
	s := &Server{log: logger, h1conns: map[*h1Conn]struct{}{}, h2conns: map[*h2Conn]struct{}{}, parkAfter: o.ParkIdleAfter}
	if s.parkAfter == 0 {
		s.parkAfter = DefaultParkIdleAfter
	}
	s.cond = sync.NewCond(&s.mu)
	base, cancel := context.WithCancelCause(context.Background())
	s.base, s.cancelBase = base, func() { cancel(errShutdown) }
	return s
}

// slogWriter sends net/http's own log lines (bad requests, TLS noise) to
// slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug("http server", "msg", string(b))
	return len(b), nil
}

// Run serves until ctx ends, then closes every connection and returns
// once every request handler has returned.
func (s *Server) Run(ctx context.Context) error {
	var polled chan struct{}
	if s.parkAfter >= 0 {
		p, err := newPoller(s.log)
		if err != nil {
			s.log.Warn("idle connections will not park", "err", err)
		} else {
			polled = make(chan struct{})
			s.poll.Store(p)
			go func() { // the parked connections' poller; ends when stopped below, once every connection is gone
				defer close(polled)
				p.run()
			}()
		}
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	// Let responses in flight finish briefly: idle HTTP/1.1 connections
	// close now, busy ones after their response; HTTP/2 ones get GOAWAY.
	s.drain(sctx)
	cancel()
	s.cancelBase() // closes what is left
	s.mu.Lock()
	s.closing = true
	for s.inflight > 0 || len(s.h1conns) > 0 || len(s.h2conns) > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	if polled != nil {
		// No connection is left to park or be parked.
		p := s.poll.Load()
		p.stop()
		<-polled
		p.close()
	}
	return nil
}

// ServeConn implements listener.Handler: it serves the connection's
// HTTP/1.1 requests on the calling goroutine and hands h2c connections to
// the shared net/http server.
func (m *HCM) ServeConn(ctx context.Context, c *listener.Conn) {
	m.deps.Server.serveH1(ctx, c, m)
}

// track registers a fast-path connection; false once shutdown began.
func (s *Server) track(hc *h1Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.h1conns[hc] = struct{}{}
	return true
}

func (s *Server) untrack(hc *h1Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.h1conns, hc)
	s.gone()
}

// trackH2 registers an HTTP/2 connection; false once shutdown began.
func (s *Server) trackH2(hc *h2Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.h2conns[hc] = struct{}{}
	return true
}

func (s *Server) untrackH2(hc *h2Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.h2conns, hc)
	s.gone()
}

// gone wakes shutdown once a connection went. Called with mu.
func (s *Server) gone() {
	if len(s.h1conns)+len(s.h2conns) == 0 && s.none != nil {
		close(s.none)
		s.none = nil
	}
	if s.draining {
		s.cond.Broadcast()
	}
}

// drain closes idle fast-path connections, marks busy ones to close
// after their response, sends GOAWAY on HTTP/2 ones, and waits for them
// until ctx ends.
func (s *Server) drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	for hc := range s.h1conns {
		hc.drain()
	}
	for hc := range s.h2conns {
		hc.goAway()
	}
	if len(s.h1conns)+len(s.h2conns) == 0 {
		s.mu.Unlock()
		return
	}
	none := make(chan struct{})
	s.none = none
	s.mu.Unlock()
	select {
	case <-none:
	case <-ctx.Done():
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	s.inflight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		if s.inflight == 0 {
			s.cond.Broadcast()
		}
		s.mu.Unlock()
	}()
	c, _ := r.Context().Value(connKey{}).(*listener.Conn)
	if c == nil || c.Chain == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if c.Draining() {
		// The response makes the connection send GOAWAY: a backstop for a
		// connection that began draining before its HTTP/2 server could
		// be told (goAway reaches only a connection already registered
		// with it).
		w.Header().Set("Connection", "close")
	}
	c.Chain.Handler.(*HCM).serve(r.Context(), w, r, c)
}
