package evloop

import (
	"net/netip"
	"syscall"
	"time"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// logState is a logged connection's record in the making.
type logState struct {
	to     AccessLogger
	rec    LogRecord
	head   []byte // backing of rec.Head, reused by the connection's requests
	conn   []byte // backing of an h2c upgrade's Connection field (request.h2cConn)
	resp   []byte
	rid    []byte
	fields []HeaderField // backing of rec.Headers
	active bool          // a request is logged when done
	start  int64
	respAt int64
}

// logStart begins the record of a request dispatched to t, whose :scheme
// is scheme (requestScheme), when its connection's Router logs.
func (l *loop) logStart(d *down, head []byte, req *request, scheme string, t *Target) {
	to, ok := d.gen.router.(AccessLogger)
	if !ok {
		return
	}
	if d.h2 != nil && d.lg == nil {
		d.lg = l.h2LogState(d) // its connection's addresses and ID (h2log_linux.go)
	}
	g := l.logConn(d)
	g.rec.HTTP2 = d.h2 != nil
	g.to, g.active, g.start, g.respAt = to, true, l.now, -1
	g.head = append(g.head[:0], head...)
	g.fields = g.fields[:0]
	for i := range req.lines {
		h := &req.lines[i]
		if req.expectContinue && h.hop && equalFold(h.name.of(g.head), "expect") {
			// Answered by the proxy (dispatch): Envoy's connection
			// manager removes it from the request headers its access
			// log reads, as the goroutine path does.
			continue
		}
		if h.gone {
			continue // an h2c upgrade's, stripped (proxyroute.StripH2C)
		}
		g.fields = append(g.fields, HeaderField{h.name.of(g.head), h.value.of(g.head)})
	}
	if len(req.h2cConn) > 0 {
		g.conn = append(g.conn[:0], req.h2cConn...)
		g.fields = append(g.fields, HeaderField{connectionName, g.conn})
	}
	g.rec.Method, g.rec.Target, g.rec.Scheme = req.method.of(g.head), req.target.of(g.head), scheme
	g.rid, g.resp = g.rid[:0], g.resp[:0]
	r := &g.rec
	r.Start = l.epoch.Add(time.Duration(l.now))
	r.Flags, r.Details, r.UpstreamFailure, r.BytesReceived, r.BytesSent, r.Code = 0, "", "", 0, 0, 0
	r.Cluster, r.Route, r.Host, r.Attempts = t.Cluster, t.Route, t.Host, 0
	// The path sent upstream when not the request's (normalised or
	// rewritten): Envoy logs :path as its connection manager and router
	// left it.
	r.Path, r.OriginalPath, r.Authority, r.HeaderOps = t.Path, t.OriginalPath, t.Authority, t.Headers
	// A circuit breakers' overflow is refused by its first attempt's
	// pool, which Envoy's router counted (decodeHeaders), as the
	// goroutine path does.
	if t.Cluster != "" && (t.Status == 0 || t.Flags&accesslog.UpstreamOverflow != 0) {
		r.Attempts = 1
	}
}

// logRefused begins the record of a request head the loops refuse
// (refuse), when its connection's Router logs: a record without request
// headers, as Envoy logs the stream its codec refused (its method, path
// and headers "-", its protocol HTTP/1.1), flagged DPE when the codec
// refused it.
func (l *loop) logRefused(d *down, r proxyroute.Refusal) {
	var f accesslog.Flags
	if r.CodecError() {
		f = accesslog.DownstreamProtocolError
	}
	l.logHeadless(d, f, r.Details())
}

// logHeadless begins the record of a request the codec ended before its
// head reached the connection manager (a refused HTTP/1.1 head, an
// HTTP/2 stream reset for its header list): no request headers, the
// flags and details given.
func (l *loop) logHeadless(d *down, f accesslog.Flags, details string) {
	to, ok := d.gen.router.(AccessLogger)
	if !ok {
		return
	}
	if d.h2 != nil && d.lg == nil {
		d.lg = l.h2LogState(d)
	}
	g := l.logConn(d)
	g.rec.HTTP2 = d.h2 != nil
	g.to, g.active, g.start, g.respAt = to, true, d.reqStart, -1
	g.head, g.fields, g.rid, g.resp = g.head[:0], g.fields[:0], g.rid[:0], g.resp[:0]
	rec := &g.rec
	rec.Method, rec.Target, rec.Scheme = nil, nil, ""
	rec.Start = l.epoch.Add(time.Duration(d.reqStart))
	rec.Flags, rec.Details, rec.UpstreamFailure, rec.BytesReceived, rec.BytesSent, rec.Code = f, details, "", 0, 0, 0
	rec.Cluster, rec.Route, rec.Host, rec.Attempts = "", "", netip.AddrPort{}, 0
	rec.Path, rec.OriginalPath, rec.Authority, rec.HeaderOps = "", "", "", nil // no route: no rewrites
}

// logConn returns d's log state, made with the connection's addresses
// and ID when it has none yet.
func (l *loop) logConn(d *down) *logState {
	g := d.lg
	if g == nil {
		g = &logState{}
		// Package syscall's: x/sys/unix's ask the socket's protocol
		// besides (a system call more each).
		if sa, err := syscall.Getpeername(d.fd); err == nil {
			g.rec.Remote = AddrPortOf(sa)
		}
		if sa, err := syscall.Getsockname(d.fd); err == nil {
			g.rec.Local = AddrPortOf(sa)
		}
		g.rec.RemoteText, g.rec.LocalText = g.rec.Remote.String(), g.rec.Local.String()
		d.lg = g
	}
	if g.rec.ConnectionID == 0 {
		g.rec.ConnectionID = l.srv.cfg.ConnIDs.Add(1)
	}
	return g
}

// logAddrs keeps the addresses Config.Classify read of a new connection,
// when its Router logs: its records carry them (the destination before
// NAT, under original_dst, as the goroutine path logs it) and the socket
// is not asked again.
func (l *loop) logAddrs(d *down, acc *Accept) {
	if !acc.Local.IsValid() {
		return
	}
	if _, ok := d.gen.router.(AccessLogger); !ok {
		return
	}
	d.lg = &logState{}
	r := &d.lg.rec
	r.Local, r.Remote = acc.Local, acc.Remote
	r.LocalText, r.RemoteText = r.Local.String(), r.Remote.String()
}

// AddrPortOf is a TCP socket address as the goroutine path reads a
// connection's (IPv4-mapped addresses unmapped, so that a dual-stack
// socket's IPv4 peer reads a.b.c.d on both paths); the zero AddrPort for
// other kinds.
func AddrPortOf(sa syscall.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func (d *down) logged() bool { return d.lg != nil && d.lg.active }

// logFlags adds response flags to the request's record, and the local
// reply's details unless empty.
func (d *down) logFlags(f accesslog.Flags, details string) {
	if d.logged() {
		d.lg.rec.Flags |= f
		if details != "" {
			d.lg.rec.Details = details
		}
	}
}

// logConnectFailure records a connection that failed before it was up
// (its connect or TLS handshake), not retried: flagged UF, its details
// and its transport failure reason (started as for
// proxyroute.ResetDetails), as the goroutine path's localError has them.
func (d *down) logConnectFailure(f proxyroute.ConnectFailure, started bool) {
	if d.logged() {
		d.lg.rec.UpstreamFailure = f.Transport
	}
	d.logFlags(accesslog.UpstreamConnectionFailure, f.Details(started))
}

// received counts request body bytes read from the client: of take
// bytes of the body, a chunked body's data without its framing (the
// chunk scanner's count was data before them), as the goroutine path
// counts it, in the access log and toward the bound on what is kept for
// a retry (retryState.bodyRead), which Envoy's Filter::decodeData and
// the goroutine path apply to the body alone.
func (d *down) received(take int, data int64) {
	n := int64(take)
	if d.chunked {
		n = d.chunks.data - data
	}
	if d.lg != nil {
		d.lg.rec.BytesReceived += n
	}
	d.rs.bodyRead(n)
}

// logSent counts response body bytes sent.
func (d *down) logSent(n int64) {
	if d.lg != nil {
		d.lg.rec.BytesSent += n
	}
}

// logAttempt records a retry's host.
func (d *down) logAttempt(host netip.AddrPort) {
	if d.logged() {
		d.lg.rec.Host = host
		d.lg.rec.Attempts++
	}
}

// logResponse records the final response head sent down.
func (l *loop) logResponse(d *down, head []byte) {
	if d.logged() {
		d.lg.resp = append(d.lg.resp[:0], head...)
		d.lg.respAt = l.now
	}
}

// logDone gives the request's record to the logger, once.
func (l *loop) logDone(d *down, code int) {
	if !d.logged() {
		return
	}
	g := d.lg
	g.active = false
	r := &g.rec
	r.Code = code
	r.Duration = time.Duration(l.now - g.start)
	r.ResponseDuration = -1
	if g.respAt >= 0 {
		r.ResponseDuration = time.Duration(g.respAt - g.start)
	}
	r.Head, r.Headers, r.RequestID, r.ResponseHead = g.head, g.fields, nil, nil
	if len(g.rid) > 0 {
		r.RequestID = g.rid
	}
	if len(g.resp) > 0 {
		r.ResponseHead = g.resp
	}
	g.to.Log(r)
}

// logEnded logs a request its connection ended: the client left (DC),
// or the upstream cut the response (flags set by the caller).
func (l *loop) logEnded(d *down) {
	if !d.logged() {
		return
	}
	code := 0
	if u := d.u; u != nil {
		code = u.status
	} else if d.hb != nil {
		code = d.hb.status
	}
	if d.lg.rec.Flags == 0 {
		d.lg.rec.Flags = accesslog.DownstreamConnectionTermination
	}
	l.logDone(d, code)
}
