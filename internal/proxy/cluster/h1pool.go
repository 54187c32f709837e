package cluster

import (
	"context"
	"time"

	"github.com/weftmesh/weft/internal/proxy/route"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// get returns an idle connection to addr, or a new one.
func (t *h1Client) get(ctx context.Context, addr string) (*h1Conn, error) {
	var now time.Time
	for {
		t.mu.Lock()
		l := t.idle[addr]
		if len(l) == 0 {
			t.mu.Unlock()
			break
		}
		pc := l[len(l)-1]
		l[len(l)-1] = nil
		if len(l) == 1 {
			delete(t.idle, addr) // no key is left for an address gone
		} else {
			t.idle[addr] = l[:len(l)-1]
		}
		t.mu.Unlock()
		if now.IsZero() {
			now = time.Now()
		}
		idle := now.Sub(pc.idleSince)
		// Bytes buffered on an idle connection answer no request of ours
		// (a body after a HEAD response, say); sent on it, the next
		// request would read them as its response.
		if idle >= t.idleTimeout || pc.br.Buffered() > 0 {
			pc.close()
			continue
		}
		if idle >= staleAfter {
			switch pc.peek() {
			case peekEnded:
				pc.close()
				continue
			case peekBytes:
				go t.unsolicited(pc) // ends when the bytes tell, the connection ends, or after staleAfter
				continue
			}
		}
		pc.reused = true
		return pc, nil
	}
	h, _ := ctx.Value(hostKey{}).(*Host)
	nc, err := t.c.connect(ctx, h, addr, tlsctx.ALPNHTTP11)
	if err != nil {
		return nil, err
	}
	return newH1Conn(nc, addr, h), nil
}

// put returns a connection whose exchange ended cleanly to the pool.
func (t *h1Client) put(pc *h1Conn) {
	pc.idleSince = time.Now()
	var expired *h1Conn
	t.mu.Lock()
	l := t.idle[pc.addr]
	if t.closed || len(l) >= maxIdlePerHost || t.keep != nil && !t.keep(pc.addr, pc.host) {
		t.mu.Unlock()
		pc.close()
		return
	}
	// Connections are closed once idle_timeout passes without use; the
	// least recently used is checked on every return, so an idle pool
	// shrinks as traffic flows without a timer per connection.
	if len(l) > 0 && pc.idleSince.Sub(l[0].idleSince) >= t.idleTimeout {
		expired = l[0]
		l = append(l[:0], l[1:]...)
	}
	t.idle[pc.addr] = append(l, pc)
	t.mu.Unlock()
	if expired != nil {
		expired.close()
	}
}

// forget closes the idle connections keep refuses (of hosts that left
// the cluster or were replaced) and drops the keys left without one.
// Nothing else would: an address no longer picked is never looked up
// again, and its connections, closed by their peer as it went, stayed
// open on our side.
func (t *h1Client) forget(keep func(addr string, h *Host) bool) {
	var gone []*h1Conn
	t.mu.Lock()
	t.keep = keep
	fbGone, fbSweep := t.forgetFallback(keep)
	for addr, l := range t.idle {
		kept := l[:0]
		for _, pc := range l {
			if keep(addr, pc.host) {
				kept = append(kept, pc)
			} else {
				gone = append(gone, pc)
			}
		}
		clear(l[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = kept
		}
	}
	t.mu.Unlock()
	for _, pc := range gone {
		pc.close()
	}
	for _, c := range fbGone {
		_ = c.Close() // net/http's reader sees it closed and drops it
	}
	if fbSweep {
		t.fallback.CloseIdleConnections() // without t.mu: fbConn.Close takes it
	}
}

// forgetAddr closes the idle connections to addr (an ORIGINAL_DST
// destination cleaned up) and drops its key.
func (t *h1Client) forgetAddr(addr string) {
	t.mu.Lock()
	l := t.idle[addr]
	delete(t.idle, addr)
	t.mu.Unlock()
	for _, pc := range l {
		pc.close()
	}
}

// closeIdle closes every idle connection; connections in use close when
// their exchange ends. The client must not be used afterwards, except by
// exchanges already running.
func (t *h1Client) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = map[string][]*h1Conn{}, true
	t.mu.Unlock()
	for _, l := range idle {
		for _, pc := range l {
			pc.close()
		}
	}
	t.fallback.CloseIdleConnections()
}

func (pc *h1Conn) close() { _ = pc.nc.Close() }

// peek checks an idle connection without blocking: still open with
// nothing to read, ended by the upstream (an EOF, a reset), or holding
// bytes it sent unasked (peekIdle).
func (pc *h1Conn) peek() peeked {
	if pc.raw == nil {
		return peekOpen
	}
	return peekIdle(pc.raw)
}

// peeked is what peekIdle found on a connection.
type peeked uint8

const (
	peekOpen  peeked = iota // nothing to read, not closed
	peekEnded               // EOF, a reset or another error
	peekBytes               // bytes to read (over TLS, records)
)

// unsolicited reads the bytes an upstream sent on the idle connection pc
// unasked, then closes it, counting them in upstream_cx_protocol_error as
// Envoy's codec client counts them (route.ReadIdleBytes): it reads until
// they tell, the connection ends, or staleAfter passes (a head still
// partial then counts nothing). Over TLS they may be a record without
// data (a NewSessionTicket, a close_notify): nothing is counted.
func (t *h1Client) unsolicited(pc *h1Conn) {
	defer pc.close()
	_ = pc.nc.SetReadDeadline(time.Now().Add(staleAfter))
	buf := make([]byte, bufSize)
	var got []byte
	for {
		n, err := pc.br.Read(buf)
		got = append(got, buf[:n]...)
		switch route.ReadIdleBytes(got) {
		case route.IdleProtocolError:
			t.c.Stats.CxProtocolError.Inc()
			return
		case route.IdleRequestTimeout:
			return
		}
		if err != nil {
			return
		}
	}
}
