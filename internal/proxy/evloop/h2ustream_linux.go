package evloop

// HTTP/2 upstreams on the loops: the streams. A client's stream (an
// h2stream) routed to an HTTP/2 cluster opens a stream on an upstream
// connection (h2up_linux.go): HEADERS encoded from the client's decoded
// fields (not through an HTTP/1.1 head), the request body as DATA under
// the upstream's windows, its trailers; the response's HEADERS, DATA and
// trailers go back to the client the same way, the upstream's window
// credited as the client's side takes the bytes. A reset on either side
// resets the other.

import (
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
)

// h2ustream is one upstream stream, serving one client stream.
type h2ustream struct {
	c          *h2up
	id         uint32
	st         *h2stream // the client's stream
	x          up        // the attempt's bookkeeping (pool, start, observer, status); not a connection
	window     int64     // what the upstream lets us send on it
	pending    []byte    // request body waiting for a window
	endPending bool      // the request ends after pending (trailers, if any, with it)
	trailers   []hpack.HeaderField
	unacked    int64 // response bytes taken, not credited back (credited as the client's side sends them)
	replayed   int64 // bytes of pending sent again for a retry: the client's window had them back already
	last       int64 // loop time of its last progress sending
	blocked    bool  // in c.blocked
	gotHead    bool
	interims   int8 // 1xx responses relayed
	done       bool // out of c.streams
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
	pool.h2Idle = t.IdleTimeout
	l.h2uOpen(d, pool, t.Cluster, t.Tag)
}

// h2uExtra adds weft's fields to a request for an HTTP/2 upstream:
// x-forwarded-proto and x-request-id unless the client sent them.
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
// for it.
func (l *loop) h2uOpen(d *down, pool *clusterPool, cluster string, tag any) {
	st := d.ustream()
	c, err := l.h2UpConn(pool)
	if c == nil {
		if err == nil {
			pool.st.rqPendingOverflow.Inc()
			d.logFlags(accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}")
			l.localReply(d, 503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", false)
			return
		}
		d.logFlags(accesslog.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}")
		l.localReply(d, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", false)
		return
	}
	s := l.ustreams.get()
	s.c, s.id, s.st, s.window, s.last = c, c.nextID, st, int64(c.initWindow), l.now
	s.x.fd, s.x.pool, s.x.started = -1, pool, l.now
	c.nextID += 2
	if c.nextID > 1<<31-1 {
		c.goAway = true // IDs spent: the next stream opens a new connection
	}
	c.streams[s.id] = s
	st.us = s
	l.srv.h2UpRqs.Add(1)
	l.observeStart(&s.x, cluster, tag)
	d.rs.tryStart = l.now
	d.state = dsWait
	if !st.reqEnded {
		d.state = dsBody
	}
	c.hbuf.Reset()
	for _, hf := range st.hf.Fields {
		if hf.Name == "expect" {
			continue // answered by the proxy (h2Continue), as Envoy does
		}
		if hf.Name == ":path" && st.path != "" {
			hf.Value = st.path
		}
		_ = c.enc.WriteField(hf)
	}
	for _, hf := range st.extra {
		_ = c.enc.WriteField(hf)
	}
	if d.rs.policy == nil {
		st.hf = nil // no retry: not sent again
	}
	end := st.reqEnded && len(st.replay) == 0 && st.reqTrailers == nil
	l.h2uWriteHeaders(c, s.id, c.hbuf.Bytes(), end)
	if !end && (len(st.replay) > 0 || st.reqTrailers != nil) && st.reqEnded {
		// A retry: the whole request again.
		s.pending = append(l.getBuf(), st.replay...)
		s.replayed = int64(len(st.replay))
		s.trailers, s.endPending = st.reqTrailers, true
		l.h2uPush(s)
	}
}

// h2uWriteHeaders writes a header block as HEADERS and CONTINUATIONs.
func (l *loop) h2uWriteHeaders(c *h2up, id uint32, block []byte, end bool) {
	writeH2Headers(c.fr, c.maxFrame, id, block, end)
}

// h2uBody takes a client DATA frame's bytes for the upstream stream.
func (l *loop) h2uBody(st *h2stream, data []byte, end bool) {
	s := st.us
	if len(data) > 0 && st.sd.rs.policy != nil && !st.replayCut {
		// Kept for a retry, up to the client's stream window.
		if len(st.replay)+len(data) > h2Window {
			st.replayCut = true
			l.putBuf(st.replay)
			st.replay = nil
		} else {
			if st.replay == nil {
				st.replay = l.getBuf()
			}
			st.replay = append(st.replay, data...)
		}
	}
	if len(data) > 0 {
		if s.pending == nil {
			s.pending = l.getBuf()
		}
		s.pending = append(s.pending, data...)
		if st.c != nil {
			st.sd.logReceived(len(data), 0) // an HTTP/1.1 request's is counted as parsed (h1uBody)
		}
	}
	if end {
		st.reqEnded = true
		if st.declared >= 0 && st.received != st.declared {
			l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
			return
		}
		s.endPending = true
		st.sd.state = dsWait
	}
	l.h2uPush(s)
}

// h2uTrailers takes the client's trailers: they end the request after
// its body.
func (l *loop) h2uTrailers(st *h2stream, f *http2.MetaHeadersFrame) {
	s := st.us
	st.reqEnded = true
	if st.declared >= 0 && st.received != st.declared {
		l.h2StreamError(st.c, st.id, http2.ErrCodeProtocol)
		return
	}
	s.trailers = f.RegularFields()
	st.reqTrailers = s.trailers
	s.endPending = true
	st.sd.state = dsWait
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
	// resumes the stream once the socket took them.
	for len(s.pending) > 0 && s.window > 0 && c.sendWindow > 0 && len(c.u.out)-c.u.outOff <= h2MaxOut {
		n := min(len(s.pending), int(min(s.window, c.sendWindow)), int(c.maxFrame))
		end := s.endPending && s.trailers == nil && n == len(s.pending)
		_ = c.fr.WriteData(s.id, end, s.pending[:n])
		s.window -= int64(n)
		c.sendWindow -= int64(n)
		s.pending = s.pending[n:]
		sent += n
		if end {
			s.endPending = false
		}
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
	if len(s.pending) == 0 {
		if s.pending != nil {
			l.putBuf(s.pending[:0:cap(s.pending)])
			s.pending = nil
		}
		if s.endPending {
			s.endPending = false
			if s.trailers != nil {
				c.hbuf.Reset()
				for _, hf := range s.trailers {
					_ = c.enc.WriteField(hf)
				}
				s.trailers = nil
				l.h2uWriteHeaders(c, s.id, c.hbuf.Bytes(), true)
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

// h2uCredit gives the client back n bytes of its stream's window, once
// they left for the upstream.
func (l *loop) h2uCredit(st *h2stream, n int64) {
	st.unpaid -= n
	if st.c == nil {
		l.h1uCredit(st)
		return
	}
	if st.gone || st.reqEnded {
		return
	}
	_ = st.c.fr.WriteWindowUpdate(st.id, uint32(n))
	st.recvAvail += n
}

// h2uConsumed: n bytes of the response went to the client: the upstream
// may send as many more on the stream (h2Push's hook).
func (l *loop) h2uConsumed(s *h2ustream, n int) {
	s.unacked -= int64(n)
	if s.done || s.c.u.closed || n == 0 {
		return
	}
	_ = s.c.fr.WriteWindowUpdate(s.id, uint32(n))
}

// h2uHeaders relays the response's HEADERS, or its trailers.
func (l *loop) h2uHeaders(s *h2ustream, f *http2.MetaHeadersFrame) {
	st := s.st
	d := st.sd
	c := st.c
	if f.Truncated {
		// Over the SETTINGS_MAX_HEADER_LIST_SIZE we advertise: the fields
		// decoded are not all of them. A malformed response, as a head
		// over the HTTP/1.1 loops' limit is.
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
		if s.gotHead {
			l.h2uPeerReset(s, http2.ErrCodeInternal)
			return
		}
		l.h2uFail(s, 502, "upstream sent a malformed response")
		return
	}
	if s.gotHead {
		// Trailers: gRPC's grpc-status comes in them.
		if !f.StreamEnded() {
			_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
			l.h2uPeerReset(s, http2.ErrCodeProtocol)
			return
		}
		st.trailers = slices.Clone(f.RegularFields()) // f is the decoder's (h2Heads.reuse)
		if d.logged() {
			d.logH2Trailers(st.trailers)
		}
		l.h2uFinish(s, false)
		return
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
		l.h2uFail(s, 502, "upstream sent a malformed response")
		return
	}
	if status < 200 {
		l.h2uInterim(s, f, status)
		return
	}
	if p := d.rs.policy; p != nil {
		gs := -1
		if p.On&grpcRetries != 0 {
			gs = h2GRPCStatus(f)
		}
		if !p.RetriableStatus(status, gs) {
			if d.retries > 0 && d.rs.upstream != nil {
				d.rs.upstream.RetryEnd(false)
			}
		} else if l.h2uRetry(s, status, !f.StreamEnded(), false) {
			return
		}
	}
	if c == nil {
		l.h1uHead(s, f, status)
		return
	}
	s.gotHead = true
	s.x.status = status
	c.hbuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	hasDate := false
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
			"server", "x-envoy-upstream-service-time":
			continue // connection-specific, or written again by the proxy
		case "date":
			hasDate = true
		}
		_ = c.enc.WriteField(hf)
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: "server", Value: "envoy"})
	_ = c.enc.WriteField(hpack.HeaderField{Name: "x-envoy-upstream-service-time",
		Value: strconv.FormatInt((l.now-s.x.started)/int64(time.Millisecond), 10)})
	if !hasDate {
		l.h2Date(c)
	}
	// A response without a body ends with its HEADERS (gRPC's
	// trailers-only response must: its grpc-status is in them).
	l.h2WriteHeaders(c, st.id, c.hbuf.Bytes(), f.StreamEnded())
	if d.logged() {
		l.logH2Head(d, status, f.RegularFields(), s.x.started)
	}
	l.responseCounted(&s.x, d, status)
	if f.StreamEnded() {
		l.h2uFinish(s, true)
	}
}

// h2uMaxInterim bounds the 1xx responses relayed per stream, as Go's
// Transport bounds those it reads (5); past it the response is malformed.
const h2uMaxInterim = 5

// h2uInterim relays a 1xx response as the goroutine path does (its
// Got1xxResponse hook): HEADERS without END_STREAM, the fields minus
// connection-specific ones. A 100 is not relayed: the proxy answers
// expect: 100-continue itself (h2Continue). A 101, or a 1xx ending the
// stream, is malformed in HTTP/2 (RFC 9113 8.1, 8.6).
func (l *loop) h2uInterim(s *h2ustream, f *http2.MetaHeadersFrame, status int) {
	if status == 101 || f.StreamEnded() || s.interims >= h2uMaxInterim {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
		l.h2uFail(s, 502, "upstream sent a malformed response")
		return
	}
	st := s.st
	if status == 100 || st.gone {
		return
	}
	s.interims++
	c := st.c
	if c == nil {
		l.h1uInterim(s, f, status) // an HTTP/1.1 request's
		return
	}
	c.hbuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		}
		_ = c.enc.WriteField(hf)
	}
	l.h2WriteHeaders(c, st.id, c.hbuf.Bytes(), false)
}

// h2uData relays a response DATA frame's bytes.
func (l *loop) h2uData(s *h2ustream, f *http2.DataFrame) {
	if !s.gotHead {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
		l.h2uFail(s, 502, "upstream sent a malformed response")
		return
	}
	n := int64(f.Length)
	s.unacked += n
	if s.unacked > h2Window {
		// Past the window we gave it.
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
		l.h2uPeerReset(s, http2.ErrCodeFlowControl)
		return
	}
	if pad := n - int64(len(f.Data())); pad > 0 {
		l.h2uConsumed(s, int(pad)) // padding is not relayed
	}
	st := s.st
	if st.c == nil {
		l.h1uData(s, f.Data(), f.StreamEnded())
		return
	}
	if data := f.Data(); len(data) > 0 {
		st.sd.logSent(int64(len(data)))
		l.h2Queue(st, data)
	}
	if f.StreamEnded() {
		l.h2uFinish(s, false)
		return
	}
	l.h2Push(st)
}

// h2uFinish: the upstream's response is complete. The client's stream
// ends after the body still waiting for its window, with the trailers;
// or it ended already, with the HEADERS (sent).
func (l *loop) h2uFinish(s *h2ustream, sent bool) {
	st := s.st
	d := st.sd
	l.h2uDone(s)
	if !st.reqEnded {
		// The upstream answered before the whole request: it needs no
		// more of it (RFC 9113 8.1).
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
	}
	d.gen.st.rqTime.Record(uint64((l.now - d.reqStart) / int64(time.Millisecond)))
	l.endRetries(d)
	l.logDone(d, s.x.status)
	d.state = dsHead
	if st.c == nil {
		l.h1uEnd(d)
		return
	}
	if sent {
		l.h2Done(d)
		l.h2Sent(st)
		return
	}
	l.flushDown(d) // h2Complete: END_STREAM (or the trailers) after the body
}

// h2uDone takes the upstream stream off its connection and the client's
// stream.
func (l *loop) h2uDone(s *h2ustream) {
	if s.done {
		return
	}
	s.done = true
	l.ustreams.ended(s) // recycled at the iteration's end (h2pool_linux.go)
	c := s.c
	delete(c.streams, s.id)
	if len(c.streams) == 0 {
		c.idleSince = l.now
	}
	s.st.us = nil
	if s.pending != nil {
		l.putBuf(s.pending[:0:cap(s.pending)])
		s.pending = nil
	}
	l.h2UpMaybeClose(c)
}

// h2uCancel: the client's stream ended before the upstream's (a reset,
// the client gone, a timeout): RST_STREAM CANCEL upstream (h2Done's
// hook).
func (l *loop) h2uCancel(s *h2ustream) {
	l.observeDone(&s.x, -1, false)
	if !s.c.u.closed {
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
	}
	l.h2uDone(s)
}

// h2uPeerReset: the upstream reset the stream (or refused it by GOAWAY).
// Before the response head the client gets 503, as the goroutine path
// answers; after it, its stream is reset with the upstream's code.
func (l *loop) h2uPeerReset(s *h2ustream, code http2.ErrCode) {
	if s.gotHead {
		st := s.st
		d := st.sd
		d.logFlags(accesslog.UpstreamRemoteReset, "")
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		if st.c == nil {
			l.closeDown(d) // the response cannot be completed
		} else if !st.gone {
			_ = st.c.fr.WriteRSTStream(st.id, code)
			st.reset = true
			l.h2EndStream(st)
		}
		return
	}
	if p := s.st.sd.rs.policy; p != nil && p.RetriableReset(false, code == http2.ErrCodeRefusedStream) && l.h2uRetry(s, 0, false, false) {
		return
	}
	if code == http2.ErrCodeRefusedStream && s.st.c != nil {
		// Not processed upstream: the client may send it again (RFC 9113
		// 8.7), as a gRPC client does at once.
		st := s.st
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		if !st.gone {
			_ = st.c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
			st.reset = true
			l.h2EndStream(st)
		}
		return
	}
	s.st.sd.logFlags(accesslog.UpstreamRemoteReset, "upstream_reset_before_response_started{remote_reset}")
	l.h2uFail(s, 503, "upstream connect error or disconnect/reset before headers. reset reason: remote reset")
}

// h2uConnFailed: the stream's connection closed or failed.
func (l *loop) h2uConnFailed(s *h2ustream, connecting bool) {
	if s.gotHead {
		st := s.st
		st.sd.logFlags(accesslog.UpstreamConnectionTermination, "")
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		if !st.gone {
			l.h2uResetDown(st.sd)
		}
		return
	}
	if p := s.st.sd.rs.policy; p != nil && p.RetriableReset(connecting, false) && l.h2uRetry(s, 0, false, false) {
		return
	}
	why, flag, details := "connection termination", accesslog.UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}"
	if connecting {
		why, flag, details = "connection failure", accesslog.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}"
	}
	s.st.sd.logFlags(flag, details)
	l.h2uFail(s, 503, "upstream connect error or disconnect/reset before headers. reset reason: "+why)
}

// h2uFail ends an upstream stream that has no response head with a local
// reply to the client.
func (l *loop) h2uFail(s *h2ustream, status int, body string) {
	st := s.st
	l.observeDone(&s.x, 0, false)
	l.h2uDone(s)
	if st.gone || st.sd.closed {
		return
	}
	l.localReply(st.sd, status, body, false)
}

// h2uDeadline is the next timeout of a client stream served by an
// upstream stream: the connect timeout, the route timeout, the idle
// timeout of a request body the upstream's window holds back, and the
// retry policy's per-try timeout.
func (l *loop) h2uDeadline(d *down) int64 {
	s := d.ustream().us
	at := d.reqStart + d.timeout
	if u := s.c.u; u.connecting {
		at = min(at, u.started+int64(l.srv.cfg.ConnectTimeout))
	}
	if s.blocked {
		at = min(at, s.last+int64(d.gen.streamIdle))
	}
	if p := d.rs.policy; p != nil && p.PerTryTimeout > 0 {
		at = min(at, d.rs.tryStart+int64(p.PerTryTimeout))
	}
	return at
}

// h2uExpire enforces them.
func (l *loop) h2uExpire(d *down) {
	s := d.ustream().us
	c := s.c
	switch {
	case c.u.connecting && l.now-c.u.started >= int64(l.srv.cfg.ConnectTimeout):
		c.u.pool.st.cxConnectFail.Inc()
		l.h2UpFailed(c)
	case l.now-d.reqStart >= d.timeout:
		d.logFlags(accesslog.UpstreamRequestTimeout, "upstream_response_timeout")
		s.x.pool.st.rqTimeout.Inc()
		l.observeDone(&s.x, 0, true)
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		if s.gotHead {
			l.h2uDone(s)
			l.h2uResetDown(d)
			return
		}
		l.h2uDone(s)
		l.localReply(d, 504, "upstream request timeout", false)
	case d.rs.policy != nil && d.rs.policy.PerTryTimeout > 0 && l.now-d.rs.tryStart >= int64(d.rs.policy.PerTryTimeout):
		l.h2uPerTryTimeout(s)
	case s.blocked && l.now-s.last >= int64(d.gen.streamIdle):
		// The upstream keeps its window closed on the request body: the
		// stream idle timeout, as Envoy counts it.
		d.gen.st.rqIdleTimeout.Inc()
		_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		l.observeDone(&s.x, 0, false)
		l.h2uDone(s)
		l.h2uResetDown(d)
	}
}

// H2UpstreamStreams is the number of requests the loops sent to HTTP/2
// upstreams.
func (s *Server) H2UpstreamStreams() int64 { return s.h2UpRqs.Load() }
