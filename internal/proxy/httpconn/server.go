package httpconn

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/proxy/listener"
)

// Server serves the HTTP connections of every listener with one
// net/http server speaking HTTP/1.1 and prior-knowledge h2c.
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
	inflight int  // handlers running; protected by mu
	closing  bool // protected by mu
}

type connKey struct{}

// NewServer returns a server; Run serves.
func NewServer(logger *slog.Logger) *Server {
	s := &Server{log: logger, ln: &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}}
	s.cond = sync.NewCond(&s.mu)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler:        http.HandlerFunc(s.serveHTTP),
		Protocols:      p,
		IdleTimeout:    time.Hour, // Envoy's default downstream idle timeout
		MaxHeaderBytes: 60 << 10,  // Envoy's max_request_headers_kb default
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: math.MaxInt32},
		ErrorLog:       log.New(slogWriter{logger}, "", 0),
		BaseContext:    func(net.Listener) context.Context { return s.base },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*listener.Conn))
		},
		ConnState: s.connState,
	}
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
	s.ln.close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = s.srv.Shutdown(sctx) // let responses in flight finish briefly
	cancel()
	s.cancelBase()
	_ = s.srv.Close()
	err := <-errc
	s.mu.Lock()
	s.closing = true
	for s.inflight > 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ServeConn implements listener.Handler: the HCM's connections go to the
// shared server.
func (m *HCM) ServeConn(ctx context.Context, c *listener.Conn) {
	m.deps.Server.ln.push(ctx, c)
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
		m.stats.cxTotal.Inc()
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
	c.Chain.Handler.(*HCM).serve(w, r, c)
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
