package httpconn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// Server serves the HTTP connections of every listener: HTTP/1.1 on the
// fast path (h1.go), on the goroutine that accepted the connection, and
// prior-knowledge h2c with one net/http server.
type Server struct {
	log *slog.Logger
	ln  *chanListener
	srv *http.Server

	// base is every request's parent context; Run cancels it on shutdown
	// so that hijacked (upgraded) connections end too.
	base       context.Context
	cancelBase context.CancelFunc

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int                  // net/http handlers running; protected by mu
	closing  bool                 // protected by mu
	draining bool                 // shutdown began: no new fast-path connections; protected by mu
	h1conns  map[*h1Conn]struct{} // fast-path connections; protected by mu
	h1none   chan struct{}        // closed when draining leaves no fast-path connection; protected by mu
	h2       map[h2Key]*h2Server  // h2c servers by settings, srv's included; protected by mu
	h2wg     sync.WaitGroup       // Serve goroutines of h2 servers other than srv
}

type connKey struct{}

// NewServer returns a server; Run serves.
func NewServer(logger *slog.Logger) *Server {
	s := &Server{log: logger, ln: newChanListener(), h1conns: map[*h1Conn]struct{}{}, h2: map[h2Key]*h2Server{}}
	s.cond = sync.NewCond(&s.mu)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	k := h2Key{maxStreams: DefaultMaxConcurrentStreams, idle: DefaultIdleTimeout}
	s.srv = s.newHTTPServer(k)
	s.h2[k] = &h2Server{srv: s.srv, ln: s.ln}
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
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }() // ends when s.ln is closed below
	<-ctx.Done()
	h2s := s.stopH2() // srv's listener (s.ln) included
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	// Let responses in flight finish briefly: idle connections close now,
	// busy ones after their response.
	s.drainH1(sctx)
	for _, hs := range h2s {
		_ = hs.srv.Shutdown(sctx)
	}
	cancel()
	s.cancelBase() // closes what is left of the fast-path connections
	for _, hs := range h2s {
		_ = hs.srv.Close()
	}
	err := <-errc
	s.h2wg.Wait()
	s.mu.Lock()
	s.closing = true
	for s.inflight > 0 || len(s.h1conns) > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
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
	if len(s.h1conns) == 0 && s.h1none != nil {
		close(s.h1none)
		s.h1none = nil
	}
	if s.draining {
		s.cond.Broadcast()
	}
}

// drainH1 closes idle fast-path connections, marks busy ones to close
// after their response, and waits for them until ctx ends.
func (s *Server) drainH1(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	for hc := range s.h1conns {
		hc.drain()
	}
	if len(s.h1conns) == 0 {
		s.mu.Unlock()
		return
	}
	none := make(chan struct{})
	s.h1none = none
	s.mu.Unlock()
	select {
	case <-none:
	case <-ctx.Done():
	}
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*listener.Conn)
	if !ok || lc.Chain == nil {
		return
	}
	m, ok := lc.Chain.Handler.(*HCM)
	if !ok {
		return
	}
	switch st {
	case http.StateNew:
		// Only h2c connections reach the net/http server.
		m.stats.cxTotal.Inc()
		m.stats.cxHTTP2.Inc()
		m.stats.cxActive.Inc()
	case http.StateClosed, http.StateHijacked:
		m.stats.cxActive.Dec()
		m.stats.cxDestroy.Inc()
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
	c.Chain.Handler.(*HCM).serve(r.Context(), w, r, c)
}

// chanListener is a net.Listener fed by listeners' filter chains.
type chanListener struct {
	ch   chan net.Conn // unbuffered: push blocks until Accept takes it
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(ctx context.Context, c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	case <-ctx.Done():
		_ = c.Close()
	}
}

func (l *chanListener) close()         { l.once.Do(func() { close(l.done) }) }
func (l *chanListener) Close() error   { l.close(); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
