package evloop

// h2c (HTTP/2 with prior knowledge) on the loops, step 1: the connection.
// A client connection whose first bytes are the h2c preface stays on its
// loop when Config.H2 is set and the Router serves HTTP/2 there
// (H2Router): its frames are read from the connection's buffer with
// golang.org/x/net/http2's Framer (HPACK decoded by its hpack package,
// encoded by hpackEnc), every
// stream becomes a request the loop forwards over HTTP/1.1 as it forwards
// its HTTP/1.1 requests (h2stream_linux.go), and the frames a loop
// iteration produces for the connection go out in one write at the end of
// the iteration (flushH2). Decided per connection at the preface: HPACK
// state ties a connection's streams together, so none of them can be
// handed to the goroutine path alone.

import (
	"bytes"
	"errors"
	"slices"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

const (
	// h2Window is the stream window the loops give an HTTP/1.1 client's
	// request to an HTTP/2 upstream (h1h2_linux.go): how much of its body
	// they hold. HTTP/2 peers get their H2Windows (route.DefaultH2Windows
	// unless set).
	h2Window = proxyroute.DefaultH2StreamWindow
	// h2PeerWindow is RFC 9113's initial window (65,535): a peer's, on
	// the connection and each stream, until its SETTINGS and
	// WINDOW_UPDATEs say more.
	h2PeerWindow = 65535
	// h2MaxOut is how many bytes a connection's output may hold before its
	// streams' upstreams are paused, and its input, until the socket takes
	// them: a client that sends frames answered by frames (PING,
	// SETTINGS: CVE-2019-9512, -9515) and reads nothing holds at most
	// this much of the loop's memory.
	h2MaxOut = 256 << 10
	// h2MaxFrame is the SETTINGS_MAX_FRAME_SIZE the loops keep (RFC
	// 9113's initial value: they do not advertise another).
	h2MaxFrame = 16384
)

// h2conn is an HTTP/2 connection's state; the connection's down holds it.
type h2conn struct {
	d          *down
	fr         *http2.Framer
	heads      *h2Heads     // decodes fr's header blocks
	rd         bytes.Reader // the frame being read, from d.in
	wr         h2writer     // frames written go to out (h2OutAdd)
	out        h2Out        // d.out, then buffers of bigBufSize past it (h2out_linux.go)
	hbuf       bytes.Buffer // a header block being encoded
	enc        *hpackEnc
	streams    map[uint32]*h2stream
	lastID     uint32 // the highest stream the client opened
	maxStreams uint32
	preface    bool // the client preface's last 6 bytes were read
	sendWindow int64
	initWindow int32  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   uint32 // the client's SETTINGS_MAX_FRAME_SIZE
	recvUnack  int64  // connection-level bytes received, not credited yet
	goAway     bool   // GOAWAY sent: no new stream
	peerAway   bool   // the client sent GOAWAY
	dirty      bool   // in loop.h2dirty
	blocked    []*h2stream
	settled    bool // the client acknowledged our SETTINGS
	set        H2Settings
	win        proxyroute.H2Windows // what the loops give the client (Windows.OrDefault)
	recvAvail  int64                // what the client may still send on the connection
	ended      int64                // streams ended, premature of them reset early
	premature  int64
	outPaused  bool // input paused until the output is out (h2MaxOut)
	// cut holds the last streams closed while the client was still
	// sending (reset, or answered early): its late frames on them, its
	// trailers say, are ignored (RFC 9113 5.1), not a connection error.
	cut     [16]uint32
	cutN    int
	reading bool // in h2Input
	heavy   bool // a frame over h2KeepFrame, or streams over h2KeepStreams, since lightenH2
}

// h2writer appends the framer's output to the connection's pending
// bytes.
type h2writer struct {
	c *h2conn
	l *loop
}

func (w h2writer) Write(b []byte) (int, error) {
	w.l.h2OutAdd(&w.c.out, b)
	if len(b) > h2KeepFrame {
		w.c.heavy = true // the Framer's write buffer grew (lightenH2)
	}
	w.l.h2Dirty(w.c)
	return len(b), nil
}

// startH2 makes d, whose bytes begin with the h2c preface's first line
// (head), an HTTP/2 connection on the loop; false when the loops do not
// serve HTTP/2 for it (the caller hands it off as before).
func (l *loop) startH2(d *down, head []byte) bool {
	if !l.srv.cfg.H2 || d.requests > 0 || d.h2c != nil { // over TLS too (h2tls_linux.go)
		return false
	}
	hr, ok := d.gen.router.(H2Router)
	if !ok {
		return false
	}
	set, ok := hr.H2()
	if !ok {
		return false
	}
	maxStreams, maxList := set.MaxStreams, set.MaxHeaderList
	win := set.Windows.OrDefault()
	c := &h2conn{d: d, streams: map[uint32]*h2stream{}, maxStreams: maxStreams, sendWindow: h2PeerWindow,
		initWindow: h2PeerWindow, maxFrame: 16384, set: set, win: win, recvAvail: int64(win.Conn)}
	c.wr, c.out = h2writer{c, l}, h2OutTo(&d.out, &d.outOff)
	c.fr = newH2Framer(c.wr, &c.rd, maxList)
	c.heads = newH2Heads(maxList)
	c.enc = newHPACKEnc(&c.hbuf)
	d.h2c = c
	d.off += len(head)
	d.headStart = 0
	l.srv.h2Conns.Add(1)
	d.gen.st.cxHTTP2.Inc()
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxList},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: win.Stream},
	)
	h2ConnWindow(c.fr, win) // recvAvail is win.Conn already: more than the client may use before it
	return true
}

// h2ConnWindow raises the connection's window from RFC 9113's 65,535
// to w.Conn, right after the first SETTINGS (none at 65,535: an
// increment of 0 is a protocol error).
//
// Windows are credit, not memory: what a stream or connection holds is
// what its peer sent and the loops did not pass on yet. A client
// connection's window is credited as bytes are passed on (held), so it
// holds at most w.Conn of request bodies, each stream at most w.Stream
// of it: with weft's windows (1 MiB, 4 MiB) three streams whose
// upstreams take nothing leave the others a stream's window still. An
// upstream connection's is credited on receipt (flushH2Up), so it holds
// at most w.Stream of each open stream's response.
func h2ConnWindow(fr *http2.Framer, w proxyroute.H2Windows) {
	if w.Conn > h2PeerWindow {
		_ = fr.WriteWindowUpdate(0, w.Conn-h2PeerWindow)
	}
}

// h2StreamRefresh and h2ConnRefresh are how many bytes of a stream's or
// the connection's window (w) the loops let their peer use up before
// they credit it back with a WINDOW_UPDATE, as nghttp2 (Envoy's codec)
// waits for half its window: a response or request body under it costs
// the peer no stream WINDOW_UPDATE and the loops no write for it (the
// connection's comes once per h2ConnRefresh bytes passed on, whatever
// the streams; padding counts as passed on when it arrives). The
// connection's is half the smaller window, half a stream's by default
// (512 KiB, as before the connection's window grew): a stream is never
// kept waiting on the connection's credit for more than its own.
// Crediting every read instead sent an upstream two WINDOW_UPDATEs, one
// more write, per response (docs/bench/proxy.md, "Round 26:
// WINDOW_UPDATE at half the window").
func h2StreamRefresh(w proxyroute.H2Windows) int64 { return int64(w.Stream) / 2 }

func h2ConnRefresh(w proxyroute.H2Windows) int64 { return int64(min(w.Stream, w.Conn)) / 2 }

// h2Dirty queues c for the write at the end of the loop's iteration.
func (l *loop) h2Dirty(c *h2conn) {
	if !c.dirty {
		c.dirty = true
		l.h2dirty = append(l.h2dirty, c)
	}
}

// flushH2 writes what each connection's frames of this iteration added,
// one write per connection, and resumes the streams paused for room; the
// upstream HTTP/2 connections' frames first, and again when resuming
// streams credited their upstreams (h2uConsumed), until none is left.
func (l *loop) flushH2() {
	for len(l.h2dirty) > 0 || len(l.h2updirty) > 0 {
		if len(l.h2updirty) > 0 {
			l.flushH2Up()
		}
		for i := 0; i < len(l.h2dirty); i++ {
			c := l.h2dirty[i]
			c.dirty = false
			d := c.d
			if d.closed {
				continue
			}
			if r := h2ConnRefresh(c.win); c.recvUnack >= r && !d.closeAfter {
				if n := c.recvUnack - c.held(); n >= r {
					_ = c.fr.WriteWindowUpdate(0, uint32(n))
					c.recvAvail += n
					c.recvUnack -= n
				}
			}
			l.flushDown(d)
			if d.closed {
				continue
			}
			l.h2Resume(c)
		}
		clear(l.h2dirty)
		l.h2dirty = l.h2dirty[:0]
	}
}

// held is what c's streams received of their request bodies and did not
// pass on yet: the part of the connection's window not credited back
// (flushH2). Counted when recvUnack reaches h2ConnRefresh, not kept up to
// date: a stream's bytes are its unpaid ones while any of them wait
// (for an HTTP/2 upstream, unpaid is exactly those waiting: h2uCredit);
// a stream that ended holds none (its buffers went with it). As
// Envoy's codec consumes a stream's bytes, which credits the
// connection's window as much as the stream's, only once they are
// passed on (ConnectionImpl::onData, MarkDataConsumedForStream, deferred
// while the stream is read-disabled), and x/net's server credits both
// as its handler reads the body.
func (c *h2conn) held() int64 {
	var n int64
	for _, st := range c.streams {
		sd := st.sd
		switch {
		case st.gone || sd.closed:
		case st.us != nil, st.waiting(), sd.in != nil && sd.off < len(sd.in):
			n += st.unpaid
		}
	}
	return n
}

// h2Drained: the connection's output is all out (flushDown). The
// streams paused for room go on, and so does the input paused for it.
func (l *loop) h2Drained(c *h2conn) {
	l.h2Resume(c)
	d := c.d
	if !c.outPaused || c.reading || d.closed {
		return
	}
	c.outPaused = false
	d.pausedIn = false
	l.watchDown(d)
	if d.in != nil {
		l.h2Input(d)
	}
}

// cutOff notes that id closed before the client's END_STREAM.
func (c *h2conn) cutOff(id uint32) {
	c.cut[c.cutN%len(c.cut)] = id
	c.cutN++
}

// wasCut reports whether id is one of the last streams cutOff noted.
func (c *h2conn) wasCut(id uint32) bool {
	return slices.Contains(c.cut[:], id)
}

// h2Input reads the complete frames buffered in d.in.
func (l *loop) h2Input(d *down) {
	c := d.h2c
	c.reading = true
	defer func() { c.reading = false }()
	for !d.closed && !d.draining && !c.goAwayDone() {
		if c.out.len() > h2MaxOut {
			// The client does not read what its frames make us write:
			// its next frames wait until that is out (h2Drained).
			c.outPaused = true
			if !d.pausedIn {
				d.pausedIn = true
				l.watchDown(d)
			}
			break
		}
		b := d.in[d.off:]
		if !c.preface {
			rest := http2.ClientPreface[len(h2cPreface+"\r\n"):] // after the head dispatch parsed
			if len(b) < len(rest) {
				break
			}
			if string(b[:len(rest)]) != rest {
				l.h2Fail(c, http2.ErrCodeProtocol)
				return
			}
			d.off += len(rest)
			c.preface = true
			continue
		}
		n := h2FrameLen(b, c.blockMax())
		if n == errFrameSize {
			l.h2Fail(c, http2.ErrCodeFrameSize)
			return
		}
		if n < 0 {
			break
		}
		c.rd.Reset(b[:n])
		if n > h2KeepFrame {
			c.heavy = true // the Framer's read buffer grows (lightenH2)
		}
		f, err := c.heads.readFrame(c.fr)
		d.off += n // d.last is not moved: control frames keep no connection (h2DataIn, h2Headers)
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				l.h2StreamError(c, se.StreamID, se.Code)
				continue
			case errors.As(err, &ce):
				l.h2Fail(c, http2.ErrCode(ce))
			case errors.Is(err, http2.ErrFrameTooLarge):
				l.h2Fail(c, http2.ErrCodeFrameSize)
			default:
				l.h2Fail(c, http2.ErrCodeProtocol)
			}
			return
		}
		l.h2Frame(c, f)
	}
	// The frames read are done with (a stream keeps what it needs of
	// its HEADERS).
	c.heads.done(&c.rd)
	l.releaseIn(d)
	d.in, d.off = l.shrinkIn(d.in, d.off)
}

// shrinkIn moves what is left in a connection's read buffer in past off
// (the start of a frame), when it fits a pooled buffer with room to
// spare, out of a buffer grown for a header block (readDown and
// h2conn.blockMax, h2UpRead and h2UpBlockMax), and returns the buffer and
// offset to keep: a connection holds a grown buffer only while a block
// needs it, not for its life. A buffer TLS's Feed grew by a few KiB for a
// record is left as it is.
func (l *loop) shrinkIn(in []byte, off int) ([]byte, int) {
	if in == nil || cap(in) <= 2*bufSize || len(in)-off > bufSize/2 {
		return in, off
	}
	return append(l.getBuf(), in[off:]...), 0 // the grown one is not pooled (putBuf)
}

// goAwayDone: the connection failed (GOAWAY with an error sent): nothing
// more is read.
func (c *h2conn) goAwayDone() bool { return c.d.closeAfter }

// h2FrameLen is the length of the frame (with its CONTINUATIONs) at b's
// start when it is all buffered, -1 when not yet, and errFrameSize when
// one of its frames announces more than h2MaxFrame: refused as soon as
// its 9-byte header is in, not waited for. A header block is waited for
// up to max bytes, frame headers included, past which the Framer refuses
// it (h2conn.blockMax, h2UpMaxIn).
func h2FrameLen(b []byte, max int) int {
	n := 0
	for {
		if len(b)-n < 9 {
			return -1
		}
		size := int(b[n])<<16 | int(b[n+1])<<8 | int(b[n+2])
		typ, flags := http2.FrameType(b[n+3]), http2.Flags(b[n+4])
		if size > h2MaxFrame {
			return errFrameSize
		}
		if len(b)-n < 9+size {
			return -1
		}
		n += 9 + size
		if (typ != http2.FrameHeaders && typ != http2.FrameContinuation && typ != http2.FramePushPromise) ||
			flags.Has(http2.FlagHeadersEndHeaders) {
			return n
		}
		if n > max {
			return n // the Framer refuses it
		}
	}
}

// blockMax is how much of a header block (its frames, headers
// included) the connection waits for before it decodes it: twice the
// header list size it advertises, as x/net's Framer reads a block frame
// by frame until a fragment is over twice what is left of the list. A
// block within the list is read whole however its client cut it into
// frames (of 9 bytes or more), and answered by h2Heads as x/net's server
// answers it (a stream reset over the limits, 431 past the list); one
// larger fails the connection, as it fails it there.
func (c *h2conn) blockMax() int { return 2 * int(c.fr.MaxHeaderListSize) }

// errFrameSize is h2FrameLen's answer for a frame over h2MaxFrame.
const errFrameSize = -2

// h2Frame acts on one frame.
func (l *loop) h2Frame(c *h2conn, f http2.Frame) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			c.settled = true
			return
		}
		shift := func(delta int64) bool {
			for _, st := range c.streams {
				if st.window += delta; st.window > 1<<31-1 {
					return false
				}
			}
			return true
		}
		// The client's SETTINGS_MAX_CONCURRENT_STREAMS limits streams the
		// server would push; the loops push none, so it is not kept.
		if code, ok := applyH2Settings(f, h2Peer{&c.initWindow, &c.maxFrame, nil, c.enc}, shift); !ok {
			l.h2Fail(c, code)
			return
		}
		_ = c.fr.WriteSettingsAck()
		l.h2Resume(c)
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = c.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
			if c.sendWindow > 1<<31-1 {
				l.h2Fail(c, http2.ErrCodeFlowControl)
				return
			}
			l.h2Resume(c)
			return
		}
		if st := c.streams[f.StreamID]; st != nil {
			st.window += int64(f.Increment)
			if st.window > 1<<31-1 {
				l.h2StreamError(c, f.StreamID, http2.ErrCodeFlowControl)
				return
			}
			l.h2Resume(c)
		} else if f.StreamID > c.lastID {
			l.h2Fail(c, http2.ErrCodeProtocol) // an idle stream
		}
	case *http2.RSTStreamFrame:
		if f.StreamID > c.lastID {
			l.h2Fail(c, http2.ErrCodeProtocol)
			return
		}
		if st := c.streams[f.StreamID]; st != nil {
			st.peerReset = true
			l.streamGone(st.sd, proxyroute.DetailsH2RemoteReset)
			l.h2EndStream(st)
		}
	case *http2.GoAwayFrame:
		c.peerAway = true
		l.h2MaybeClose(c)
	case *http2.MetaHeadersFrame:
		l.h2Headers(c, f)
	case *http2.DataFrame:
		l.h2DataIn(c, f)
	case *http2.PushPromiseFrame:
		l.h2Fail(c, http2.ErrCodeProtocol) // a client does not push
	}
}

// h2StreamError resets one stream (RST_STREAM code).
func (l *loop) h2StreamError(c *h2conn, id uint32, code http2.ErrCode) {
	if id > c.lastID && id&1 == 1 {
		c.lastID = id
	}
	_ = c.fr.WriteRSTStream(id, code)
	if st := c.streams[id]; st != nil {
		st.reset = true
		l.h2EndStream(st)
	}
}

// h2Fail ends the connection for a connection error: GOAWAY with code,
// the streams reset, then the connection drained and closed once the
// frame is out.
func (l *loop) h2Fail(c *h2conn, code http2.ErrCode) {
	if c.d.closeAfter {
		return
	}
	c.d.gen.st.cxProtocolError.Inc()
	l.h2GoAway(c, code, true)
	for _, st := range c.streams {
		st.reset = true
		l.h2EndStream(st)
	}
}

// h2Ended counts a stream's end for the premature-reset heuristic, and
// sends a connection whose clients reset too many streams away: GOAWAY
// NO_ERROR, its streams reset, the connection closed once that is out.
func (l *loop) h2Ended(c *h2conn, st *h2stream) {
	c.ended++
	if !st.peerReset || l.now-st.start >= int64(c.set.ResetLifetime) {
		return
	}
	c.premature++
	if c.d.closeAfter || c.set.TooManyResets == nil || !c.set.TooManyResets(c.ended, c.premature) {
		return
	}
	c.d.gen.st.prematureResets.Inc()
	l.h2GoAway(c, http2.ErrCodeNo, true)
	for _, o := range c.streams {
		_ = c.fr.WriteRSTStream(o.id, http2.ErrCodeCancel)
		o.reset = true
		l.h2EndStream(o)
	}
}

// h2GoAway sends GOAWAY with code: once for NO_ERROR, again for an
// error after a graceful one. With close, the connection is closed once
// that is out (no stream is read any more: goAwayDone).
func (l *loop) h2GoAway(c *h2conn, code http2.ErrCode, close bool) {
	if !c.goAway || code != http2.ErrCodeNo {
		_ = c.fr.WriteGoAway(c.lastID, code, nil)
		c.goAway = true
	}
	if close {
		c.d.closeAfter = true
		l.h2Dirty(c)
	}
}

// h2Drain starts a graceful close (a listener drain): GOAWAY, the streams
// in flight finish, then the connection closes.
func (l *loop) h2Drain(d *down) {
	c := d.h2c
	if c.goAway {
		return
	}
	d.gen.st.cxDrainClose.Inc()
	l.h2GoAway(c, http2.ErrCodeNo, false)
	l.h2MaybeClose(c)
}

// h2MaybeClose closes, once its last frames are out, a connection that is
// going away and has no stream left.
func (l *loop) h2MaybeClose(c *h2conn) {
	if (c.goAway || c.peerAway) && len(c.streams) == 0 {
		l.h2GoAway(c, http2.ErrCodeNo, true)
	}
}

// h2Forget ends the streams of a connection that closes.
func (l *loop) h2Forget(d *down) {
	c := d.h2c
	for _, st := range c.streams {
		st.reset = true
		l.h2EndStream(st)
	}
	l.h2OutRelease(&c.out)
}

// H2Conns is the number of h2c connections the loops served.
func (s *Server) H2Conns() int64 { return s.h2Conns.Load() }
