package evloop

// An upstream stream's response, relayed to the client's stream (an
// HTTP/1.1 request's through h1h2_linux.go): its HEADERS (1xx responses
// dropped), DATA under the window we give the upstream (credited back
// as the client takes the bytes), trailers, and its end (h2uFinish).

import (
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2uConsumed: n bytes of the response went to the client: the upstream
// may send as many more on the stream (h2Push's hook), credited once
// they add up to h2StreamRefresh.
func (l *loop) h2uConsumed(s *h2ustream, n int) {
	s.owed += int64(n)
	if s.done || s.c.u.closed || s.owed < h2StreamRefresh(s.c.win) {
		return
	}
	_ = s.c.fr.WriteWindowUpdate(s.id, uint32(s.owed))
	s.unacked -= s.owed
	s.owed = 0
}

// h2uHeaders relays the response's HEADERS, or its trailers.
func (l *loop) h2uHeaders(s *h2ustream, f *http2.MetaHeadersFrame) {
	st := s.st
	d := st.sd
	c := st.c
	l.responseActive(d)
	if f.Truncated {
		// Over the SETTINGS_MAX_HEADER_LIST_SIZE we advertise: the fields
		// decoded are not all of them. A malformed response, as a head
		// over the HTTP/1.1 loops' limit is.
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
		if s.gotHead {
			l.h2uPeerReset(s, http2.ErrCodeInternal)
			return
		}
		l.h2uProtocolError(s)
		return
	}
	if s.gotHead {
		// Trailers: gRPC's grpc-status comes in them.
		if !f.StreamEnded() {
			l.h2UpProtocolError(s.c)
			return
		}
		st.trailers = slices.Clone(f.RegularFields()) // f is the decoder's (h2Heads)
		if d.logged() {
			d.logH2Trailers(st.trailers)
		}
		if s.x.grpcWait {
			l.observeGRPCDone(&s.x, h2GRPCStatus(f))
		}
		l.h2uFinish(s, false)
		return
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		l.h2UpProtocolError(s.c)
		return
	}
	if status < 200 {
		l.h2uInterim(s, f, status)
		return
	}
	// The length the DATA may not pass (h2uData), or a malformed one,
	// which fails the connection whatever the client's protocol.
	n, first := 0, ""
	for _, hf := range f.RegularFields() {
		if hf.Name == "content-length" {
			if n == 0 {
				first = hf.Value
			}
			n++
		}
	}
	if proxyroute.H2LengthInvalid(n, first) {
		l.h2UpProtocolError(s.c)
		return
	}
	s.left = -1
	if n > 0 {
		s.left, _ = strconv.ParseInt(first, 10, 64)
	}
	if l.readHead(&s.x, d, status) {
		s.x.rh.GRPCStatus, s.x.rh.End = h2GRPCStatus(f), f.StreamEnded()
	}
	if p := d.rs.policy; p != nil && !d.rs.started {
		gs := s.x.rh.GRPCStatus // read for a gRPC request (readHead)
		if p.On&grpcRetries != 0 && !s.x.rh.GRPC {
			gs = h2GRPCStatus(f)
		}
		if !p.RetriableStatus(status, gs) {
			if d.retries > 0 && d.rs.upstream != nil {
				d.rs.upstream.RetryEnd(false)
			}
		} else if l.h2uRetry(s, status, !f.StreamEnded() || s.sending(), false) {
			// Reset upstream while either side is open: a request still
			// being sent too, as Envoy's Filter::onUpstreamHeaders resets
			// an attempt whose request was not all sent (encodeComplete).
			return
		}
	}
	// The response began: no attempt follows, so the body kept for one is
	// dropped and no more is kept (Envoy's Filter::onUpstreamHeaders
	// resets its retry state, and decodeData buffers no more after it). A
	// long stream under a retry policy (gRPC's) would hold it to its end.
	l.h2uCutReplay(st)
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
	l.h2WriteHeaders(c, st.id, f.StreamEnded())
	if d.logged() {
		l.logH2Head(d, status, f.RegularFields(), s.x.started)
	}
	l.responseCounted(&s.x, d, status)
	if f.StreamEnded() {
		l.h2uFinish(s, true)
	}
}

// h2uInterim takes a 1xx response: dropped, as Envoy drops an
// upstream's without proxy_100_continue (and the goroutine path); the
// proxy answers expect: 100-continue itself (h2Continue, dispatch). A
// 101, or a 1xx ending the stream, is malformed in HTTP/2 (RFC 9113 8.1,
// 8.6).
func (l *loop) h2uInterim(s *h2ustream, f *http2.MetaHeadersFrame, status int) {
	if status == 101 || f.StreamEnded() {
		l.h2UpProtocolError(s.c)
		return
	}
	l.interim(&s.x, s.st.sd, status)
}

// h2uData relays a response DATA frame's bytes.
func (l *loop) h2uData(s *h2ustream, f *http2.DataFrame) {
	if !s.gotHead {
		l.h2UpProtocolError(s.c)
		return
	}
	n := int64(f.Length)
	s.unacked += n
	if s.unacked > int64(s.c.win.Stream) {
		// Past the window we gave it.
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
		l.h2uPeerReset(s, http2.ErrCodeFlowControl)
		return
	}
	if pad := n - int64(len(f.Data())); pad > 0 {
		l.h2uConsumed(s, int(pad)) // padding is not relayed
	}
	if data := int64(len(f.Data())); s.left >= 0 {
		if data > s.left {
			// Past its content-length: nghttp2 resets the stream alone,
			// before its codec sees the bytes, a remote reset to Envoy
			// (route.H2LengthInvalid).
			_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol)
			l.h2uPeerReset(s, http2.ErrCodeProtocol)
			return
		}
		s.left -= data
	}
	st := s.st
	l.responseActive(st.sd)
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
	l.observeGRPCDone(&s.x, proxyroute.NoGRPCStatus) // ended without trailers (with them it was told already)
	l.h2uDone(s)
	if !st.reqEnded {
		// The upstream answered before the whole request: it needs no
		// more of it (RFC 9113 8.1).
		_ = s.c.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
	}
	l.endRetries(d)
	l.logDone(d, s.x.status)
	d.state = dsHead
	if st.c == nil {
		l.h1Done(d) // h1uEnd puts the response's end in d.out
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
