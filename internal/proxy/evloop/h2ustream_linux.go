package evloop

// HTTP/2 upstreams on the loops: the streams. A client's stream (an
// h2stream) routed to an HTTP/2 cluster opens a stream on an upstream
// connection (h2up_linux.go): HEADERS encoded from the client's decoded
// fields (not through an HTTP/1.1 head), the request body as DATA under
// the upstream's windows, its trailers, here; the response's HEADERS,
// DATA and trailers go back to the client the same way, the upstream's
// window credited as the client's side takes the bytes
// (h2uresponse_linux.go). A reset on either side resets the other
// (h2uend_linux.go).

import (
	"encoding/binary"
	"slices"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2ustream is one upstream stream, serving one client stream.
type h2ustream struct {
	c      *h2up
	id     uint32
	st     *h2stream // the client's stream
	x      up        // the attempt's bookkeeping (pool, start, observer, status); not a connection
	window int64     // what the upstream lets us send on it
	// pending is the request body waiting for a window, after st.replay's
	// from replayAt: a buffer from the loop's free list sent up to
	// pendOff, so that it goes back (putBuf) with its capacity, which
	// slicing off what each push sent would have cut (a buffer of neither
	// pooled size is dropped). nil when nothing waits.
	pending []byte
	pendOff int
	// replayAt is the body's offset of the next byte to send of the
	// client stream's kept chain (st.replay): a body kept for a retry is
	// sent from the chain's chunks as they are (h2uSendData), on the first
	// attempt as on a retry, not copied into pending.
	replayAt   int64
	endPending bool // the request ends after pending (trailers, if any, with it)
	trailers   []hpack.HeaderField
	unacked    int64 // response bytes taken, not credited back (credited as the client's side sends them)
	owed       int64 // of unacked, those the client's side sent, to be credited at h2StreamRefresh (h2uConsumed)
	replayed   int64 // bytes of pending sent again for a retry: the client's window had them back already
	last       int64 // loop time of its last progress sending
	blocked    bool  // in c.blocked
	gotHead    bool
	done       bool  // out of c.streams
	left       int64 // what the response's content-length still announces, -1 without one (h2uData)
}

// h2uDispatch is dispatch's work for a client stream routed to an HTTP/2
// cluster: weft's fields added to the request's, then its first attempt.
func (l *loop) h2uDispatch(d *down, pool *clusterPool, t *Target, r *request) {
	st := d.h2
	st.toH2 = true
	l.h2uExtra(d, st, r)
	if d.in != nil {
		l.putBuf(d.in) // the head built for routing
		d.in, d.off = nil, 0
	}
	pool.h2Idle, pool.h2Win = t.IdleTimeout, t.H2Windows
	if l.h2uOpen(d, pool, t.Cluster, t.Tag) {
		l.retryNow(d)
	}
}

// h2uExtra adds weft's fields to a request for an HTTP/2 upstream:
// x-forwarded-proto unless the client sent one, x-request-id unless
// it sent one weft keeps (proxyroute.KeepsRequestID).
func (l *loop) h2uExtra(d *down, st *h2stream, r *request) {
	if st.extra == nil && (!r.hasXFP || !r.hasRequestID) {
		st.extra = st.extraBuf[:0]
	}
	if !r.hasXFP {
		proto := "http"
		if d.overTLS() {
			proto = "https"
		}
		st.extra = append(st.extra, hpack.HeaderField{Name: "x-forwarded-proto", Value: proto})
	}
	if !r.hasRequestID {
		rid := appendUUID(make([]byte, 0, 36), l.rng)
		if d.logged() {
			d.lg.rid = append(d.lg.rid[:0], rid...)
		}
		st.extra = append(st.extra, hpack.HeaderField{Name: "x-request-id", Value: string(rid)})
	}
}

// h2uOpen starts an attempt: an upstream stream on a connection of pool,
// its HEADERS encoded from the client's decoded fields (not through an
// HTTP/1.1 head), and on a retry the request's body and trailers kept
// for it. It returns true when the connection's connect failed at once
// and the request is retried with a back-off already over
// (connectFailedNow, retryWait): the caller starts the next attempt
// (retryNow).
func (l *loop) h2uOpen(d *down, pool *clusterPool, cluster string, tag any) bool {
	st := d.ustream()
	c, err := l.h2UpConn(pool)
	if c == nil {
		if err == nil {
			pool.st.rqPendingOverflow.Inc()
			d.logFlags(accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}")
			// Made at the head on a first attempt, as Envoy's pool
			// refuses the stream at once (route.LocalReplyCloses).
			atHead := d.retries == 0 && !st.reqEnded
			l.dropReply(d, pool, "upstream connect error or disconnect/reset before headers. reset reason: overflow", atHead)
			return false
		}
		// Retried as h2uRetry retries a stream whose connection failed
		// to connect (h2uConnFailed): the request kept as the client's
		// stream keeps it for retries, a body still arriving too.
		if l.connectFailedNow(d, pool, cluster, tag, st.kept()) {
			d.state = dsWait // whole: its response is awaited; else its body comes on (below)
			if !st.reqEnded {
				d.state = dsBody // its body comes on (h2uBody keeps it)
			}
			return l.retryWait(d)
		}
		f := proxyroute.ConnectFailed(err, false) // an immediate failure
		d.logConnectFailure(f, false)
		l.abortReply(d, pool, 503, f.Body(), false)
		return false
	}
	s := l.ustreams.get()
	s.c, s.id, s.st, s.window, s.last = c, c.nextID, st, int64(c.initWindow), l.now
	s.x.fd, s.x.pool, s.x.started = -1, pool, l.now
	s.replayAt = st.replay.Base()
	c.nextID += 2
	if c.nextID > 1<<31-1 {
		c.goAway = true // IDs spent: the next stream opens a new connection
	}
	c.streams[s.id] = s
	if len(c.streams) > h2KeepStreams {
		c.heavy = true // the map grew (lightenH2)
	}
	st.us = s
	l.srv.h2UpRqs.Add(1)
	l.observeStart(&s.x, cluster, tag)
	d.rs.tryStart = l.now
	d.state = dsWait
	if !st.reqEnded {
		d.state = dsBody
	}
	c.hbuf.Reset()
	authority := st.authority == "" // :authority written (or the request's kept)
	mut := l.mut.reset(st.headers)
	for _, hf := range st.hf.Fields {
		if hf.Name == "expect" && st.expect100 {
			continue // answered by the proxy (h2Continue), as Envoy does
		}
		if hf.Name == "x-request-id" && !proxyroute.KeepsRequestID(hf.Value) {
			continue // replaced by weft's (h2uExtra) or joined to a kept one
		}
		if hf.Name == ":path" && st.path != "" {
			hf.Value = st.path
		}
		if !authority && (hf.Name == ":authority" || !strings.HasPrefix(hf.Name, ":")) {
			// The rewrite, in the request's place or, without one,
			// after the pseudo fields.
			_ = c.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: st.authority})
			authority = true
		}
		if st.authority != "" && (hf.Name == ":authority" || hf.Name == "host") ||
			st.origPath != "" && hf.Name == "x-envoy-original-path" {
			continue // replaced
		}
		if st.headers != nil && mut.takeString(hf.Name, hf.Value) {
			continue // written below, as the mutations leave it
		}
		_ = c.enc.WriteField(hf)
	}
	if !authority {
		_ = c.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: st.authority})
	}
	mut.result(func(_, lower string, f *mutField) {
		_ = c.enc.WriteField(hpack.HeaderField{Name: lower, Value: f.String()})
	})
	for _, hf := range st.extra {
		_ = c.enc.WriteField(hf)
	}
	if st.origPath != "" {
		_ = c.enc.WriteField(hpack.HeaderField{Name: "x-envoy-original-path", Value: st.origPath})
	}
	if d.rs.policy == nil {
		st.hf = nil // no retry: not sent again
	}
	end := st.reqEnded && st.replay.Len() == 0 && st.reqTrailers == nil
	l.h2uWriteHeaders(c, s.id, end)
	if st.replay.Len() > 0 || st.reqEnded && !end {
		// A retry: the request again, whole, or as far as it came (the
		// rest follows as it comes, h2uBody), from the chain (replayAt).
		// The client had its window back for the bytes that left on an
		// earlier attempt; those it has not (the failed attempt's unsent,
		// those of the back-off: st.unpaid, the kept body's tail) are
		// credited as they go now.
		s.replayed = max(0, int64(st.replay.Len())-st.unpaid)
		s.trailers, s.endPending = st.reqTrailers, st.reqEnded
		l.h2uPush(s) // past the bound in the back-off (replayCut), the chain's chunks go back as they are sent: no retry after (kept)
	}
	if d.hb != nil && d.rs.bodyHeld {
		d.rs.bodyHeld = false
		l.h1uCredit(st) // the client held in the back-off reads on (h1uBody)
	}
	return false
}

// sending reports whether the request on s is still being sent: its end
// not written (the client's not come, or its body or end waiting for a
// window).
func (s *h2ustream) sending() bool {
	return !s.st.reqEnded || s.endPending || s.unsent() > 0
}

// unsent is how many bytes of the request's body s has yet to send: of
// its client stream's kept chain from replayAt on, then pending.
func (s *h2ustream) unsent() int {
	return int(s.st.replay.End()-s.replayAt) + len(s.pending) - s.pendOff
}

// h2uWriteHeaders writes the header block in c.hbuf as HEADERS and
// CONTINUATIONs, and empties c.hbuf (writeH2Headers).
func (l *loop) h2uWriteHeaders(c *h2up, id uint32, end bool) {
	writeH2Headers(c.fr, c.maxFrame, id, &c.hbuf, end)
}

// h2uBody takes a client DATA frame's bytes for the upstream stream, or,
// in a retry's back-off (st.us nil), for the next attempt (h2uOpen).
func (l *loop) h2uBody(st *h2stream, data []byte, end bool) {
	s := st.us
	if len(data) > 0 && st.c != nil {
		st.sd.received(len(data), 0) // an HTTP/1.1 request's is counted as parsed (h1uBody)
	}
	kept := false // in the chain, which s sends from (h2uSendData)
	if len(data) > 0 && st.sd.rs.policy != nil && (!st.replayCut || s == nil) {
		// Kept for a retry, up to proxyroute.MaxRetryBuffer. In a
		// back-off every byte is kept (the client's stream window bounds
		// them): past the bound the next attempt is the last.
		over := st.sd.rs.outgrew
		if over && s != nil {
			l.h2uCutReplay(st)
		} else {
			st.replayCut = st.replayCut || over
			st.replay.Within(st.replayRoom[:])
			st.replay.Append(l.chunks(), data)
			kept = true
		}
	}
	if s == nil {
		if end {
			st.reqEnded = true
			if st.declared >= 0 && st.received != st.declared {
				l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
				return
			}
			st.sd.state = dsWait
			l.reqComplete(st.sd)
		}
		return
	}
	if len(data) > 0 && !kept {
		l.h2uQueue(s, data)
	}
	if end {
		st.reqEnded = true
		if st.declared >= 0 && st.received != st.declared {
			l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
			return
		}
		s.endPending = true
		st.sd.state = dsWait
		l.reqComplete(st.sd)
	}
	l.h2uPush(s)
}

// h2uTrailers takes the client's trailers: they end the request after
// its body.
func (l *loop) h2uTrailers(st *h2stream, f *http2.MetaHeadersFrame) {
	s := st.us // nil in a retry's back-off: kept for the next attempt (h2uOpen)
	st.reqEnded = true
	if st.declared >= 0 && st.received != st.declared {
		l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
		return
	}
	st.reqTrailers = slices.Clone(f.RegularFields()) // f is the decoder's (h2Heads)
	st.sd.state = dsWait
	l.reqComplete(st.sd)
	if s == nil {
		return
	}
	s.trailers = st.reqTrailers
	s.endPending = true
	l.h2uPush(s)
}

// h2uPush sends what the upstream's windows let of the request body, and
// its end; the client's window is given back as its bytes leave.
func (l *loop) h2uPush(s *h2ustream) {
	c := s.c
	if s.done || c.u.closed {
		return
	}
	sent := 0
	// Not past h2MaxOut waiting to be written to the upstream: the client
	// is credited as the bytes go (h2uCredit), so the bound is what holds
	// an upstream that opens its windows and reads nothing; h2UpEvent
	// resumes the stream once the socket took them. The frame that crosses
	// it is bounded too (h2Out.dataMax): a retry's kept body, up to
	// route.MaxRetryBuffer, would otherwise go as one frame of the
	// upstream's SETTINGS_MAX_FRAME_SIZE past it (1 MiB to Go's server).
	for s.unsent() > 0 && s.window > 0 && c.sendWindow > 0 && c.out.len() <= h2MaxOut {
		left := s.unsent()
		n := min(left, int(min(s.window, c.sendWindow)), c.out.dataMax(c.maxFrame))
		end := s.endPending && s.trailers == nil && n == left
		l.h2uSendData(s, end, n)
		s.window -= int64(n)
		c.sendWindow -= int64(n)
		sent += n
		if end {
			s.endPending = false
		}
	}
	if st := s.st; st.replayCut {
		st.replay.Drop(l.chunks(), s.replayAt) // sent, and kept for no retry
	}
	if sent > 0 {
		s.last = l.now
		credit := int64(sent)
		if s.replayed > 0 {
			k := min(s.replayed, credit)
			s.replayed -= k
			credit -= k
		}
		if credit > 0 {
			l.h2uCredit(s.st, credit)
		}
	}
	if s.unsent() == 0 {
		if s.pending != nil {
			l.putBuf(s.pending) // whole: its capacity kept (pendOff)
			s.pending, s.pendOff = nil, 0
		}
		if s.endPending {
			s.endPending = false
			if s.trailers != nil {
				c.hbuf.Reset()
				for _, hf := range s.trailers {
					_ = c.enc.WriteField(hf)
				}
				s.trailers = nil
				l.h2uWriteHeaders(c, s.id, true)
			} else {
				_ = c.fr.WriteData(s.id, true, nil)
			}
		}
		return
	}
	if !s.blocked {
		s.blocked = true
		c.blocked = append(c.blocked, s)
		l.arm(s.st.sd) // the stall's timeout
	}
}

// h2uSendData writes the next n bytes of s's request body as one DATA frame,
// as http2.Framer.WriteData frames them: those of the client stream's
// kept chain from replayAt on first, from its chunks as they are (a
// frame spans as many as the windows and the upstream's
// SETTINGS_MAX_FRAME_SIZE let it, as it spanned them in one buffer when
// a retry copied the chain into pending), then pending's.
func (l *loop) h2uSendData(s *h2ustream, end bool, n int) {
	c, chain := s.c, &s.st.replay
	if s.replayAt >= chain.End() {
		_ = c.fr.WriteData(s.id, end, s.pending[s.pendOff:][:n])
		s.pendingSent(n)
		return
	}
	// Added to c's output as they are, not through c.fr, whose own
	// buffer is not used (nor grown: c is not heavy for it, lightenH2);
	// the output takes the pieces into the same pooled buffers as one
	// frame written whole (h2OutAdd).
	var head [9]byte
	head[0], head[1], head[2] = byte(n>>16), byte(n>>8), byte(n)
	head[3] = byte(http2.FrameData)
	if end {
		head[4] = byte(http2.FlagDataEndStream)
	}
	binary.BigEndian.PutUint32(head[5:], s.id&(1<<31-1))
	l.h2uOut(c, head[:])
	for n > 0 && s.replayAt < chain.End() {
		b, _ := chain.At(s.replayAt) // from Base on: the chain drops only what was sent
		b = b[:min(len(b), n)]
		l.h2uOut(c, b)
		s.replayAt += int64(len(b))
		n -= len(b)
	}
	if n > 0 {
		l.h2uOut(c, s.pending[s.pendOff:][:n])
		s.pendingSent(n)
	}
}

// pendingSent moves s's pending on by n bytes sent: its offset, not its
// start, so that the buffer goes back whole (h2uPush; putBuf keeps only
// buffers of its two sizes, bufSize and bigBufSize).
func (s *h2ustream) pendingSent(n int) {
	s.pendOff += n
	if s.pendOff == len(s.pending) {
		s.pending, s.pendOff = s.pending[:0], 0
	}
}

// h2uQueue adds b to what waits on s for a window, as h2Queue does on a
// client stream: the bytes already sent of its buffer make room first
// when b would not fit behind them, and past bufSize it takes one of
// bigBufSize (appendBuf).
func (l *loop) h2uQueue(s *h2ustream, b []byte) {
	if s.pending == nil {
		s.pending, s.pendOff = l.getBuf(), 0
	}
	if s.pendOff > 0 && len(s.pending)+len(b) > cap(s.pending) {
		s.pending = s.pending[:copy(s.pending, s.pending[s.pendOff:])]
		s.pendOff = 0
	}
	s.pending = l.appendBuf(s.pending, b)
}

// h2uCutReplay ends keeping st's request body for a retry (its response
// began, or it outgrew proxyroute.MaxRetryBuffer while an attempt is
// under way): what its upstream stream sent of the chain goes back, what
// it has not stays to be sent from the chain, its chunks given back as
// they are (h2uPush); what comes next goes to pending.
func (l *loop) h2uCutReplay(st *h2stream) {
	st.replayCut = true
	if s := st.us; s != nil {
		st.replay.Drop(l.chunks(), s.replayAt)
		return
	}
	st.replay.Release(l.chunks())
}

// h2uCredit gives the client back n bytes of its stream's window, once
// they left for the upstream, in WINDOW_UPDATEs of h2StreamRefresh or more.
func (l *loop) h2uCredit(st *h2stream, n int64) {
	st.unpaid -= n
	if st.c == nil {
		l.h1uCredit(st)
		return
	}
	if st.gone {
		return
	}
	if st.c.recvUnack >= h2ConnRefresh(st.c.win) {
		l.h2Dirty(st.c) // the connection's window may be credited now (flushH2)
	}
	if st.reqEnded {
		return
	}
	st.owed += n
	if st.owed < h2StreamRefresh(st.c.win) {
		return
	}
	_ = st.c.fr.WriteWindowUpdate(st.id, uint32(st.owed))
	st.recvAvail += st.owed
	st.owed = 0
}

// H2UpstreamStreams is the number of requests the loops sent to HTTP/2
// upstreams.
func (s *Server) H2UpstreamStreams() int64 { return s.h2UpRqs.Load() }
