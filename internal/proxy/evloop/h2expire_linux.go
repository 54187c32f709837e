package evloop

// An HTTP/2 client connection's timeouts on the loops: the connection's
// idle timeout, a stream stalled on the client's window, and what
// expires when they pass.

import (
	"io"
	"slices"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2Deadline is an HTTP/2 connection's next timeout: the idle timeout
// while it has no stream, else that of the first stream waiting to write
// (a window the client keeps closed, a socket it does not read) that made
// no progress since (stallDeadline).
func (l *loop) h2Deadline(d *down) int64 {
	c := d.h2c
	if len(c.streams) == 0 {
		return d.last + int64(d.gen.idle)
	}
	at := int64(never)
	for _, st := range c.blocked {
		if !st.gone {
			at = min(at, d.gen.stallDeadline(st))
		}
	}
	return at
}

// stallDeadline is when a stream waiting to write (a window the client
// keeps closed, a socket it does not read) is reset: stream_flush_timeout
// after its response's end was buffered, or after its last progress if
// later (Envoy's flush timer starts with the end); else
// stream_idle_timeout after its last progress.
func (g *generation) stallDeadline(st *h2stream) int64 {
	if st.endPending {
		return max(st.last, st.endAt) + int64(g.flush)
	}
	idle := st.sd.idle // the chain's, or the route's idle_timeout once routed (dispatch)
	if idle <= 0 {
		return never
	}
	return st.last + idle
}

// h2Expire enforces the timeouts: a stream stuck past its stallDeadline is
// reset (RST_STREAM INTERNAL_ERROR, as the goroutine path's HTTP/2 server
// resets a stream whose write deadline passed; counted as
// http2.tx_flush_timeout when its end was buffered, else as
// downstream_rq_idle_timeout, Envoy's stream idle timeout), a connection
// without a stream gets GOAWAY, then the close.
func (l *loop) h2Expire(d *down) {
	c := d.h2c
	idle := int64(d.gen.idle)
	if len(c.streams) > 0 {
		for _, st := range slices.Clone(c.blocked) {
			if !st.gone && l.now >= d.gen.stallDeadline(st) {
				if st.endPending {
					d.gen.st.txFlushTimeout.Inc()
				} else {
					d.gen.st.rqIdleTimeout.Inc()
					// Logged as Envoy's onIdleTimeout logs it, after
					// the head too: SI, and the details its local
					// reply sets as it resets the stream.
					st.sd.logFlags(accesslog.StreamIdleTimeout, proxyroute.DetailsStreamIdleTimeout)
					if us := st.us; us != nil && us.gotHead {
						l.logDone(st.sd, us.x.status) // logEnded knows no upstream stream's status
					}
				}
				_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeInternal)
				st.reset = true
				l.h2EndStream(st)
			}
		}
		return
	}
	if l.now-d.last < idle {
		return
	}
	d.gen.st.cxIdleTimeout.Inc()
	l.h2GoAway(c, http2.ErrCodeNo, true)
	l.flushDown(d)
	if !d.closed && !d.draining {
		l.closeDown(d)
	}
}

var _ io.Writer = h2writer{}
