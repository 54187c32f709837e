// Package listener runs weft proxy's listening sockets: it accepts
// connections, recovers the original destination of redirected ones
// (SO_ORIGINAL_DST after an iptables REDIRECT), inspects TLS for the SNI
// when a filter chain matches on it, picks the filter chain as Envoy does
// and hands the connection to the chain's handler (HTTP connection manager
// or TCP proxy). It keeps the connections it accepted, to drain them when
// an update changes or removes their chain or the listener goes.
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// Handler serves a connection that matched a filter chain. It owns c from
// then on and must close it. ServeConn may return before the connection
// ends (the HTTP server serves it on its own goroutines).
type Handler interface {
	ServeConn(ctx context.Context, c *Conn)
}

// Chain is one filter chain: a match and what serves it.
type Chain struct {
	Name    string
	Match   Match
	Handler Handler
	TLS     TLS // nil: plaintext
	// Source is the FilterChain the chain was built from. An update
	// drains the connections of a chain whose Source is not in the new
	// configuration unchanged; nil is never equal to anything.
	Source *listenerv3.FilterChain
}

// Config is an immutable compiled listener.
type Config struct {
	Name string
	Addr string // host:port to bind
	// OriginalDst is set by the original_dst listener filter: the
	// destination is read with SO_ORIGINAL_DST.
	OriginalDst bool
	// InspectTLS is set by the tls_inspector listener filter when a chain
	// matches on server names or transport protocol.
	InspectTLS bool
	// TLSDisabled, when set, turns the inspector off for connections whose
	// destination port it matches (the filter's filter_disabled).
	TLSDisabled     Predicate
	FiltersTimeout  time.Duration // listener_filters_timeout; 0 = none
	ContinueTimeout bool          // continue_on_listener_filters_timeout
	Chains          []Chain
	Default         *Chain // default_filter_chain, may be nil
	// MaxConnections caps the listener's open connections; beyond it a
	// new connection is closed at once (downstream_cx_overflow). 0 or
	// less: no cap.
	MaxConnections int
	// DrainTime is how long a draining connection has to finish before
	// it is closed regardless (Envoy's --drain-time-s); 0 uses
	// DefaultDrainTime, negative closes it at once.
	DrainTime time.Duration
	// Loops, when set, serves the listener on event loops (see Loops).
	// It is read when the listener is bound; an update that clears it
	// hands the loops' connections to the chains from then on.
	Loops   *Loops
	matches []Match
}

// DefaultDrainTime is Envoy's default --drain-time-s.
const DefaultDrainTime = 600 * time.Second

// Conn is an accepted connection with what matching learned about it.
type Conn struct {
	net.Conn
	ID         uint64
	Listener   string
	Dst        netip.AddrPort // original destination, or the local address
	Src        netip.AddrPort
	ServerName string
	Chain      *Chain
	stats      *Stats
	closed     atomic.Bool
	raw        net.Conn  // the accepted socket, under any TLS wrapper
	owner      *Listener // nil in tests that build a Conn by hand

	// CountedCx and CountedHTTP1: the event loops handed the connection
	// off having counted it in its connection manager's
	// downstream_cx_total, and downstream_cx_http1_total
	// (evloop.Counted); its handler counts the others.
	CountedCx, CountedHTTP1 bool

	draining atomic.Bool // set with owner.mu held
	onDrain  func()      // protected by owner.mu
	killer   *time.Timer // closes raw when the drain time ends; protected by owner.mu
}

// Close closes the connection once and counts it.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		if c.stats != nil {
			c.stats.CxActive.Dec()
			c.stats.CxDestroy.Inc()
		}
		if c.owner != nil {
			c.owner.forget(c)
		}
	}
	return err
}

// OnDrain sets what the connection's handler does when the connection
// starts draining: finish what is in flight, then close (HTTP/1.1
// "Connection: close", HTTP/2 GOAWAY). f runs at once when the connection
// is draining already, else from the goroutine applying a listener
// update; it must not block. A later call replaces f. Whatever the
// handler does, a draining connection is closed when the drain time ends.
func (c *Conn) OnDrain(f func()) {
	if c.owner == nil {
		return
	}
	c.owner.mu.Lock()
	c.onDrain = f
	draining := c.draining.Load()
	c.owner.mu.Unlock()
	if draining && f != nil {
		f()
	}
}

// Draining reports whether the connection is draining: its listener was
// removed, or its filter chain was changed or removed by an update.
func (c *Conn) Draining() bool { return c.draining.Load() }

// drain starts draining c and returns the handler's hook, for the caller
// to run once it has released owner.mu. Called with owner.mu.
func (c *Conn) drain(d time.Duration) func() {
	if c.draining.Load() {
		return nil
	}
	c.draining.Store(true)
	raw := c.raw
	c.killer = time.AfterFunc(d, func() { _ = raw.Close() }) // one-shot; stopped when c closes
	return c.onDrain
}

// runHooks runs drain hooks collected under mu.
func runHooks(hooks []func()) {
	for _, f := range hooks {
		if f != nil {
			f()
		}
	}
}

// CloseWrite half-closes (TCP proxy needs it through the wrapper).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Stats are Envoy's listener.<address>.* stats.
type Stats struct {
	CxTotal, CxDestroy, NoChain, CxOverflow *stats.Counter
	CxActive                                *stats.Gauge
}

// StatName is Envoy's listener stat prefix for an address: 0.0.0.0_15000.
func StatName(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h + "_" + p
}

// Listener is one bound socket whose configuration can be swapped.
type Listener struct {
	name  string
	addr  string
	log   *slog.Logger
	ln    net.Listener
	cfg   atomic.Pointer[Config]
	stats Stats
	ids   *atomic.Uint64

	wg     sync.WaitGroup // accept loop and connection goroutines
	cancel context.CancelFunc

	mu      sync.Mutex
	conns   map[*Conn]struct{} // open connections that matched a chain; protected by mu
	stopped bool               // protected by mu

	// With Loops: the event loops (ln is nil), what they hand off, and
	// what stops them.
	loops     *evloop.Server
	handoffs  chan handed
	stopLoops context.CancelFunc
	handedOff atomic.Int64
}

// Prepare computes the match table of cfg and checks it.
func (cfg *Config) Prepare() error {
	cfg.matches = make([]Match, len(cfg.Chains))
	for i := range cfg.Chains {
		cfg.matches[i] = cfg.Chains[i].Match
	}
	return nil
}

// Listen binds cfg.Addr. The socket accepts nothing until Serve.
func Listen(cfg *Config, st *stats.Store, ids *atomic.Uint64, log *slog.Logger) (*Listener, error) {
	var ln net.Listener
	name := StatName(cfg.Addr)
	if cfg.Loops == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("listener %s: bind %s: %w", cfg.Name, cfg.Addr, err)
		}
		if !strings.HasSuffix(cfg.Addr, ":0") {
			name = StatName(ln.Addr().String())
		}
	}
	sc := st.Scope("listener."+name+".", "envoy_listener_", stats.Label{Name: "envoy_listener_address", Value: name})
	l := &Listener{name: cfg.Name, addr: cfg.Addr, log: log.With("listener", cfg.Name), ln: ln, ids: ids,
		stats: Stats{CxTotal: sc.Counter("downstream_cx_total"), CxDestroy: sc.Counter("downstream_cx_destroy"),
			NoChain: sc.Counter("no_filter_chain_match"), CxActive: sc.Gauge("downstream_cx_active"),
			CxOverflow: sc.Counter("downstream_cx_overflow")},
		conns: map[*Conn]struct{}{}}
	l.cfg.Store(cfg)
	if cfg.Loops != nil {
		if err := l.listenLoops(cfg, st); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Addr is the bound address (useful when the configured port was 0).
func (l *Listener) Addr() net.Addr {
	if l.loops != nil {
		a, _ := net.ResolveTCPAddr("tcp", l.loops.Addr())
		return a
	}
	return l.ln.Addr()
}

// OnLoops reports whether the listener is served by event loops.
func (l *Listener) OnLoops() bool { return l.loops != nil }

// ConfiguredAddr is the address the configuration asked for.
func (l *Listener) ConfiguredAddr() string { return l.addr }

// Config returns the current configuration.
func (l *Listener) Config() *Config { return l.cfg.Load() }

// Update swaps the configuration. As Envoy's filter-chain-only update,
// connections whose chain is in cfg unchanged (same FilterChain) keep it,
// and the others drain: they finish what is in flight and close, and are
// closed regardless when cfg's drain time ends. drainAll drains every
// connection (an update of more than the filter chains, which Envoy
// applies by replacing the listener).
func (l *Listener) Update(cfg *Config, drainAll bool) {
	var hooks []func()
	defer func() { runHooks(hooks) }()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loops != nil {
		var prev *Config // drainAll: no chain carries on
		if !drainAll {
			prev = l.cfg.Load()
		}
		l.makeLoopChains(prev, cfg)
	}
	prev := l.cfg.Swap(cfg)
	if l.loops != nil {
		l.updateLoops(prev, cfg, drainAll)
	}
	kept := map[*Chain]bool{}
	for c := range l.conns {
		k, ok := kept[c.Chain]
		if !ok {
			k = !drainAll && cfg.has(c.Chain)
			kept[c.Chain] = k
		}
		if !k {
			hooks = append(hooks, c.drain(cfg.drainTime()))
		}
	}
	if len(hooks) > 0 {
		l.log.Debug("connections draining after an update", "connections", len(hooks), "all", drainAll)
	}
}

// has reports whether ch's FilterChain is among cfg's chains.
func (cfg *Config) has(ch *Chain) bool {
	if ch == nil || ch.Source == nil {
		return false
	}
	for i := range cfg.Chains {
		if cfg.Chains[i].Source != nil && (&cfg.Chains[i] == ch || proto.Equal(cfg.Chains[i].Source, ch.Source)) {
			return true
		}
	}
	return cfg.Default != nil && cfg.Default.Source != nil && (cfg.Default == ch || proto.Equal(cfg.Default.Source, ch.Source))
}

func (cfg *Config) drainTime() time.Duration {
	switch {
	case cfg.DrainTime == 0:
		return DefaultDrainTime
	case cfg.DrainTime < 0:
		return 0
	}
	return cfg.DrainTime
}

// register records c, which matched a chain of cfg; when the listener has
// stopped or c's chain left the configuration meanwhile, c drains at once.
func (l *Listener) register(c *Conn, cfg *Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c.owner = l
	l.conns[c] = struct{}{}
	if cur := l.cfg.Load(); l.stopped || cur != cfg && !cur.has(c.Chain) {
		l.log.Debug("new connection draining: its chain changed while it was accepted", "stopped", l.stopped)
		c.drain(cur.drainTime()) // no hook yet
	}
}

// forget drops a closed connection.
func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
	if c.killer != nil {
		c.killer.Stop()
	}
}

// Serve starts accepting. Connections are served until ctx ends.
func (l *Listener) Serve(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	if l.loops != nil {
		l.serveLoops(ctx)
		return
	}
	l.wg.Add(1)
	go l.acceptLoop(ctx) // ends when Stop closes the socket; waited for by Wait
}

// Stop closes the socket and drains the accepted connections, as Envoy
// does for a removed listener: they finish what is in flight and close,
// and are closed regardless when the drain time ends.
func (l *Listener) Stop() {
	if l.loops != nil {
		if l.stopLoops != nil {
			// The loops' connections drain as the others below, and are
			// closed when the drain time ends.
			l.loops.Shutdown()
			time.AfterFunc(l.cfg.Load().drainTime(), l.stopLoops) // one-shot
		} else {
			l.loops.Close() // never served
		}
	} else {
		_ = l.ln.Close()
	}
	var hooks []func()
	defer func() { runHooks(hooks) }()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	d := l.cfg.Load().drainTime()
	for c := range l.conns {
		hooks = append(hooks, c.drain(d))
	}
}

// Wait returns when the accept loop and every connection goroutine of
// this listener have returned.
func (l *Listener) Wait() { l.wg.Wait() }

func (l *Listener) acceptLoop(ctx context.Context) {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if limit := l.cfg.Load().MaxConnections; limit > 0 && l.stats.CxActive.Value() >= int64(limit) {
			// As Envoy's listener connection limit: accepted and closed at
			// once, so that the backlog does not fill with connections
			// that would wait for a slot.
			l.stats.CxOverflow.Inc()
			_ = c.Close()
			continue
		}
		l.stats.CxTotal.Inc()
		l.stats.CxActive.Inc()
		l.wg.Add(1)
		go l.handle(ctx, c, nil, 0) // ends when the chain handler returns; waited for by Wait
	}
}

// handle serves an accepted connection. tc, when not nil, is raw's TLS
// carried on from the event loops' handshake (with the plaintext they
// read in front): the chain's handshake is not run again. counted is
// what the loops counted of a connection they handed off (Conn.CountedCx).
func (l *Listener) handle(ctx context.Context, raw, tc net.Conn, counted evloop.Counted) {
	defer l.wg.Done()
	cfg := l.cfg.Load()
	c := &Conn{Conn: raw, raw: raw, ID: l.ids.Add(1), Listener: cfg.Name, stats: &l.stats,
		CountedCx: counted&evloop.CountedCx != 0, CountedHTTP1: counted&evloop.CountedHTTP1 != 0}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	local, _ := netip.ParseAddrPort(raw.LocalAddr().String())
	c.Src, _ = netip.ParseAddrPort(raw.RemoteAddr().String())
	c.Dst = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if cfg.OriginalDst {
		if od, ok, err := OriginalDst(raw); err != nil {
			l.log.Debug("original destination unavailable", "err", err)
		} else if ok {
			c.Dst = netip.AddrPortFrom(od.Addr().Unmap(), od.Port())
		}
	}
	ci := ConnInfo{Dst: c.Dst, Src: c.Src, DirectSrc: c.Src}
	if cfg.InspectTLS && (cfg.TLSDisabled == nil || !cfg.TLSDisabled(c.Dst.Port())) {
		nc, isTLS, sni, timedOut := inspectTLS(raw, cfg.FiltersTimeout)
		if timedOut && !cfg.ContinueTimeout {
			_ = c.Close()
			return
		}
		c.Conn, ci.TLS, ci.ServerName, c.ServerName = nc, isTLS, sni, sni
	}
	i := Select(cfg.matches, ci)
	var ch *Chain
	switch {
	case i >= 0:
		ch = &cfg.Chains[i]
	case cfg.Default != nil:
		ch = cfg.Default
	default:
		l.stats.NoChain.Inc()
		l.log.Debug("no matching filter chain", "dst", c.Dst.String(), "sni", ci.ServerName)
		_ = c.Close()
		return
	}
	c.Chain = ch
	l.register(c, cfg)
	if tc != nil {
		if !l.resumeTLS(c, tc) {
			return
		}
	} else if !l.startTLS(ctx, c) {
		return
	}
	ch.Handler.ServeConn(ctx, c)
}

// PortOf returns the port of a host:port string, or 0.
func PortOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
