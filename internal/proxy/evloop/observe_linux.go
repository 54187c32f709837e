package evloop

// How the loops tell the Observer (config.go) of each attempt to a
// cluster's host: its start, its final response head (a gRPC response's
// grpc-status with it, and the end its count may wait for), or how it
// failed.

import (
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// cxConnected tells the Observer that u's TCP connect is done: its
// connection counts in the cluster's and host's connection statistics
// until closeUp uncounts it. Once per connection: over TLS the connect
// is reported done again while the handshake has not started.
func (l *loop) cxConnected(u *up) {
	if o := l.srv.cfg.Observer; o != nil && !u.counted {
		u.cx = o.Connected(u.pool.def.name, u.pool.tag, time.Duration(l.now-u.started))
		u.counted = true
	}
}

// connectFailed counts a failed connect of a connection of p (its TCP
// connect, or its TLS handshake) in the cluster's
// upstream_cx_connect_fail and, through the Observer, in its host's
// cx_connect_fail, as the goroutine path counts both.
func (l *loop) connectFailed(p *clusterPool) {
	p.st.cxConnectFail.Inc()
	if o := l.srv.cfg.Observer; o != nil {
		o.ConnectFailed(p.def.name, p.tag)
	}
}

// observeStart tells the Observer an attempt on u begins.
func (l *loop) observeStart(u *up, cluster string, tag any) {
	if o := l.srv.cfg.Observer; o != nil {
		u.cluster, u.tag, u.observing, u.grpcWait, u.headOpen = cluster, tag, true, false, false
		o.Started(cluster, tag)
	}
}

// readHead takes the final response head of u's attempt, of status, for
// the Observer. True when it is the response to a gRPC request (d's)
// that the Observer hears of: the caller then sets the head's
// grpc-status and whether it ends the response (u.rh.GRPCStatus, End),
// read only then.
func (l *loop) readHead(u *up, d *down, status int) bool {
	u.rh = proxyroute.ResponseHead{Status: status, GRPCStatus: proxyroute.NoGRPCStatus}
	u.rh.GRPC = u.observing && d.isGRPC()
	return u.rh.GRPC
}

// isGRPC reports whether d's request in flight is gRPC.
func (d *down) isGRPC() bool {
	if d.h2 != nil {
		return d.h2.grpc
	}
	return d.grpc
}

// observeHead tells the Observer of u's final response head (readHead),
// sent on or (retried) retried, once.
func (l *loop) observeHead(u *up, retried bool) {
	if u.observing {
		u.observing = false
		r := u.rh
		r.Retried = retried
		u.headOpen = !retried
		u.grpcWait = l.srv.cfg.Observer.Head(u.cluster, u.tag, r)
	}
}

// observeGRPCDone tells the Observer how a gRPC response whose count
// waits for its end ended (Observer.GRPCDone): status is its trailers'
// grpc-status, or NoGRPCStatus. Once; nothing when it waits for none.
// Every end of a response whose head went on calls it, which ends what
// observeCut may tell: a cut calls observeCut first.
func (l *loop) observeGRPCDone(u *up, status int) {
	u.headOpen = false
	if u.grpcWait {
		u.grpcWait = false
		l.srv.cfg.Observer.GRPCDone(u.cluster, u.tag, status)
	}
}

// observeCut tells the Observer that u's response, its head told
// (observeHead), was cut before its end (Observer.Cut): by the upstream
// (its reset, its connection's end or its protocol error), or, timedOut,
// by the route timeout. Once; nothing after its end.
func (l *loop) observeCut(u *up, timedOut bool) {
	if u.headOpen {
		u.headOpen = false
		l.srv.cfg.Observer.Cut(u.cluster, u.tag, timedOut)
	}
}

// observeDone tells the Observer how u's attempt ended, once.
func (l *loop) observeDone(u *up, code int, timedOut bool) {
	if u.observing {
		u.observing = false
		l.srv.cfg.Observer.Done(u.cluster, u.tag, code, timedOut)
	}
}

// observeRetried is observeDone for an attempt that is retried: on its
// response head (code > 0, read by readHead), or a failure.
func (l *loop) observeRetried(u *up, code int, timedOut bool) {
	if code > 0 {
		l.observeHead(u, true)
		return
	}
	l.observeDone(u, code, timedOut)
}
