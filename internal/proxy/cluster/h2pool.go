package cluster

import (
	"context"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// A cluster's HTTP/2 connections are pooled by address in an h2Pool
// (x/net's http2.ClientConnPool) rather than in x/net's own pool, which
// closes the idle connections of every address or of none and never
// shows a connection's address. Envoy drains the connection pools of the
// hosts an update removes: their idle connections close at once, busy
// ones take no new stream and close when their last stream ends. The
// HTTP/1.1 pool forgets a removed address (h1Client.forget); h2Pool
// drains its connections (drain), which kept a removed host's connection
// open, and counted in upstream_cx_active, until the idle timeout (an
// hour by default).

// h2Pool is a cluster's HTTP/2 connections by address.
type h2Pool struct {
	c *Cluster
	t *http2.Transport // whose ConnPool this is

	mu      sync.Mutex
	conns   map[string][]*http2.ClientConn // those that may take new streams
	dialing map[string]*h2Dial
	// wires are the connections under the pooled ones. One that failed
	// for the upstream's protocol error (h2conn.go) takes no new stream,
	// though x/net's reader has yet to see it closed: Envoy closes such a
	// connection before it routes another request.
	wires map[*http2.ClientConn]*h2Conn
	// keep is the last drain's: an address it refuses gets no pooled
	// connection, nor one dialled later (by a request that chose its
	// host before the update, or a retry after the cluster was
	// replaced); nil keeps every address. halted: drained of all.
	keep   func(addr string) bool
	halted bool
}

// h2Dial is a connection being opened; the requests that wait for it
// share it.
type h2Dial struct {
	done chan struct{} // closed once cc or err is set
	cc   *http2.ClientConn
	w    *h2Conn // under cc
	err  error
	// unpooled: its address was drained while it dialled. The requests
	// that waited for it take their streams on it, and it is shut down
	// after orphanGrace (retire).
	unpooled bool
}

// orphanGrace is how long a connection dialled for a drained address
// takes streams before it is shut down: long enough for the requests
// that waited for its dial to start theirs.
const orphanGrace = time.Second

func newH2Pool(c *Cluster, t *http2.Transport) *h2Pool {
	return &h2Pool{c: c, t: t, conns: map[string][]*http2.ClientConn{}, dialing: map[string]*h2Dial{},
		wires: map[*http2.ClientConn]*h2Conn{}}
}

// GetClientConn returns a connection to addr with a stream reserved for
// req (take). x/net's Transport no longer asks (h2RT takes them).
func (p *h2Pool) GetClientConn(req *http.Request, addr string) (*http2.ClientConn, error) {
	cc, _, err := p.take(req, addr)
	return cc, err
}

// take returns a connection to addr with a stream reserved for req, and
// the connection under it: one open with room, else a new one (a dial
// under way is shared).
func (p *h2Pool) take(req *http.Request, addr string) (*http2.ClientConn, *h2Conn, error) {
	for {
		p.mu.Lock()
		for _, cc := range p.conns[addr] {
			w := p.wires[cc]
			if w != nil && w.failed.Load() {
				continue
			}
			if cc.ReserveNewRequest() {
				p.mu.Unlock()
				return cc, w, nil
			}
		}
		d := p.dialing[addr]
		if d == nil {
			d = &h2Dial{done: make(chan struct{})}
			p.dialing[addr] = d
			// The dial outlives a request that stops waiting, as in
			// x/net's pool; connect_timeout bounds it (dial).
			go p.dial(req.Context(), addr, d) // ends with the dial
		}
		p.mu.Unlock()
		select {
		case <-d.done:
		case <-req.Context().Done():
			return nil, nil, req.Context().Err()
		}
		if d.err != nil {
			return nil, nil, d.err
		}
		if d.unpooled && d.cc.ReserveNewRequest() {
			return d.cc, d.w, nil
		}
		// Full already (other requests took its streams): again.
	}
}

// dial opens a connection to addr for d; ctx carries the request's host
// (WithHost), for its stats.
func (p *h2Pool) dial(ctx context.Context, addr string, d *h2Dial) {
	nc, err := p.c.dialH2(ctx, "tcp", addr)
	var cc *http2.ClientConn
	if err == nil {
		if cc, err = p.t.NewClientConn(nc); err != nil {
			_ = nc.Close()
		}
	}
	p.mu.Lock()
	delete(p.dialing, addr)
	if err == nil {
		d.w, _ = nc.(*h2Conn)
		if p.kept(addr) {
			p.conns[addr] = append(p.conns[addr], cc)
			if d.w != nil {
				p.wires[cc] = d.w
			}
		} else {
			d.unpooled = true
			// Ends after orphanGrace and the streams it took.
			go func() {
				time.Sleep(orphanGrace)
				_ = cc.Shutdown(context.Background())
			}()
		}
	}
	d.cc, d.err = cc, err
	close(d.done)
	p.mu.Unlock()
}

// kept reports whether addr's connections may be pooled. Called with mu
// held.
func (p *h2Pool) kept(addr string) bool {
	return !p.halted && (p.keep == nil || p.keep(addr))
}

// shutdown makes cc take no new stream and close once its streams (those
// reserved included) end, without holding up the caller.
func (p *h2Pool) shutdown(cc *http2.ClientConn) {
	cc.SetDoNotReuse()
	// Ends when cc's last stream ends and cc is closed (x/net's
	// Shutdown waits for them; each is bounded by its route timeout), or
	// at once for an idle connection.
	go func() { _ = cc.Shutdown(context.Background()) }()
}

// closeIdle closes the connections that carry no stream (none reserved):
// forgotten, so that they take none, and shut down.
func (p *h2Pool) closeIdle() {
	var idle []*http2.ClientConn
	p.mu.Lock()
	for addr, l := range p.conns {
		kept := l[:0]
		for _, cc := range l {
			// Reservations are made with mu held: none can start on
			// cc once it is found idle here.
			if st := cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
				idle = append(idle, cc)
				delete(p.wires, cc)
			} else {
				kept = append(kept, cc)
			}
		}
		clear(l[len(kept):]) // not kept reachable by the array
		if len(kept) == 0 {
			delete(p.conns, addr)
		} else {
			p.conns[addr] = kept
		}
	}
	p.mu.Unlock()
	for _, cc := range idle {
		p.shutdown(cc)
	}
}

// MarkDead forgets a connection that closed or went away (GOAWAY).
func (p *h2Pool) MarkDead(cc *http2.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.wires, cc)
	for addr, l := range p.conns {
		for i, c := range l {
			if c == cc {
				copy(l[i:], l[i+1:])
				l[len(l)-1] = nil // not kept reachable by the array
				l = l[:len(l)-1]
				if len(l) == 0 {
					delete(p.conns, addr)
				} else {
					p.conns[addr] = l
				}
				return
			}
		}
	}
}

// drain drains the connections of the addresses keep refuses (nil: of
// every address, for good), and of those replaced says (their host was
// replaced by a new one at the same address: added again, or moved to
// another locality): forgotten, so that they take no new stream,
// closed at once when idle, else when their last stream ends (shutdown).
// Connections dialled later for the addresses keep refuses are drained
// likewise.
func (p *h2Pool) drain(keep, replaced func(addr string) bool) {
	var gone []*http2.ClientConn
	p.mu.Lock()
	if keep == nil {
		p.halted = true
	}
	p.keep = keep
	for addr, l := range p.conns {
		if !p.kept(addr) || replaced != nil && replaced(addr) {
			gone = append(gone, l...)
			delete(p.conns, addr)
			for _, cc := range l {
				delete(p.wires, cc)
			}
		}
	}
	// Reservations are made with mu held: none can start on these now.
	// A request that reserved a stream on one before keeps it, and
	// shutdown waits for that stream too.
	p.mu.Unlock()
	for _, cc := range gone {
		p.shutdown(cc)
	}
}
