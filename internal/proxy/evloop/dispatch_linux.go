package evloop

// A request's way upstream: dispatch routes a parsed HTTP/1.1 head (or
// the head an h2 stream's HEADERS became) to the goroutine path (a
// hand-off), to a local reply, or upstream: the head the upstream gets
// (the client's without its hop-by-hop headers, weft's added) and as
// much of the body as came, on a pooled or new connection; to an HTTP/2
// cluster through h2ustream_linux.go (h1h2_linux.go for an HTTP/1.1
// request). The request body's framing: bodyPart, lengthDropped.

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// dispatch routes one parsed request head and sends it upstream.
func (l *loop) dispatch(d *down, head []byte) {
	st := d.gen.st
	r := &l.req
	if err := parseRequest(head, r, d.gen.http10, d.gen.limits.Lines(), d.h2 != nil); err != nil {
		if bytes.HasPrefix(head, []byte(h2cPreface)) && l.startH2(d, head) {
			l.process(d)
			return
		}
		// Upgrades, and targets that are not origin-form (which the
		// goroutine path routes as net/http reads them), are the
		// goroutine path's; an HTTP/2 stream's cannot be handed over.
		if d.h2 == nil && (errors.Is(err, errUpgrade) || errors.Is(err, errTarget) || bytes.HasPrefix(head, []byte(h2cPreface))) &&
			l.handOffWhenWritten(d) {
			return
		}
		l.badRequest(d, err)
		return
	}
	if r.minor == 0 && d.h2 == nil && l.handOffWhenWritten(d) {
		// HTTP/1.0, accepted: the goroutine path answers it in kind
		// (an HTTP/1.0 status line, keep-alive, no chunking), as Envoy
		// does. Without a HandOff the loops serve it as HTTP/1.1.
		return
	}
	// Envoy's connection manager requires a Host (decodeHeaders): 400
	// without a body (missing_host_header), and an HTTP/1.1 connection
	// closes after it. An accepted HTTP/1.0 request without one is the
	// goroutine path's (above), which answers it so too. An empty Host is
	// answered alike: Go's request reader, which the goroutine path reads
	// heads with, cannot tell it from none (Envoy routes it).
	missingHost := (!r.hasHost || r.host.off == r.host.end) && r.minor == 1
	var t Target
	scheme := requestScheme(d, r, head)
	if rtr := d.gen.router; rtr != nil && !missingHost {
		l.hv = headView{head, r, scheme}
		if d.h2 != nil {
			t = rtr.(H2Router).RouteH2(&l.hv)
		} else {
			t = rtr.Route(&l.hv)
			// HTTP/2 upstreams are behind the switch (the proxy's Router
			// hands such a request off itself, before it picks a host).
			t.HandOff = t.HandOff || t.HTTP2 && !l.srv.cfg.H2
		}
		if t.HandOff && t.Held != 0 {
			t.Upstream.Release(t.Held) // the goroutine path takes its own
			t.Held = 0
		}
		if t.HandOff && d.h2 == nil && l.handOffWhenWritten(d) {
			return
		}
		if t.HandOff && d.h2 != nil && l.h2Refuse(d) {
			return
		}
	}
	st.rqTotal.Inc()
	if d.h2 != nil {
		st.rqHTTP2.Inc()
	} else {
		st.rqHTTP1.Inc()
		if d.requests == 0 {
			st.cxHTTP1.Inc() // once per connection; a hand-off says so (handOff)
		}
	}
	d.off += len(head)
	// A request read after its chain was retired is the connection's
	// last even when this loop has not yet acted on the retirement (its
	// wake-up may come later in the same batch of events).
	last := r.closeAfter || d.drainNext
	if !last && d.h2 == nil && d.gen.retired.Load() {
		last = true
		d.gen.st.cxDrainClose.Inc() // drainConns passes it by: it closes after this one
	}
	d.head, d.grpc, d.closeAfter, d.reqStart = r.head, r.grpc, last, l.now
	// The route timeout runs from the request's end (reqComplete), the
	// stream idle timeout of a body still coming from its last read
	// (routeDeadline). Until the way upstream says whether a body
	// follows the head, an HTTP/2 stream's END_STREAM tells.
	d.rtFrom, d.bodyIn, d.last = l.now, d.h2 != nil && !d.h2.reqEnded, l.now
	d.timeout = int64(l.srv.cfg.RequestTimeout)
	switch {
	case t.NoTimeout:
		d.timeout = 0
	case t.Timeout > 0:
		d.timeout = int64(t.Timeout)
	}
	d.idle = int64(d.gen.streamIdle)
	if t.HasStreamIdle {
		d.idle = int64(t.StreamIdle)
	}
	// A deadline is a loop time plus a timeout: one of centuries (a
	// route's, time.Duration saturating past 292 years) would wrap it.
	d.timeout, d.idle = min(d.timeout, farTimeout), min(d.idle, farTimeout)
	// As the goroutine path's timers: once the request is whole, a route
	// timeout no longer than the idle timeout ends the stream first, and
	// the idle timeout is not kept (no activity noted: responseActive).
	d.idleOn = d.idle > 0 && (d.timeout == 0 || d.idle < d.timeout)
	d.requests++
	l.startRetries(d, &t, d.gen.router != nil)
	l.logStart(d, head, r, scheme, &t)
	if r.expectContinue && r.minor == 1 && d.h2 == nil {
		// As Envoy's connection manager does unless proxy_100_continue
		// (decodeHeaders), and the goroutine path: 100 Continue as soon
		// as the head is read, before routing or any upstream. The
		// client then sends its body whatever the final answer, which a
		// local reply treats as any other's (replyUnread).
		if d.out == nil {
			d.out, d.outOff = l.getBuf(), 0
		}
		d.out = append(d.out, "HTTP/1.1 100 Continue\r\n\r\n"...)
		l.flushDown(d)
		if d.closed {
			return
		}
	}
	if missingHost {
		d.logFlags(0, proxyroute.DetailsMissingHost)
		l.localReply(d, 400, "", true)
		return
	}
	target := r.target.of(head)
	path := target
	for i, c := range target {
		if c == '?' {
			path = target[:i]
			break
		}
	}
	var pool *clusterPool
	if d.gen.router != nil {
		if t.HandOff {
			l.localReply(d, 501, "", true) // no HandOff to take it
			return
		}
		if t.Status != 0 {
			switch {
			case t.Status == 404:
				st.noRoute.Inc()
				d.logFlags(accesslog.NoRouteFound, "route_not_found")
			case t.Flags != 0 || t.Details != "":
				if t.Flags&accesslog.NoClusterFound != 0 {
					st.noCluster.Inc()
				}
				if t.Flags&accesslog.NoHealthyUpstream != 0 && t.Cluster != "" {
					l.charge(t.Cluster, l.srv.clusterCounters(t.Cluster), t.Status, false) // as retryNow charges it
				}
				if t.Flags&accesslog.UpstreamOverflow != 0 && t.Cluster != "" {
					l.charge(t.Cluster, l.srv.clusterCounters(t.Cluster), t.Status, true) // the circuit breakers' overflow, dropped
				}
				d.logFlags(t.Flags, t.Details)
			}
			l.replyUnread(d, r, t.Status, t.Body, true)
			return
		}
		pool = l.hostPool(t.Cluster, t.Host)
		l.poolTLS(pool, t.TLS)
		pool.connect, pool.tag = t.ConnectTimeout, t.Tag
	} else {
		rt := l.srv.table.match(r.host.of(head), path)
		if rt == nil {
			st.noRoute.Inc()
			l.replyUnread(d, r, 404, "", true)
			return
		}
		pool = &l.pools[rt.cluster]
	}
	pool.st.rqTotal.Inc()
	if t.HTTP2 && d.h2 != nil {
		if t.Path != "" {
			d.h2.path = t.Path + string(target[len(path):])
		}
		d.h2.authority, d.h2.origPath, d.h2.headers = t.Authority, t.OriginalPath, t.Headers
		l.h2uDispatch(d, pool, &t, r)
		return
	}
	if t.HTTP2 {
		l.h1uDispatch(d, pool, &t, r, head)
		return
	}
	u, err := l.getUp(pool)
	var o []byte
	switch {
	case err == nil:
		l.observeStart(u, t.Cluster, t.Tag)
		o = u.out
	case !l.connectRetriable(d):
		l.observeFailedNow(t.Cluster, t.Tag)
		l.dispatchFailed(d, r, pool, err)
		return
	default:
		o = l.getBuf() // the request, made for the retry (h1Retry)
	}
	// The upstream request: the client's head without its hop-by-hop
	// headers, plus x-forwarded-proto and x-request-id as weft adds them.
	o = append(o, r.method.of(head)...)
	o = append(o, ' ')
	if t.Path != "" {
		o = append(o, t.Path...)
		o = append(o, target[len(path):]...) // the query
	} else {
		o = append(o, target...)
	}
	o = append(o, " HTTP/1.1\r\n"...)
	run := -1 // start of a run of header lines copied at once
	rewrites := t.Authority != "" || t.OriginalPath != ""
	mut := l.mut.reset(t.Headers)
	for i := range r.lines {
		h := &r.lines[i]
		if h.hop || rewrites && t.replaces(h.name.of(head)) || t.Headers != nil && mut.take(h.name.of(head), h.value.of(head)) {
			if run >= 0 {
				o = append(o, head[run:h.line.off]...)
				run = -1
			}
			continue
		}
		if run < 0 {
			run = int(h.line.off)
		}
	}
	if run >= 0 {
		o = append(o, head[run:r.lines[len(r.lines)-1].line.end]...)
	}
	if r.teTrailers {
		o = append(o, "te: trailers\r\n"...)
	}
	mut.result(func(name, _ string, f *mutField) {
		o = append(o, name...)
		o = append(o, ": "...)
		o = f.appendValue(o)
		o = append(o, "\r\n"...)
	})
	if t.Authority != "" {
		o = append(o, "host: "...)
		o = append(o, t.Authority...)
		o = append(o, "\r\n"...)
	}
	if t.OriginalPath != "" {
		o = append(o, "x-envoy-original-path: "...)
		o = append(o, t.OriginalPath...)
		o = append(o, "\r\n"...)
	}
	if !r.hasXFP && d.overTLS() {
		o = append(o, "x-forwarded-proto: https\r\n"...)
	} else if !r.hasXFP {
		o = append(o, "x-forwarded-proto: http\r\n"...)
	}
	if !r.hasRequestID {
		o = append(o, "x-request-id: "...)
		o = appendUUID(o, l.rng)
		if d.logged() {
			d.lg.rid = append(d.lg.rid[:0], o[len(o)-36:]...)
		}
		o = append(o, "\r\n"...)
	}
	if r.hasLength {
		// Connection's tokens may have named Content-Length: it is
		// written again so that the body's framing always reaches the
		// upstream.
		if l.lengthDropped(head, r) {
			o = append(o, "content-length: "...)
			o = strconv.AppendInt(o, r.contentLength, 10)
			o = append(o, "\r\n"...)
		}
	}
	o = append(o, "\r\n"...)
	d.bodyLeft, d.chunked, d.chunks = 0, r.chunked, chunkScanner{}
	if r.hasLength {
		d.bodyLeft = r.contentLength
	}
	more := d.chunked || d.bodyLeft > 0 // a body follows the head
	if err != nil {
		l.h1Retry(d, r, pool, &t, o, more, err)
		return
	}
	// As much of the body as fits goes with the head, in one write.
	if more {
		avail := d.in[d.off:]
		data := d.chunks.data
		take, done, err := d.bodyPart(avail[:min(len(avail), max(0, cap(o)-len(o)))])
		if err != nil {
			l.closeUp(u)
			l.badBody(d)
			return
		}
		o = append(o, avail[:take]...)
		d.off += take
		d.received(take, data)
		more = !done
	}
	u.out, u.outOff = o, 0
	// Kept for a retry: the whole request, or, while a retry may come, one
	// whose body is still arriving, with the rest as it goes (sendUp).
	u.replayable, u.streamed = !more || d.mayRetry(), more
	u.d, d.u = d, u
	u.started = l.now
	d.state = dsWait
	d.bodyIn = more
	if more {
		d.state = dsBody
	}
	if !u.connecting {
		l.flushUp(u)
	}
}

// replaces reports whether the request's header line named name is
// left out because t sends its own: Host under a host rewrite,
// x-envoy-original-path under a path rewrite.
func (t *Target) replaces(name []byte) bool {
	return t.Authority != "" && equalFold(name, "host") || t.OriginalPath != "" && equalFold(name, "x-envoy-original-path")
}

// bodyPart returns how many of b's bytes belong to the request body in
// flight, and whether the body ends with them.
func (d *down) bodyPart(b []byte) (int, bool, error) {
	if d.chunked {
		return d.chunks.scan(b)
	}
	take := int(min(int64(len(b)), d.bodyLeft))
	d.bodyLeft -= int64(take)
	return take, d.bodyLeft == 0, nil
}

// lengthDropped reports whether the Content-Length line was left out as
// hop-by-hop.
func (l *loop) lengthDropped(head []byte, r *request) bool {
	for i := range r.lines {
		if equalFold(r.lines[i].name.of(head), "content-length") {
			return r.lines[i].hop
		}
	}
	return false
}

// requestScheme is the :scheme of a request the loops read, as its
// connection manager gives it before it routes (proxyroute.Head.Scheme):
// an HTTP/2 client's own, as it sent it; an HTTP/1.1 request's
// x-forwarded-proto's or its connection's (h1Scheme).
func requestScheme(d *down, r *request, head []byte) string {
	if d.h2 != nil {
		return d.h2.head.PseudoValue("scheme")
	}
	return h1Scheme(d, r, head)
}
