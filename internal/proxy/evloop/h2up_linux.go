package evloop

// HTTP/2 upstreams on the loops (h2 step 2): the connections. A stream of
// a loop's h2c connection whose Target names a cluster spoken to over
// HTTP/2 (Target.HTTP2) goes out as a stream of an HTTP/2 connection the
// same loop keeps to the host (clusterPool.h2): its own stream IDs, HPACK
// encoder (hpackEnc) and decoder (golang.org/x/net/http2's Framer and hpack),
// SETTINGS, both flow-control windows. The connection is an up whose h2
// field is set: dial, registration, writes (flushUp) and close (closeUp)
// are the HTTP/1.1 upstreams', and so are connect and TLS (over TLS it
// offers ALPN h2: h2tls_linux.go); what it reads is frames (h2UpRead).
// The streams are in h2ustream_linux.go.

import (
	"bytes"
	"errors"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

const (
	// h2UpMaxConns bounds a loop's HTTP/2 connections to one host: past
	// it, with every one at the peer's SETTINGS_MAX_CONCURRENT_STREAMS, a
	// stream is answered 503 (the pending-request overflow).
	h2UpMaxConns = 16
	// h2UpDefaultStreams is the streams a connection takes before the
	// peer's SETTINGS say how many (Go's Transport assumes as many).
	h2UpDefaultStreams = 100
	// h2UpMaxHeaderList is the header list a response may have (the
	// decoder's limit; Envoy's max_response_headers_kb default, 60 KB,
	// rounded up).
	h2UpMaxHeaderList = 64 << 10
	// h2UpBlockMax is how much of a response's header block (its frames,
	// headers included) a connection waits for before it decodes it:
	// twice the header list size it advertises, as x/net's Framer reads
	// a block frame by frame until a fragment is over twice what is left
	// of the list (h2conn.blockMax for a request's). A block within the
	// list is read whole however the upstream cut it into frames, and a
	// list past it answered 502 with its stream reset (h2uHeaders); a
	// larger block fails the connection, as it fails it there.
	h2UpBlockMax = 2 * h2UpMaxHeaderList
	// h2UpMaxIn bounds what a connection's read buffer grows to for one
	// frame with its CONTINUATIONs (growBuf): a block waited for, and the
	// whole frame that takes it past h2UpBlockMax, which h2FrameLen
	// needs before it hands the block over (as h2conn's headRoom).
	h2UpMaxIn = h2UpBlockMax + 9 + h2MaxFrame
)

// h2up is an upstream HTTP/2 connection's state; its up holds it.
type h2up struct {
	u          *up
	fr         *http2.Framer
	heads      *h2Heads     // decodes fr's header blocks
	rd         bytes.Reader // the frame being read, from u.in
	hbuf       bytes.Buffer // a header block being encoded
	enc        *hpackEnc
	streams    map[uint32]*h2ustream
	nextID     uint32
	maxStreams uint32 // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	sendWindow int64
	initWindow int32  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	recvUnack  int64  // connection-level response bytes not credited yet
	goAway     bool   // the peer sent GOAWAY (or IDs ran out): no new stream
	idleSince  int64  // loop time its last stream ended (or it opened)
	dirty      bool   // in loop.h2updirty
	blocked    []*h2ustream
	out        h2Out                // u.out, then buffers of bigBufSize past it (h2out_linux.go)
	heavy      bool                 // a frame over h2KeepFrame, or streams over h2KeepStreams, since lightenH2
	win        proxyroute.H2Windows // what the loops give the upstream (its pool's h2Win.OrDefault())
}

// h2upWriter is what the connection's Framer writes to: its frames go to
// the connection's output (h2OutAdd), written at the end of the loop's
// iteration (flushH2Up). Only the Framer writes here: a frame too large
// for the Framer to keep as it is marks the connection heavy, and
// h2uSendData, which frames DATA from a retry's kept chain itself, adds
// to the output directly (h2uOut).
type h2upWriter struct {
	c *h2up
	l *loop
}

func (w h2upWriter) Write(b []byte) (int, error) {
	if len(b) > h2KeepFrame {
		w.c.heavy = true // the Framer's write buffer grew (lightenH2)
	}
	w.l.h2uOut(w.c, b)
	return len(b), nil
}

// h2uOut appends b to c's output, to be written at the end of the loop's
// iteration.
func (l *loop) h2uOut(c *h2up, b []byte) {
	l.h2OutAdd(&c.out, b)
	l.h2upDirty(c)
}

// h2UpConn returns a connection of p with room for a stream: one open, or
// a new one (its connect under way); nil when the bound is reached
// (overflow) or the connect failed at once (err).
func (l *loop) h2UpConn(p *clusterPool) (*h2up, error) {
	l.h2UpCloseIdle(p)
	live := 0
	for _, u := range p.h2 {
		c := u.h2
		if c.goAway || u.closed {
			continue
		}
		live++
		if uint32(len(c.streams)) < c.maxStreams {
			return c, nil
		}
	}
	if live >= h2UpMaxConns {
		return nil, nil
	}
	u, err := l.dial(p)
	if err != nil {
		return nil, err
	}
	c := &h2up{u: u, streams: map[uint32]*h2ustream{}, nextID: 1, maxStreams: h2UpDefaultStreams,
		sendWindow: h2PeerWindow, initWindow: h2PeerWindow, maxFrame: h2MaxFrame, idleSince: l.now, win: p.h2Win.OrDefault()}
	u.h2, c.out = c, h2OutTo(&u.out, &u.outOff)
	c.fr = newH2Framer(h2upWriter{c, l}, &c.rd, h2UpMaxHeaderList)
	c.heads = newH2Heads(h2UpMaxHeaderList)
	c.enc = newHPACKEnc(&c.hbuf)
	p.h2 = append(p.h2, u)
	l.h2uOut(c, []byte(http2.ClientPreface))
	_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2UpMaxHeaderList},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.win.Stream})
	h2ConnWindow(c.fr, c.win) // as a client's (startH2)
	return c, nil
}

// flushH2Up writes what each upstream connection's frames of this
// iteration added, one write per connection.
func (l *loop) flushH2Up() {
	for i := 0; i < len(l.h2updirty); i++ {
		c := l.h2updirty[i]
		c.dirty = false
		u := c.u
		if u.closed {
			continue
		}
		if c.recvUnack >= h2ConnRefresh(c.win) {
			// Credited on receipt, not as passed on (h2conn.held): the
			// connection carries many clients' streams, and one client that
			// reads nothing would hold its stream's window of it, the whole
			// of it, and stall every other client's response on it. What a
			// stream holds is bounded by its own window (h2uData).
			_ = c.fr.WriteWindowUpdate(0, uint32(c.recvUnack))
			c.recvUnack = 0
		}
		if !u.connecting {
			l.flushUp(u)
			if !u.closed && !u.wantOut {
				// All out: streams h2uPush held for h2MaxOut in this
				// iteration go on (their frames come round this loop again);
				// no EPOLLOUT would wake them.
				l.h2UpResume(c)
			}
		}
	}
	clear(l.h2updirty)
	l.h2updirty = l.h2updirty[:0]
}

// h2UpEvent is onUp's work for a connected HTTP/2 connection (its
// connect and TLS handshake are the HTTP/1.1 upstreams').
func (l *loop) h2UpEvent(u *up, ev uint32) {
	c := u.h2
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && u.wantOut {
		l.flushUp(u)
		if u.closed {
			return
		}
		if !u.wantOut {
			if u.pausedIn {
				u.pausedIn = false // h2UpRead's pause
				l.watchUp(u)
			}
			l.h2UpResume(c) // the socket took what held streams back (h2MaxOut)
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.h2UpRead(c)
	}
}

// h2UpRead reads the connection's frames and acts on each complete one.
func (l *loop) h2UpRead(c *h2up) {
	u := c.u
	if u.wantOut && c.out.len() > h2MaxOut {
		// The upstream reads nothing of what its frames make us write
		// (PING and SETTINGS ACKs): none of them is read until it does,
		// as step 1 holds a client (h2MaxOut).
		u.pausedIn = true
		l.watchUp(u)
		return
	}
	if u.in == nil {
		u.in, u.off = l.getBuf(), 0
	}
	if len(u.in) == cap(u.in) {
		switch {
		case u.off > 0:
			n := copy(u.in, u.in[u.off:])
			u.in, u.off = u.in[:n], 0
		case cap(u.in) < h2UpMaxIn:
			u.in = l.growBuf(u.in, h2UpMaxIn)
		default:
			l.h2UpGoAway(c, http2.ErrCodeFrameSize)
			return
		}
	}
	n, err := l.h2UpReadSock(u)
	if err != nil && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) {
		return
	}
	if err != nil || n == 0 {
		l.h2UpFailed(c)
		return
	}
	u.in = u.in[:len(u.in)+n]
	for !u.closed {
		b := u.in[u.off:]
		fl := h2FrameLen(b, h2UpBlockMax)
		if fl == errFrameSize {
			l.h2UpGoAway(c, http2.ErrCodeFrameSize)
			return
		}
		if fl < 0 {
			break
		}
		c.rd.Reset(b[:fl])
		if fl > h2KeepFrame {
			c.heavy = true // the Framer's read buffer grows (lightenH2)
		}
		f, err := c.heads.readFrame(c.fr)
		u.off += fl
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				// An invalid field or pseudo-header in a header block, or
				// a frame the Framer refuses as a stream error: the
				// whole connection fails, as in Envoy (h2UpProtocolError).
				// On a stream already ended it is let pass, as x/net's
				// client lets it.
				if c.streams[se.StreamID] == nil {
					continue
				}
				l.h2UpProtocolError(c)
			case errors.As(err, &ce):
				l.h2UpGoAway(c, http2.ErrCode(ce))
			default:
				l.h2UpGoAway(c, http2.ErrCodeProtocol)
			}
			return
		}
		l.h2UpFrame(c, f)
	}
	if u.closed {
		return
	}
	c.heads.done(&c.rd) // a stream keeps what it needs of a response (h2uHeaders)
	if u.off == len(u.in) {
		l.putBuf(u.in)
		u.in, u.off = nil, 0
	}
	u.in, u.off = l.shrinkIn(u.in, u.off)
}

// h2UpFrame acts on one frame from the upstream.
func (l *loop) h2UpFrame(c *h2up, f http2.Frame) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return
		}
		shift := func(delta int64) bool {
			for _, s := range c.streams {
				if s.window += delta; s.window > 1<<31-1 {
					return false
				}
			}
			return true
		}
		if code, ok := applyH2Settings(f, h2Peer{&c.initWindow, &c.maxFrame, &c.maxStreams, c.enc}, shift); !ok {
			l.h2UpGoAway(c, code)
			return
		}
		_ = c.fr.WriteSettingsAck()
		l.h2UpResume(c)
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = c.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
			if c.sendWindow > 1<<31-1 {
				l.h2UpGoAway(c, http2.ErrCodeFlowControl)
				return
			}
			l.h2UpResume(c)
			return
		}
		if s := c.streams[f.StreamID]; s != nil {
			s.window += int64(f.Increment)
			if s.window > 1<<31-1 {
				_ = c.fr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
				l.h2uPeerReset(s, http2.ErrCodeFlowControl)
				return
			}
			l.h2UpResume(c)
		}
	case *http2.RSTStreamFrame:
		if s := c.streams[f.StreamID]; s != nil {
			l.h2uPeerReset(s, f.ErrCode)
		}
	case *http2.GoAwayFrame:
		// Streams above its last ID were not processed: refused, so that
		// the client may send them again (RFC 9113 6.8); those below it
		// finish, then the connection closes.
		c.goAway = true
		for id, s := range c.streams {
			if id > f.LastStreamID {
				l.h2uPeerReset(s, http2.ErrCodeRefusedStream)
			}
		}
		l.h2UpMaybeClose(c)
	case *http2.MetaHeadersFrame:
		if c.idle(f.StreamID) {
			l.h2UpGoAway(c, http2.ErrCodeProtocol) // a stream we never opened (RFC 9113 5.1)
			return
		}
		if s := c.streams[f.StreamID]; s != nil {
			l.h2uHeaders(s, f)
		}
	case *http2.DataFrame:
		if c.idle(f.StreamID) {
			l.h2UpGoAway(c, http2.ErrCodeProtocol)
			return
		}
		n := int64(f.Length)
		c.recvUnack += n
		l.h2upDirty(c)
		s := c.streams[f.StreamID]
		if s == nil {
			return // a stream reset already: its window is the connection's only
		}
		l.h2uData(s, f)
	case *http2.PushPromiseFrame:
		l.h2UpGoAway(c, http2.ErrCodeProtocol) // push is off (SETTINGS_ENABLE_PUSH 0)
	}
}

// idle tells whether id names a stream the proxy has not opened: one the
// upstream may not send HEADERS or DATA on (push is off).
func (c *h2up) idle(id uint32) bool {
	return id&1 == 0 || id >= c.nextID
}

func (l *loop) h2upDirty(c *h2up) {
	if !c.dirty {
		c.dirty = true
		l.h2updirty = append(l.h2updirty, c)
	}
}

// h2UpGoAway ends the connection: GOAWAY with code, then h2UpFailed; for
// an error of the upstream's (any code but NO_ERROR), h2UpProtocolError
// instead, which sends nothing, as Envoy's codec fails on any frame it
// refuses.
func (l *loop) h2UpGoAway(c *h2up, code http2.ErrCode) {
	if code != http2.ErrCodeNo {
		l.h2UpProtocolError(c)
		return
	}
	_ = c.fr.WriteGoAway(0, code, nil)
	if !c.u.connecting {
		l.flushUp(c.u)
	}
	l.h2UpFailed(c)
}

// h2UpProtocolError fails the connection for a response that breaks
// HTTP/2's messaging rules (RFC 9113 8.1, 8.2): an invalid field or
// pseudo-header, a malformed :status, a 1xx ending its stream or a 101,
// DATA before the response's HEADERS, trailers not ending it; or for a
// frame that breaks HTTP/2 itself (h2UpGoAway).
// Envoy's codec, with stream_error_on_invalid_http_messaging unset as App
// Mesh leaves it, fails the whole connection on any invalid frame but a
// refused stream (ConnectionImpl::onInvalidFrame in
// source/common/http/http2/codec_impl.cc returns a callback failure); its
// codec client counts upstream_cx_protocol_error and closes the
// connection (CodecClient::onData), resetting every stream on it with
// reason protocol error (CodecClient::onEvent), each counted in
// upstream_rq_tx_reset (MultiplexedActiveClientBase::onStreamReset). A
// stream without a response head is answered 502 UPE (or retried), one
// whose response began is reset (h2uConnProtocolError). The goroutine
// path does the same (cluster/h2conn.go).
// Nothing is sent first, no GOAWAY and nothing still queued: Envoy's
// codec returns the error before it hands on the frames the bad input
// made (ConnectionImpl::dispatch skips sendPendingFrames), and its codec
// client closes without flushing (CodecClient::close, NoFlush).
func (l *loop) h2UpProtocolError(c *h2up) {
	u := c.u
	if u.closed {
		return
	}
	u.pool.st.cxProtocolError.Inc()
	l.h2UpForget(c)
	l.closeUp(u)
	for _, s := range c.streams {
		l.h2uConnProtocolError(s)
	}
}

// h2UpFailed closes the connection (failed, closed by the upstream, or
// done): its streams without a response head are answered 503, the
// others reset.
func (l *loop) h2UpFailed(c *h2up) {
	u := c.u
	if u.closed {
		return
	}
	connecting, f := u.connecting, proxyroute.ConnectFailed(u.connErr, u.timedOut)
	l.h2UpForget(c)
	l.closeUp(u)
	for _, s := range c.streams {
		l.h2uConnFailed(s, connecting, f)
	}
}

// h2UpForget takes the connection out of its pool.
func (l *loop) h2UpForget(c *h2up) {
	p := c.u.pool
	for i, x := range p.h2 {
		if x == c.u {
			p.h2[i] = p.h2[len(p.h2)-1]
			p.h2[len(p.h2)-1] = nil
			p.h2 = p.h2[:len(p.h2)-1]
			break
		}
	}
}

// h2UpMaybeClose closes a connection without streams that takes no new
// ones (GOAWAY, IDs spent, its pool dropped).
func (l *loop) h2UpMaybeClose(c *h2up) {
	if len(c.streams) == 0 && (c.goAway || c.u.pool.gone) {
		l.h2UpFailed(c)
	}
}

// h2UpCloseIdle closes p's HTTP/2 connections without a stream for the
// cluster's idle timeout (GOAWAY NO_ERROR), as the goroutine path's
// Transport closes its idle ones: at the pool's next stream and at the
// loop's sweep of its pools.
func (l *loop) h2UpCloseIdle(p *clusterPool) {
	if p.h2Idle <= 0 {
		return
	}
	for i := 0; i < len(p.h2); i++ {
		c := p.h2[i].h2
		if len(c.streams) == 0 && !c.u.connecting && l.now-c.idleSince >= int64(p.h2Idle) {
			l.h2UpGoAway(c, http2.ErrCodeNo) // takes it out of p.h2
			i--
		}
	}
}

// h2UpDropPool closes the idle HTTP/2 connections of a pool being
// dropped; those with streams close after their last one.
func (l *loop) h2UpDropPool(p *clusterPool) {
	for _, u := range append([]*up(nil), p.h2...) {
		l.h2UpMaybeClose(u.h2)
	}
}

// h2UpResume sends what the windows now let of the blocked streams'
// request bodies.
func (l *loop) h2UpResume(c *h2up) {
	if len(c.blocked) == 0 {
		return
	}
	bl := c.blocked
	c.blocked = nil
	for _, s := range bl {
		s.blocked = false
		if !s.done {
			l.h2uPush(s)
		}
	}
}
