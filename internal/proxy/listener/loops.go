package listener

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Loops, set in a Config given to Listen, serves the listener on event
// loops (package evloop) instead of a goroutine per connection: weft
// proxy's event loops (its default on Linux), for the listener's HTTP/1.1
// filter chains, plaintext or TLS (the chain's own handshake, on a
// goroutine per connection). The loops choose each new connection's
// chain as handle does (the original destination recovered under the
// original_dst listener filter, then Select) and serve it when that chain
// is one of theirs; they hand the others off at accept (the chain is not
// theirs, the TLS inspector applies to the connection, or no chain
// matches: handle then closes it). What the loops do not serve themselves
// (h2c, upgrades, requests whose route needs more than they do) they hand
// back, connection and bytes read, to the chain as an accepted
// connection.
type Loops struct {
	// H2 serves HTTP/2 connections (h2c, and over a TLS chain those that
	// open with the preface) on the loops when the chain's Router accepts
	// them (evloop.H2Router); else they are handed off.
	H2 bool
	// Observer hears how the upstream attempts went (host stats,
	// outlier detection); nil: the loops count on their own.
	Observer evloop.Observer
	// Chains are the loops' chains, by their index in Config.Chains, and
	// Default Config.Default's; nil for a chain the loops do not serve.
	Chains  []*LoopChain
	Default *LoopChain
}

// LoopChain is how the loops serve one filter chain.
type LoopChain struct {
	// Router chooses each request's upstream, or hands it off.
	Router evloop.Router
	// StatPrefix names the connection manager's stats (http.<prefix>.*).
	StatPrefix string
	// HeadersTimeout and IdleTimeout are the connection manager's; 0 is
	// none.
	HeadersTimeout, IdleTimeout time.Duration
	// StreamIdleTimeout and StreamFlushTimeout are its stream_idle_timeout
	// and stream_flush_timeout; 0 is none.
	StreamIdleTimeout, StreamFlushTimeout time.Duration
	// AcceptHTTP10 is its accept_http_10: HTTP/1.0 requests are handed
	// off (the goroutine path answers them in kind), else refused 426.
	AcceptHTTP10 bool
	// Limits bound a request head: its max_request_headers_kb and
	// max_headers_count.
	Limits route.Limits
	// TLS, when set, is the chain's TLS: the loops run its handshake (on
	// a goroutine per connection) and carry the records.
	TLS TLS
	// Logged is set when the chain's requests are logged: under
	// original_dst the loops then read a connection's destination before
	// NAT even when the chain matches every connection.
	Logged bool

	ev *evloop.Chain // made by the listener when it applies the configuration
}

// Served counts the chains of cfg the loops serve, and all its chains
// (the default one included).
func (lo *Loops) Served(cfg *Config) (on, all int) {
	for _, lc := range append(slices.Clone(lo.Chains), lo.Default) {
		if lc != nil {
			on++
		}
	}
	all = len(cfg.Chains)
	if cfg.Default != nil {
		all++
	}
	return on, all
}

// evloopTLS is the loops' TLS for a chain's.
func (lc *LoopChain) evloopTLS() *evloop.TLS {
	if lc.TLS == nil {
		return nil
	}
	return &evloop.TLS{Handshake: lc.TLS.Handshake}
}

// every is the loops' chain when it takes every connection without
// looking at it (one chain without a match, or only a default one, no TLS
// inspector), else nil.
func (cfg *Config) every() *LoopChain {
	lo := cfg.Loops
	switch {
	case cfg.InspectTLS:
		return nil
	case len(cfg.Chains) == 1 && len(lo.Chains) == 1 && cfg.Default == nil && isAny(&cfg.Chains[0].Match):
		return lo.Chains[0]
	case len(cfg.Chains) == 0 && cfg.Default != nil:
		return lo.Default
	}
	return nil
}

// isAny reports whether m matches every connection.
func isAny(m *Match) bool {
	return m.DstPort == 0 && len(m.DstPrefixes) == 0 && len(m.ServerNames) == 0 && m.Transport == "" &&
		m.SrcType == listenerv3.FilterChainMatch_ANY && len(m.SrcPrefixes) == 0 && len(m.DirectSrc) == 0 && len(m.SrcPorts) == 0
}

// maxPendingHandOffs bounds the connections handed off by the loops that
// wait for their goroutine; beyond it they are closed (and counted as
// overflow).
const maxPendingHandOffs = 1024

// none stands for "no timeout" in the loops' configuration, where 0
// means the default.
const none = 100 * 365 * 24 * time.Hour

// loopTimeout is a connection manager's timeout (0: none) as the loops
// take it: none for 0, and none at most, since a deadline is a loop time
// plus the timeout (a configured 10,000 years is MaxInt64 nanoseconds).
func loopTimeout(d time.Duration) time.Duration {
	if d <= 0 || d > none {
		return none
	}
	return d
}

type handed struct {
	fd       int
	buffered []byte
	tls      *tlsrec.Conn // the connection's TLS, terminated on the loops; nil in plaintext
	counted  evloop.Counted
}

// listenLoops binds cfg.Addr with one socket per event loop.
func (l *Listener) listenLoops(cfg *Config, st *stats.Store) error {
	lo := cfg.Loops
	maxConns := cfg.MaxConnections
	if maxConns <= 0 {
		maxConns = 1 << 30
	}
	// The Server's own configuration serves nothing: classify names a
	// chain for every connection the loops keep. Its stat prefix is a
	// chain's, so that it adds no stats of its own.
	prefix := ""
	for _, lc := range append(slices.Clone(lo.Chains), lo.Default) {
		if lc != nil {
			prefix = lc.StatPrefix
			break
		}
	}
	srv, err := evloop.Listen(evloop.Config{Listen: cfg.Addr, Router: handOffRouter{}, StatPrefix: prefix, Stats: st,
		Log: l.log, ConnIDs: l.ids, MaxConns: maxConns, HeadersTimeout: none, IdleTimeout: none,
		Listener: &evloop.ListenerStats{CxTotal: l.stats.CxTotal, CxDestroy: l.stats.CxDestroy, CxOverflow: l.stats.CxOverflow,
			CxActive: l.stats.CxActive},
		Observer:   lo.Observer,
		HandOffTLS: l.handOffTLS,
		HandOff:    l.handOff,
		Classify:   l.classify,
		H2:         lo.H2})
	if err != nil {
		return fmt.Errorf("listener %s: bind %s on event loops: %w", cfg.Name, cfg.Addr, err)
	}
	l.loops, l.handoffs = srv, make(chan handed, maxPendingHandOffs)
	l.makeLoopChains(nil, cfg)
	return nil
}

// makeLoopChains makes the loops' side of cfg's loop chains, before cfg
// is in force (once per listener update, not per connection). A chain
// that was prev's (the same FilterChain) carries on prev's: an update
// that later changes it retires the connections of both.
func (l *Listener) makeLoopChains(prev, cfg *Config) {
	if cfg.Loops == nil {
		return
	}
	make1 := func(ch *Chain, lc *LoopChain) {
		if lc == nil {
			return
		}
		lc.ev = l.loops.NewChain(evloop.ChainConfig{Router: lc.Router, StatPrefix: lc.StatPrefix, TLS: lc.evloopTLS(),
			HeadersTimeout: loopTimeout(lc.HeadersTimeout), IdleTimeout: loopTimeout(lc.IdleTimeout),
			StreamIdleTimeout: loopTimeout(lc.StreamIdleTimeout), StreamFlushTimeout: loopTimeout(lc.StreamFlushTimeout),
			AcceptHTTP10: lc.AcceptHTTP10, Limits: lc.Limits, Continues: prev.loopChainOf(ch)})
	}
	for i, lc := range cfg.Loops.Chains {
		make1(&cfg.Chains[i], lc)
	}
	make1(cfg.Default, cfg.Loops.Default)
}

// loopChainOf is the loops' side of cfg's chain with ch's FilterChain;
// nil when there is none.
func (cfg *Config) loopChainOf(ch *Chain) *evloop.Chain {
	if cfg == nil || cfg.Loops == nil || ch.Source == nil {
		return nil
	}
	for i, lc := range cfg.Loops.Chains {
		if lc != nil && cfg.Chains[i].Source != nil && proto.Equal(cfg.Chains[i].Source, ch.Source) {
			return lc.ev
		}
	}
	if lc := cfg.Loops.Default; lc != nil && cfg.Default != nil && cfg.Default.Source != nil && proto.Equal(cfg.Default.Source, ch.Source) {
		return lc.ev
	}
	return nil
}

// classify is the loops' Classify: it chooses a new connection's filter
// chain as handle does (Select, on the same ConnInfo) and names the
// loops' chain that serves it, or hands the connection off: the
// configuration in force has no loops, the chain is not theirs, the TLS
// inspector applies to the connection (it peeks on the goroutine path),
// or no chain matches or the addresses cannot be read (handle then logs,
// counts and closes it as any connection). System calls: none when one
// chain takes every connection and nothing needs its addresses; else
// getsockname, getpeername and, under original_dst, getsockopt
// (SO_ORIGINAL_DST), whose results the access log reuses.
func (l *Listener) classify(fd int) evloop.Accept {
	handOff := evloop.Accept{HandOff: true}
	cfg := l.cfg.Load()
	if cfg.Loops == nil {
		return handOff
	}
	if lc := cfg.every(); lc != nil && (!cfg.OriginalDst || !lc.Logged) {
		return evloop.Accept{Chain: lc.ev}
	}
	ci, err := connInfoFD(fd, cfg.OriginalDst)
	if err != nil {
		return handOff
	}
	if cfg.InspectTLS && (cfg.TLSDisabled == nil || !cfg.TLSDisabled(ci.Dst.Port())) {
		return handOff
	}
	lc := cfg.Loops.Default
	if cfg.Default == nil {
		lc = nil
	}
	if i := Select(cfg.matches, ci); i >= 0 {
		lc = nil
		if i < len(cfg.Loops.Chains) {
			lc = cfg.Loops.Chains[i]
		}
	}
	if lc == nil {
		return handOff
	}
	return evloop.Accept{Chain: lc.ev, Local: ci.Dst, Remote: ci.Src}
}

// updateLoops makes the loops serve new connections with cfg (without
// cfg.Loops every new connection goes to the goroutine path), and drains
// their connections whose chain the update changed or removed.
func (l *Listener) updateLoops(prev, cfg *Config, drainAll bool) {
	if prev.Loops == nil {
		return
	}
	var retired []*evloop.Chain
	for i, lc := range prev.Loops.Chains {
		if lc != nil && (drainAll || !cfg.has(&prev.Chains[i])) {
			retired = append(retired, lc.ev)
		}
	}
	if lc := prev.Loops.Default; lc != nil && (drainAll || !cfg.has(prev.Default)) {
		retired = append(retired, lc.ev)
	}
	l.loops.Retire(retired...)
}

// handOffRouter hands every request to the goroutine path.
type handOffRouter struct{}

func (handOffRouter) Route(route.Head) evloop.Target { return evloop.Target{HandOff: true} }

// handOff is the loops' HandOff: it runs on a loop and must not block.
func (l *Listener) handOff(fd int, buffered []byte, counted evloop.Counted) {
	l.handOffTLS(fd, nil, buffered, counted)
}

// handOffTLS is the loops' HandOffTLS: handOff for a connection whose
// TLS the loops terminated.
func (l *Listener) handOffTLS(fd int, tc *tlsrec.Conn, buffered []byte, counted evloop.Counted) {
	select {
	case l.handoffs <- handed{fd, buffered, tc, counted}:
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
				go l.handle(ctx, c, nil, h.counted) // ends when the chain handler returns; waited for by Wait
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
	l.handle(ctx, raw, &resumedConn{replayConn{Conn: tc, pending: h.buffered}, tc}, h.counted)
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

// LoopH2UpstreamStreams is the number of requests the loops sent to
// HTTP/2 upstreams, each a stream of their own connections.
func (l *Listener) LoopH2UpstreamStreams() int64 {
	if l.loops == nil {
		return 0
	}
	return l.loops.H2UpstreamStreams()
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
