package evloop

// h2c on the loops, step 1: the streams. Each stream is a request the
// loop serves as it serves an HTTP/1.1 one: its HEADERS become an
// HTTP/1.1 head (its DATA the body, chunked when no content-length came)
// that dispatch routes and forwards over the cluster's HTTP/1.1
// connections (to an HTTP/2 cluster, as a stream of the loop's HTTP/2
// connections, from the decoded fields: h2ustream_linux.go); the
// response comes back as HEADERS and DATA frames under
// both flow-control windows (h2response_linux.go). A stream's requests
// go through a down of its own (down.h2) that shares the connection's
// descriptor for the access log's addresses but is not in the loop's
// descriptor table: writes to it become frames on the connection
// (h2Body, h2Complete, h2Reply in h2reply_linux.go), and its close
// resets the stream (h2Reset). Here: a stream's request (HEADERS, DATA,
// trailers, the window given back) and its end.

import (
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/bodychain"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2stream is one stream of an h2conn.
type h2stream struct {
	c         *h2conn
	id        uint32
	sd        *down // the stream's request
	start     int64 // loop time of its HEADERS
	last      int64 // loop time it last sent (its idle timeout runs from it while blocked)
	window    int64 // what the client lets us send on it
	recvAvail int64 // what the client may still send on it
	unpaid    int64 // request bytes received, not credited back yet
	owed      int64 // to an HTTP/2 upstream: bytes that left for it, credited at h2StreamRefresh (h2uCredit)
	// pending is the response body waiting for the windows, a buffer
	// from the loop's free list sent up to pendOff: sent whole, it goes
	// back (putBuf) with its capacity, which slicing off what each push
	// sent would have cut, and a buffer of neither pooled size is dropped.
	// nil when nothing waits.
	pending    []byte
	pendOff    int
	endPending bool  // END_STREAM follows pending
	endAt      int64 // loop time endPending was set: the flush timeout runs from it (stallDeadline)
	blocked    bool  // in c.blocked
	reqEnded   bool  // the client's END_STREAM came
	reqChunked bool  // the request body goes upstream chunked
	declared   int64
	received   int64
	chunked    bool         // the response body comes chunked: dc strips the framing
	dc         chunkScanner // over the response's chunked body
	reset      bool
	peerReset  bool
	gone       bool // out of c.streams
	// uncounted: answered as x/net's server answers a header list cut
	// at SETTINGS_MAX_HEADER_LIST_SIZE, before any handler, so that the
	// goroutine path counts it nowhere: not in downstream_rq_total, its
	// status class or downstream_rq_time.
	uncounted bool
	expect100 bool // its expect fields ask for 100-continue: answered by the proxy, not forwarded (H2List.Continue)
	// To an HTTP/2 cluster (h2ustream_linux.go): the request's decoded
	// fields until its upstream stream opens, that stream, and the
	// response's trailers, sent after the body.
	hf       *http2.MetaHeadersFrame
	us       *h2ustream
	trailers []hpack.HeaderField
	toH2     bool                // dispatched to an HTTP/2 cluster
	grpc     bool                // a gRPC request: local replies are gRPC statuses
	ended    bool                // END_STREAM went with the response's HEADERS
	extra    []hpack.HeaderField // weft's fields added to the request's (in extraBuf)
	// path, when set, is the :path an HTTP/2 upstream gets instead of
	// the request's (Target.Path, with the request's query); authority
	// its :authority (Target.Authority, the request's host field left
	// out), origPath its x-envoy-original-path (Target.OriginalPath, the
	// request's left out).
	path, authority, origPath string
	// headers are the request header mutations an HTTP/2 upstream's
	// fields get (Target.Headers), applied on each attempt (h2uOpen).
	headers *proxyroute.RequestMutations
	// A request kept for a retry: its body (up to
	// proxyroute.MaxRetryBuffer, as every path keeps it; replayCut once
	// it outgrew that, or once the response began (h2uHeaders); in a
	// back-off bytes past it are still kept for one last attempt) and
	// trailers. The body in a chain of the loop's buffers, not one
	// buffer grown as it comes.
	replay      bodychain.Chain
	replayRoom  [1][]byte // replay's list of chunks while it holds one (Within)
	replayCut   bool
	reqTrailers []hpack.HeaderField
	// The stream's request (sd points here), and extra's room: one
	// allocation with the stream, recycled with it (h2pool_linux.go).
	req      down
	extraBuf [2]hpack.HeaderField
	// head is the request's HEADERS (hf points here): the frame the
	// connection's decoder returned, and its fields, are its own until the
	// next (h2Heads). Its fields are copied into room, which the stream
	// keeps when it is recycled (h2stream.zero): no allocation per request
	// for them once a loop's streams have served a few.
	head http2.MetaHeadersFrame
	room []hpack.HeaderField
}

// keepHead makes f, a new request's HEADERS that the connection's decoder
// lent, the stream's own: the frame copied, its fields into room.
func (st *h2stream) keepHead(f *http2.MetaHeadersFrame) {
	st.room = append(st.room[:0], f.Fields...)
	st.head = *f
	st.head.Fields = st.room
}

// h2Headers opens a stream (or ends a request with its trailers).
func (l *loop) h2Headers(c *h2conn, f *http2.MetaHeadersFrame) {
	id := f.StreamID
	if st := c.streams[id]; st != nil {
		// Trailers: their fields do not reach an HTTP/1.1 upstream
		// (the goroutine path's h2-to-h1 forwarding drops them too).
		if st.reqEnded || !f.StreamEnded() {
			l.h2StreamError(c, id, http2.ErrCodeProtocol)
			return
		}
		if st.us != nil || st.waiting() {
			l.h2uTrailers(st, f)
			return
		}
		l.h2ReqEnd(st)
		return
	}
	if id&1 == 1 && c.wasCut(id) {
		return // trailers of a stream closed early: decoded (HPACK), ignored
	}
	if id&1 == 0 || id <= c.lastID {
		code := http2.ErrCodeProtocol
		if id&1 == 1 {
			code = http2.ErrCodeStreamClosed
		}
		l.h2Fail(c, code)
		return
	}
	c.lastID = id
	if c.goAway {
		return // after our GOAWAY: not processed (RFC 9113 6.8)
	}
	if uint32(len(c.streams)) >= c.maxStreams {
		code := http2.ErrCodeRefusedStream
		if c.settled {
			code = http2.ErrCodeProtocol // over the limit the client acknowledged (as net/http's server)
		}
		_ = c.fr.WriteRSTStream(id, code)
		return
	}
	method, path, scheme, authority := f.PseudoValue("method"), f.PseudoValue("path"), f.PseudoValue("scheme"), f.PseudoValue("authority")
	if method == "" || method != "CONNECT" && (path == "" || scheme == "") {
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		return
	}
	d := c.d
	d.last = l.now
	st := l.streams.get()
	st.keepHead(f)
	st.c, st.id, st.start, st.last, st.window, st.recvAvail, st.declared, st.hf = c, id, l.now, l.now, int64(c.initWindow), int64(c.win.Stream), -1, &st.head
	sd := &st.req
	sd.fd, sd.h2, sd.gen, sd.last, sd.idx = d.fd, st, d.gen, l.now, -1
	sd.idle, sd.idleOn = int64(d.gen.streamIdle), false // the route's, once routed (dispatch)
	st.sd = sd
	c.streams[id] = st
	if len(c.streams) > h2KeepStreams {
		c.heavy = true // the map grew (lightenH2)
	}
	b := l.getBuf()
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\n"...)
	if authority != "" {
		b = append(b, "host: "...)
		b = append(b, authority...)
		b = append(b, "\r\n"...)
	}
	cookies := 0
	typed := false // a content-type seen: the first decides, as Header.Get reads it on the goroutine path
	// The header list as proxyroute.Limits.H2Overflow counts it.
	list := proxyroute.NewH2List()
	for _, hf := range f.PseudoFields() {
		list.Pseudo(hf.Name, hf.Value, d.tls != nil)
	}
	for _, hf := range f.RegularFields() {
		list.Field(hf.Name, hf.Value)
	}
	st.expect100 = list.Continue()
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			l.h2StreamError(c, id, http2.ErrCodeProtocol) // connection-specific (RFC 9113 8.2.2)
			l.putBuf(b)
			return
		case "te":
			if hf.Value != "trailers" {
				l.h2StreamError(c, id, http2.ErrCodeProtocol)
				l.putBuf(b)
				return
			}
			// Forwarded, as Envoy forwards "te: trailers" whatever the
			// protocols (parseRequest's TE rule, proxyroute.TETrailers).
		case "host":
			if authority != "" {
				continue
			}
		case "expect":
			// With 100-continue, not forwarded: the proxy answers it
			// itself once the request goes upstream (h2Continue), as
			// Envoy does without proxy_100_continue; the body comes as
			// DATA anyway. Other expectations are forwarded, as on the
			// goroutine path (H2List.Continue).
			if st.expect100 {
				continue
			}
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || st.declared >= 0 && n != st.declared {
				l.h2StreamError(c, id, http2.ErrCodeProtocol)
				l.putBuf(b)
				return
			}
			st.declared = n
		case "content-type":
			if !typed {
				typed, st.grpc = true, proxyroute.IsGRPC(hf.Value)
			}
		case "cookie":
			// HTTP/2 splits cookies into fields; HTTP/1.1 wants them in one
			// line (RFC 9113 8.2.3).
			if cookies > 0 {
				continue
			}
			cookies++
			b = append(b, "cookie: "...)
			first := true
			for _, o := range f.RegularFields() {
				if o.Name == "cookie" {
					if !first {
						b = append(b, "; "...)
					}
					b = append(b, o.Value...)
					first = false
				}
			}
			b = append(b, "\r\n"...)
			continue
		}
		b = append(b, hf.Name...)
		b = append(b, ": "...)
		b = append(b, hf.Value...)
		b = append(b, "\r\n"...)
	}
	if f.Truncated {
		// Over SETTINGS_MAX_HEADER_LIST_SIZE: 431, as net/http's server
		// answers before anything else of the list (the fields past the
		// cut were not decoded), and uncounted as it is there.
		sd.in, sd.off = append(b, "\r\n"...), 0
		st.reqEnded, st.uncounted = f.StreamEnded(), true
		sd.reqStart = l.now
		l.localReply(sd, 431, "", false)
		return
	}
	if d.gen.limits.H2Overflow(list.Count()) {
		l.putBuf(b)
		l.h2Overflow(st)
		return
	}
	if f.StreamEnded() && st.declared > 0 {
		l.h2StreamError(c, id, http2.ErrCodeProtocol)
		l.putBuf(b)
		return
	}
	if !f.StreamEnded() && st.declared < 0 {
		b = append(b, "transfer-encoding: chunked\r\n"...)
		st.reqChunked = true
	}
	b = append(b, "\r\n"...)
	sd.in, sd.off = b, 0
	if f.StreamEnded() {
		st.reqEnded = true
	}
	l.dispatch(sd, b)
	if !st.toH2 {
		st.hf = nil
	}
	if st.expect100 {
		l.h2Continue(st)
	}
	if !sd.closed {
		l.arm(sd)
	}
}

// h2DataIn takes a DATA frame's bytes for its stream's request body.
func (l *loop) h2DataIn(c *h2conn, f *http2.DataFrame) {
	n := int64(f.Length)
	c.recvAvail -= n
	if c.recvAvail < 0 {
		l.h2Fail(c, http2.ErrCodeFlowControl)
		return
	}
	c.recvUnack += n
	l.h2Dirty(c)
	id := f.StreamID
	st := c.streams[id]
	if st == nil {
		if id > c.lastID {
			l.h2Fail(c, http2.ErrCodeProtocol) // an idle stream
			return
		}
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		return
	}
	if st.reqEnded {
		l.h2StreamError(c, id, http2.ErrCodeStreamClosed)
		return
	}
	st.recvAvail -= n
	if st.recvAvail < 0 {
		l.h2StreamError(c, id, http2.ErrCodeFlowControl)
		return
	}
	st.unpaid += n
	c.d.last = l.now
	st.sd.last = l.now // the stream's idle timeout while its body comes (timer_linux.go)
	data := f.Data()
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		l.h2StreamError(c, id, http2.ErrCodeProtocol)
		return
	}
	if st.us != nil || st.waiting() {
		if pad := n - int64(len(data)); pad > 0 && !f.StreamEnded() {
			// Padding never goes upstream: credited as if it went (as
			// nghttp2 consumes it at once), or the client's stream window
			// would shrink by it for good.
			l.h2uCredit(st, pad)
		}
		l.h2uBody(st, data, f.StreamEnded())
		return
	}
	sd := st.sd
	if !sd.closed && sd.state == dsBody && len(data) > 0 {
		if sd.in == nil {
			sd.in, sd.off = l.getBuf(), 0
		}
		// A full-size frame's data overflows a buffer of bufSize that
		// holds bytes not yet sent: appendBuf swaps it for a pooled one.
		if st.reqChunked {
			sd.in = strconv.AppendInt(sd.in, int64(len(data)), 16)
			sd.in = append(sd.in, "\r\n"...)
			sd.in = l.appendBuf(sd.in, data)
			sd.in = append(sd.in, "\r\n"...)
		} else {
			sd.in = l.appendBuf(sd.in, data)
		}
	}
	if f.StreamEnded() {
		l.h2ReqEnd(st)
		if st.gone {
			return
		}
	}
	if !sd.closed && sd.state == dsBody && !sd.pausedIn {
		l.process(sd)
	}
	l.h2Credit(st)
}

// h2ReqEnd: the client's side of the stream ended.
func (l *loop) h2ReqEnd(st *h2stream) {
	st.reqEnded = true
	if st.declared >= 0 && st.received != st.declared {
		l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
		return
	}
	sd := st.sd
	l.reqComplete(sd)
	if st.reqChunked && !sd.closed && sd.state == dsBody {
		if sd.in == nil {
			sd.in, sd.off = l.getBuf(), 0
		}
		sd.in = append(sd.in, "0\r\n\r\n"...)
		if !sd.pausedIn {
			l.process(sd)
		}
	}
	if sd.closed && !st.endPending {
		l.h2EndStream(st) // its response was a reset
	}
}

// h2Credit gives the client its stream's window back once the request
// bytes it sent left for the upstream (or were dropped) and add up to
// h2StreamRefresh.
func (l *loop) h2Credit(st *h2stream) {
	sd := st.sd
	if !st.gone && st.c.recvUnack >= h2ConnRefresh(st.c.win) {
		l.h2Dirty(st.c) // the connection's window may be credited now (flushH2)
	}
	if st.unpaid < h2StreamRefresh(st.c.win) || st.reqEnded || st.gone || (!sd.closed && sd.state == dsBody && sd.in != nil && sd.off < len(sd.in)) {
		return
	}
	_ = st.c.fr.WriteWindowUpdate(st.id, uint32(st.unpaid))
	st.recvAvail += st.unpaid
	st.unpaid = 0
}

// h2Done drops the stream's request from the loop: timers, retries,
// buffers, its upstream exchange if one is left.
func (l *loop) h2Done(d *down) {
	if d.closed {
		return
	}
	l.h2uForget(d.h2)
	d.closed = true
	l.logEnded(d)
	l.stopTimer(d)
	l.endRetries(d)
	if d.in != nil {
		l.putBuf(d.in)
		d.in = nil
	}
	if u := d.u; u != nil {
		d.u, u.d = nil, nil
		l.closeUp(u)
	}
}

// h2Overflow resets a stream whose header list passes the connection
// manager's limits, as Envoy's HTTP/2 codec resets it
// (proxyroute.Limits.H2Overflow) and the goroutine path does: a request
// (downstream_rq_total, _http2_total), reset (downstream_rq_rx_reset,
// http2.header_overflow), logged without its headers, flagged DPE.
func (l *loop) h2Overflow(st *h2stream) {
	sd := st.sd
	s := sd.gen.st
	s.rqTotal.Inc()
	s.rqHTTP2.Inc()
	s.rqRxReset.Inc()
	s.h2HeaderOverflow.Inc()
	sd.reqStart = l.now
	l.logHeadless(sd, accesslog.DownstreamProtocolError, proxyroute.H2TooManyHeaders)
	l.h2Reset(sd)
}

// h2Reset resets a stream whose exchange failed mid-response (closeDown's
// work for a stream).
func (l *loop) h2Reset(d *down) {
	st := d.h2
	if !st.gone {
		_ = st.c.fr.WriteRSTStream(st.id, http2.ErrCodeInternal)
		st.reset = true
	}
	l.h2EndStream(st)
}

// h2EndStream forgets a stream: reset, or its response sent.
func (l *loop) h2EndStream(st *h2stream) {
	l.h2Done(st.sd)
	if st.gone {
		return
	}
	st.gone = true
	if st.sd == &st.req { // not an HTTP/1.1 request's (h1h2_linux.go), which its h1h2 holds
		l.streams.ended(st) // recycled at the iteration's end (h2pool_linux.go)
	}
	c := st.c
	delete(c.streams, st.id)
	if !st.reqEnded {
		c.cutOff(st.id)
	}
	if st.pending != nil {
		l.putBuf(st.pending)
		st.pending, st.pendOff = nil, 0
	}
	l.h2Dirty(c)
	l.h2Ended(c, st)
	c.d.last = l.now
	if len(c.streams) == 0 {
		l.arm(c.d) // its idle timeout runs again
	}
	l.h2MaybeClose(c)
}
