package cluster

import (
	"context"
	"net"
	"sync"

	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// connectingKey carries a request's WithConnecting hook.
type connectingKey struct{}

// WithConnecting returns ctx with f, which the fallback Transport calls
// (on a goroutine of its own) when the request's attempt starts a
// connect to wait for, before the request is written: the forwarder
// reads the request's body meanwhile, as Envoy's codec does while its
// pool connects (httpconn's readAhead), so that the body's end starts
// the route timeout then. Requests sent inline never wait for a connect
// with a body to come (inline).
func WithConnecting(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, connectingKey{}, f)
}

// dialOwnerKey carries, to the fallback Transport's dialer, a function
// that runs its argument when the request that started the dial ends
// (context.AfterFunc on the request's context; roundTripFallback).
type dialOwnerKey struct{}

// The fallback Transport's idle connections by host (h1Client.fallback):
// net/http closes them all at once (CloseIdleConnections) or each at its
// idle timeout, not those of one host. A host that leaves the cluster
// has its connections drained at once in Envoy (removeHosts,
// drainOrCloseConnPools), and in h1Client's own pool (forget): so the
// fallback's too, through the Transport's hooks. Its dialer wraps each
// connection (fbConn) to know its host's address and to forget it when
// net/http closes it; its PutIdleConn trace hook (roundTripFallback) says
// when one goes idle, GotConn when it is taken again. One that goes idle
// after its host left, its exchange running as the host went, is closed
// then. A new connection counts as idle until an exchange takes it: net/http
// pools one whose dial outlived its request (the request's context ended,
// or it took another connection) with no hook; as one of those could also
// be on its way to a request, not yet told by GotConn, forget leaves such
// connections of a host that left to CloseIdleConnections, which closes
// only those in net/http's idle pool (the other hosts' idle ones with
// them: rare, a dial that outlived its request).

// fbConn is a connection of the fallback Transport.
type fbConn struct {
	net.Conn
	t    *h1Client
	addr string
	once sync.Once
	// uses counts the exchanges that took it (fallbackBusy), so that the
	// end of one whose connection went to the next exchange before its
	// PutIdleConn hook ran does not mark it idle. Protected by t.mu.
	uses uint64
}

// Close forgets the connection (an idle one net/http closes at its idle
// timeout, or when the upstream closed it) and closes it.
func (c *fbConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.fbIdle, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// dialFallback is the fallback Transport's dialer: the cluster's
// connect, each connection wrapped to be known by its address. The
// request that started the dial is told it waits for a connect
// (WithConnecting), and the dial is abandoned when that request ends
// first (its client gone, its route timeout), as the loops close a
// connect whose request ended (not counted as a connect failure: see
// Known differences in docs/proxy.md for Envoy's pool, which lets it
// run on). net/http runs the dial on a goroutine of its own, its
// context carrying the request's values but not its end: the request's
// end comes through dialOwner (roundTripFallback).
func (t *h1Client) dialFallback(ctx context.Context, network, addr string) (net.Conn, error) {
	if f, _ := ctx.Value(connectingKey{}).(func()); f != nil {
		f()
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if after, _ := ctx.Value(dialOwnerKey{}).(func(func()) func() bool); after != nil {
		stop := after(cancel)
		defer stop()
	}
	h, _ := ctx.Value(hostKey{}).(*Host)
	nc, err := t.c.connect(dctx, h, addr, tlsctx.ALPNHTTP11)
	if err != nil {
		return nil, err
	}
	c := &fbConn{Conn: nc, t: t, addr: addr}
	t.mu.Lock()
	if t.fbIdle == nil {
		t.fbIdle = map[*fbConn]bool{}
	}
	t.fbIdle[c] = true // until an exchange takes it (fallbackBusy)
	t.mu.Unlock()
	return c, nil
}

// fallbackIdle is told that nc went back to the fallback Transport's
// idle pool at the end of its use-th exchange (fallbackBusy's): kept for
// forget, or closed at once when its host left the cluster while the
// exchange ran. Nothing when a later exchange took it already (net/http
// hands a connection to a request waiting for one before the hook runs).
func (t *h1Client) fallbackIdle(nc net.Conn, use uint64) {
	c, ok := nc.(*fbConn)
	if !ok {
		return
	}
	t.mu.Lock()
	if c.uses != use {
		t.mu.Unlock()
		return
	}
	gone := t.keep != nil && !t.keep(c.addr, nil) || t.closed
	if !gone {
		if t.fbIdle == nil {
			t.fbIdle = map[*fbConn]bool{}
		}
		t.fbIdle[c] = true
	}
	t.mu.Unlock()
	if gone {
		_ = c.Close() // net/http's reader sees it closed and drops it
	}
}

// fallbackBusy is told that the fallback Transport took nc for an
// exchange; it returns the exchange's count (fallbackIdle).
func (t *h1Client) fallbackBusy(nc net.Conn) uint64 {
	c, ok := nc.(*fbConn)
	if !ok {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fbIdle, c)
	c.uses++
	return c.uses
}

// forgetFallback closes the fallback Transport's idle connections whose
// host keep refuses (forget's, with t.mu held); it returns them, to be
// closed once the lock is released, and whether one of them was never
// taken by an exchange (sweep: not closed, as it may be on its way to a
// request; the caller then closes net/http's idle ones).
func (t *h1Client) forgetFallback(keep func(addr string, h *Host) bool) (gone []*fbConn, sweep bool) {
	for c := range t.fbIdle {
		if keep(c.addr, nil) {
			continue
		}
		delete(t.fbIdle, c)
		if c.uses == 0 {
			sweep = true // one an exchange takes now goes idle to fallbackIdle, which closes it
			continue
		}
		gone = append(gone, c)
	}
	return gone, sweep
}
