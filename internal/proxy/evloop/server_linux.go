package evloop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// listenBacklog is each listening socket's accept queue.
const listenBacklog = 1024

// Server is one listener served by event loops.
type Server struct {
	cfg   Config
	table *routeTable
	st    *counters
	lns   []int // one SO_REUSEPORT socket per loop; closed by Serve
	addr  netip.AddrPort
	log   *slog.Logger

	conns atomic.Int64 // open downstream connections, every loop's
	gen   atomic.Pointer[generation]

	stopping  atomic.Bool   // Serve is ending: a woken loop returns
	shutdown  atomic.Bool   // Shutdown: loops close their listeners and return once drained
	drainGen  atomic.Uint64 // Drain calls; a woken loop drains when it changed
	retireGen atomic.Uint64 // Retire calls; a woken loop drains the retired chains' connections when it changed
	rmu       sync.Mutex    // guards running
	running   []*loop       // the loops, while Serve runs

	cmu sync.Mutex                  // guards cst
	cst map[string]*clusterCounters // a Router's clusters' counters, by name

	hs       sync.WaitGroup // TLS handshake goroutines; Serve waits for them
	tlsConns atomic.Int64   // connections served over TLS after their handshake
	h2Conns  atomic.Int64   // h2c connections served on the loops (h2conn_linux.go)
	h2UpRqs  atomic.Int64   // streams sent to HTTP/2 upstreams from the loops (h2ustream_linux.go)
	bufsMade atomic.Int64   // buffers getBuf made, its free list empty (loop_linux.go)
}

// TLSConns is the number of connections the loops took over after a TLS
// handshake: served over TLS on a loop.
func (s *Server) TLSConns() int64 { return s.tlsConns.Load() }

// clusterCounters returns the counters of a cluster a Router named; the
// loops call it when they make a pool, not per request.
func (s *Server) clusterCounters(name string) *clusterCounters {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	c, ok := s.cst[name]
	if !ok {
		c = newClusterCounters(s.cfg.Stats, name)
		s.cst[name] = c
	}
	return c
}

// Listen checks cfg, applies the defaults and opens the listening sockets,
// one per loop, all bound to the same address with SO_REUSEPORT (the
// kernel spreads new connections between them). Serve runs the loops.
func Listen(cfg Config) (*Server, error) {
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.ConnIDs == nil {
		cfg.ConnIDs = new(atomic.Uint64)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxIdleUpstream <= 0 {
		cfg.MaxIdleUpstream = DefaultMaxIdleUpstream
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if cfg.StreamFlushTimeout <= 0 {
		cfg.StreamFlushTimeout = cfg.StreamIdleTimeout
	}
	if cfg.HeadersTimeout <= 0 {
		cfg.HeadersTimeout = DefaultHeadersTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.StatPrefix == "" {
		cfg.StatPrefix = "ingress"
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.NewStore()
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RawWait && runtime.GOMAXPROCS(0) <= cfg.Loops {
		return nil, fmt.Errorf("raw waits need GOMAXPROCS (%d) above the loops (%d)", runtime.GOMAXPROCS(0), cfg.Loops)
	}
	table, err := compile(&cfg)
	if err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, table: table, st: newCounters(cfg.Stats, cfg.StatPrefix, table.clusters), log: log,
		cst: map[string]*clusterCounters{}}
	for range cfg.Loops {
		fd, err := listenSocket(ap)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listen %s: %w", ap, err)
		}
		if ap.Port() == 0 {
			sa, err := unix.Getsockname(fd)
			if err != nil {
				unix.Close(fd)
				s.closeListeners()
				return nil, fmt.Errorf("listen %s: %w", ap, err)
			}
			ap = netip.AddrPortFrom(ap.Addr(), uint16(portOf(sa)))
		}
		s.lns = append(s.lns, fd)
	}
	s.addr = ap
	s.gen.Store(&generation{router: cfg.Router, st: s.st, tls: cfg.TLS, headers: cfg.HeadersTimeout, idle: cfg.IdleTimeout,
		streamIdle: cfg.StreamIdleTimeout, flush: cfg.StreamFlushTimeout, http10: cfg.AcceptHTTP10,
		limits: cfg.Limits, retired: new(atomic.Bool)})
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.addr.String() }

// generation is what a connection is served with: the Router, the
// connection manager's counters, timeouts and the TLS in force when it
// was accepted (Update's), or its filter chain's (NewChain's).
type generation struct {
	router        Router
	st            *counters
	tls           *TLS
	headers, idle time.Duration
	// streamIdle and flush bound an HTTP/2 stream that made no progress
	// (h2Deadline, h2uDeadline).
	streamIdle, flush time.Duration
	http10            bool // HTTP/1.0 requests are served (Config.AcceptHTTP10)
	// limits bound a request head: its bytes (the empty lines before it
	// included) and header lines, an HTTP/2 stream's header list
	// (H2Overflow); Config.Limits.
	limits  proxyroute.Limits
	retired *atomic.Bool // Retire: its connections drain; shared by the generations of one filter chain
}

// Update makes the loops serve the connections accepted from now on with
// router, counting under statPrefix, with tls (nil: plaintext) (a listener
// update). The connections open keep what they had: Drain them to end
// them.
func (s *Server) Update(router Router, statPrefix string, tls *TLS) {
	s.gen.Store(&generation{router: router, st: newCounters(s.cfg.Stats, statPrefix, nil), tls: tls,
		headers: s.cfg.HeadersTimeout, idle: s.cfg.IdleTimeout, streamIdle: s.cfg.StreamIdleTimeout, flush: s.cfg.StreamFlushTimeout,
		http10: s.cfg.AcceptHTTP10, limits: s.cfg.Limits, retired: new(atomic.Bool)})
}

// Drain makes every connection of the loops close once its response in
// flight is written (at once when it has none): a listener update that
// changed its filter chain. Connections accepted later are served.
func (s *Server) Drain() {
	s.drainGen.Add(1)
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for _, l := range s.running {
		l.wakeUp()
	}
}

// Shutdown stops accepting and drains every connection (see Drain); each
// loop returns once it has none left, and Serve when all have. Cancel
// Serve's context to end the connections left earlier.
func (s *Server) Shutdown() {
	s.shutdown.Store(true)
	s.Drain()
}

// Close closes the listening sockets of a Server that never served.
func (s *Server) Close() { s.closeListeners() }

func (s *Server) closeListeners() {
	for _, fd := range s.lns {
		if fd < 0 {
			continue // closed by its loop at Shutdown
		}
		unix.Close(fd)
	}
	s.lns = nil
}

// Serve runs one event loop per listening socket, each on a locked OS
// thread, until ctx ends or a loop fails; then it closes every connection
// and the listeners, and returns once every loop has stopped.
func (s *Server) Serve(ctx context.Context) error {
	defer s.closeListeners()
	loops := make([]*loop, 0, len(s.lns))
	defer func() {
		for _, l := range loops {
			l.closeAll()
		}
	}()
	// The TLS handshakes' context: cancelled once the loops returned,
	// which interrupts the handshakes still running; they give their
	// connections back (closed by closeAll) before Serve returns.
	hctx, cancelHandshakes := context.WithCancel(ctx)
	defer s.hs.Wait()
	defer cancelHandshakes()
	for i, fd := range s.lns {
		l, err := newLoop(s, i, fd)
		if err != nil {
			return err
		}
		loops = append(loops, l)
	}
	s.rmu.Lock()
	s.running = loops
	s.rmu.Unlock()
	if w, ok := s.cfg.Observer.(HostsWatcher); ok {
		defer w.WatchHosts(s.hostsGone)()
	}
	if s.shutdown.Load() {
		s.Drain() // a Shutdown that came before the loops ran
	}
	defer func() {
		s.rmu.Lock()
		s.running = nil
		s.rmu.Unlock()
	}()
	var (
		wg       sync.WaitGroup
		stopOnce sync.Once
		stop     = make(chan struct{})
		errs     = make([]error, len(loops))
	)
	var remaining atomic.Int32
	remaining.Store(int32(len(loops)))
	for i, l := range loops {
		wg.Add(1)
		go func() { // one event loop; ends when woken by the stopper below, on an epoll failure, or drained after Shutdown
			defer wg.Done()
			err := l.run(hctx)
			if err != nil {
				errs[i] = err
			}
			if remaining.Add(-1) == 0 || err != nil {
				stopOnce.Do(func() { close(stop) })
			}
		}()
	}
	wg.Add(1)
	go func() { // wakes every loop to stop; ends when ctx ends or a loop failed
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		s.stopping.Store(true)
		for _, l := range loops {
			l.wakeUp()
		}
	}()
	wg.Wait()
	return errors.Join(errs...)
}

func listenSocket(ap netip.AddrPort) (int, error) {
	domain := unix.AF_INET
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen: %w", err)
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	a := ap.Addr()
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

func portOf(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}
