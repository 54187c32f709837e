package listener

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Loops, set in a Config given to Listen, serves the listener on event
// loops (package evloop) instead of a goroutine per connection: weft
// proxy's event loops (its default on Linux), for HTTP/1.1 listeners, plaintext or TLS
// (the chain's own handshake, on a goroutine per connection). What the
// loops do not serve themselves (h2c, upgrades, requests whose route
// needs more than they do) they hand back, connection and bytes read, to
// the configuration's chain as an accepted connection.
type Loops struct {
	// Router chooses each request's upstream, or hands it off.
	Router evloop.Router
	// H2 serves h2c connections on the loops when Router accepts them
	// (evloop.H2Router); else they are handed off.
	H2 bool
	// Observer hears how the upstream attempts went (host stats,
	// outlier detection); nil: the loops count on their own.
	Observer evloop.Observer
	// StatPrefix names the connection manager's stats (http.<prefix>.*).
	StatPrefix string
	// HeadersTimeout and IdleTimeout are the connection manager's; 0 is
	// none.
	HeadersTimeout, IdleTimeout time.Duration
	// TLS, when set, is the chain's TLS: the loops run its handshake (on
	// a goroutine per connection) and carry the records.
	TLS TLS
	// Select, when set, makes the loops choose each new connection's
	// filter chain as the goroutine path does (its original destination
	// recovered under the original_dst listener filter, then Select):
	// they serve it when that is their chain, and hand it off otherwise,
	// where it is closed for want of a chain or served by another. For a
	// chain with a filter_chain_match; without one every connection is
	// the chain's.
	Select bool
}

// evloopTLS is the loops' TLS for a chain's.
func (lo *Loops) evloopTLS() *evloop.TLS {
	if lo.TLS == nil {
		return nil
	}
	return &evloop.TLS{Handshake: lo.TLS.Handshake}
}

// maxPendingHandOffs bounds the connections handed off by the loops that
// wait for their goroutine; beyond it they are closed (and counted as
// overflow).
const maxPendingHandOffs = 1024

// none stands for "no timeout" in the loops' configuration, where 0
// means the default.
const none = 100 * 365 * 24 * time.Hour

type handed struct {
	fd       int
	buffered []byte
	tls      *tlsrec.Conn // the connection's TLS, terminated on the loops; nil in plaintext
}

// listenLoops binds cfg.Addr with one socket per event loop.
func (l *Listener) listenLoops(cfg *Config, st *stats.Store) error {
	lo := cfg.Loops
	orNone := func(d time.Duration) time.Duration {
		if d <= 0 {
			return none
		}
		return d
	}
	maxConns := cfg.MaxConnections
	if maxConns <= 0 {
		maxConns = 1 << 30
	}
	srv, err := evloop.Listen(evloop.Config{Listen: cfg.Addr, Router: lo.Router, StatPrefix: lo.StatPrefix, Stats: st,
		Log: l.log, ConnIDs: l.ids, MaxConns: maxConns, HeadersTimeout: orNone(lo.HeadersTimeout), IdleTimeout: orNone(lo.IdleTimeout),
		Listener: &evloop.ListenerStats{CxTotal: l.stats.CxTotal, CxDestroy: l.stats.CxDestroy, CxOverflow: l.stats.CxOverflow,
			CxActive: l.stats.CxActive},
		Observer:    lo.Observer,
		TLS:         lo.evloopTLS(),
		HandOffTLS:  l.handOffTLS,
		HandOff:     l.handOff,
		HandOffConn: l.notForLoops,
		H2:          lo.H2})
	if err != nil {
		return fmt.Errorf("listener %s: bind %s on event loops: %w", cfg.Name, cfg.Addr, err)
	}
	l.loops, l.handoffs = srv, make(chan handed, maxPendingHandOffs)
	return nil
}

// notForLoops reports whether a connection the loops accepted is the
// goroutine path's from the start: the configuration in force has no
// loops, or the filter chain that handle would pick for it is not the
// loops' (or there is none, or its addresses cannot be read: handle then
// logs, counts and closes as for any connection).
func (l *Listener) notForLoops(fd int) bool {
	cfg := l.cfg.Load()
	if cfg.Loops == nil {
		return true
	}
	if !cfg.Loops.Select {
		return false
	}
	ci, err := connInfoFD(fd, cfg.OriginalDst)
	if err != nil {
		return true
	}
	if i := Select(cfg.matches, ci); i >= 0 {
		return &cfg.Chains[i] != cfg.loopChain()
	}
	return cfg.Default == nil || cfg.Default != cfg.loopChain()
}

// loopChain is the one chain of a configuration the loops serve.
func (cfg *Config) loopChain() *Chain {
	if len(cfg.Chains) == 1 {
		return &cfg.Chains[0]
	}
	return cfg.Default
}

// updateLoops makes the loops serve new connections with cfg, and drains
// theirs when the update changed their chain; without cfg.Loops every
// request, and every new connection, goes to the goroutine path.
func (l *Listener) updateLoops(prev, cfg *Config, drainAll bool) {
	if cfg.Loops != nil {
		l.loops.Update(cfg.Loops.Router, cfg.Loops.StatPrefix, cfg.Loops.evloopTLS())
	} else if prev.Loops != nil {
		l.loops.Update(handOffRouter{}, prev.Loops.StatPrefix, prev.Loops.evloopTLS())
	}
	if drainAll || !cfg.has(prev.loopChain()) {
		l.loops.Drain()
	}
}

// handOffRouter hands every request to the goroutine path.
type handOffRouter struct{}

func (handOffRouter) Route(route.Head) evloop.Target { return evloop.Target{HandOff: true} }

// handOff is the loops' HandOff: it runs on a loop and must not block.
func (l *Listener) handOff(fd int, buffered []byte) {
	l.handOffTLS(fd, nil, buffered)
}

// handOffTLS is the loops' HandOffTLS: handOff for a connection whose
// TLS the loops terminated.
func (l *Listener) handOffTLS(fd int, tc *tlsrec.Conn, buffered []byte) {
	select {
	case l.handoffs <- handed{fd, buffered, tc}:
	default:
		l.stats.CxOverflow.Inc() // before the close, which the client may see first
		unix.Close(fd)
	}
}

// serveLoops runs the loops and serves what they hand off, until ctx ends
// (the loops stop earlier with Stop).
func (l *Listener) serveLoops(ctx context.Context) {
	lctx, stop := context.WithCancel(ctx)
	l.stopLoops = stop
	l.wg.Add(2)
	go func() { // the event loops; end when Stop or ctx cancels lctx
		defer l.wg.Done()
		if err := l.loops.Serve(lctx); err != nil {
			l.log.Error("event loops failed", "err", err)
		}
	}()
	go func() { // starts a goroutine per handed-off connection; ends with ctx
		defer l.wg.Done()
		for {
			select {
			case <-ctx.Done():
				for {
					select {
					case h := <-l.handoffs:
						unix.Close(h.fd) // a TLS one without close_notify: the proxy is stopping
					default:
						return
					}
				}
			case h := <-l.handoffs:
				f := os.NewFile(uintptr(h.fd), "handed-off")
				raw, err := net.FileConn(f) // a dup; f is closed below
				_ = f.Close()
				if err != nil {
					l.log.Debug("handed-off connection", "err", err)
					continue
				}
				var c net.Conn = raw
				if len(h.buffered) > 0 && h.tls == nil {
					c = &replayConn{Conn: raw, pending: h.buffered}
				}
				l.handedOff.Add(1)
				l.stats.CxActive.Inc()
				l.wg.Add(1)
				if h.tls != nil {
					go l.handleResumed(ctx, raw, h) // ends when the chain handler returns; waited for by Wait
					continue
				}
				go l.handle(ctx, c, nil) // ends when the chain handler returns; waited for by Wait
			}
		}
	}()
}

// resumeTimeout bounds the write of the records the loop had sealed but
// not sent when it handed a TLS connection off.
const resumeTimeout = 10 * time.Second

// handleResumed serves a TLS connection the loops handed off: its TLS
// carried on in blocking mode over raw (Resume writes what the loop had
// sealed, on this goroutine: a slow client holds only its own), the
// plaintext the loop read in front.
func (l *Listener) handleResumed(ctx context.Context, raw net.Conn, h handed) {
	_ = raw.SetWriteDeadline(time.Now().Add(resumeTimeout))
	tc, err := h.tls.Resume(raw)
	_ = raw.SetWriteDeadline(time.Time{})
	if err != nil {
		l.log.Debug("handed-off connection", "err", err)
		_ = raw.Close()
		l.stats.CxActive.Dec()
		l.stats.CxDestroy.Inc()
		l.wg.Done()
		return
	}
	l.handle(ctx, raw, &resumedConn{replayConn{Conn: tc, pending: h.buffered}, tc})
}

// HandedOff is the number of connections the loops handed to the
// goroutine path.
func (l *Listener) HandedOff() int64 { return l.handedOff.Load() }

// LoopTLSConns is the number of connections the loops served over TLS
// (counted once their handshake succeeded).
func (l *Listener) LoopTLSConns() int64 {
	if l.loops == nil {
		return 0
	}
	return l.loops.TLSConns()
}

// LoopH2Conns is the number of h2c connections the loops served.
func (l *Listener) LoopH2Conns() int64 {
	if l.loops == nil {
		return 0
	}
	return l.loops.H2Conns()
}

// replayConn is a connection with bytes already read from it in front.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// resumedConn is a TLS connection the loops handed off, with the
// plaintext they read and did not consume in front.
type resumedConn struct {
	replayConn
	tc *tls.Conn
}

// ConnectionState is the handshake's outcome, as the loops' handshake had it.
func (c *resumedConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// CloseWrite half-closes the connection.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SyscallConn gives the socket (for SO_ORIGINAL_DST).
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("not a socket")
}
