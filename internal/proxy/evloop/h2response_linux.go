package evloop

// A stream's response on the client's connection: the head as HEADERS
// (from an HTTP/1.1 upstream's head), the body as DATA frames as far as
// the stream's and the connection's windows let (the rest kept, the
// upstream paused, until a WINDOW_UPDATE), and its END_STREAM. Local
// replies are h2reply_linux.go's; an HTTP/2 upstream's response comes
// through h2uresponse_linux.go.

import (
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2ResponseHead sends the response head of u's exchange as HEADERS and
// sets how its body is framed (responseHead's work for a stream).
func (l *loop) h2ResponseHead(u *up, d *down, b []byte) bool {
	rs := &l.resp
	st := d.h2
	switch {
	case rs.bodyless(d.head):
		u.rstate = rsHead
	case rs.chunked:
		u.rstate, u.chunks = rsChunked, chunkScanner{}
		st.chunked, st.dc = true, chunkScanner{}
	case rs.hasLength:
		u.rstate, u.left = rsLength, rs.contentLength
	default:
		u.rstate = rsClose
	}
	u.keep = !rs.closeAfter && u.rstate != rsClose && d.state != dsBody
	c := st.c
	h2EncodeHead(c, rs, b)
	if rs.hasLength && (u.rstate == rsLength || u.rstate == rsHead) {
		// Parsed (and left out above) as HTTP/1.1's framing, and kept.
		_ = c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(rs.contentLength, 10)})
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: "server", Value: "envoy"})
	_ = c.enc.WriteField(hpack.HeaderField{Name: "x-envoy-upstream-service-time",
		Value: strconv.FormatInt((l.now-u.started)/int64(time.Millisecond), 10)})
	if !rs.hasDate {
		l.h2Date(c)
	}
	l.h2WriteHeaders(c, st.id, false)
	if d.logged() {
		l.logH2FromH1(d, u, b)
	}
	l.responseCounted(u, d, rs.status)
	return true
}

// h2EncodeHead starts c's header block with an HTTP/1.1 response head's
// status and fields, names lower-cased, hop-by-hop ones left out.
func h2EncodeHead(c *h2conn, rs *response, b []byte) {
	c.hbuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(rs.status)})
	var name [64]byte
	for i := range rs.lines {
		h := &rs.lines[i]
		if h.hop {
			continue
		}
		lower := append(name[:0], h.name.of(b)...)
		for j, ch := range lower {
			if ch >= 'A' && ch <= 'Z' {
				lower[j] = ch + 'a' - 'A'
			}
		}
		_ = c.enc.WriteField(hpack.HeaderField{Name: string(lower), Value: string(h.value.of(b))})
	}
}

// h2WriteHeaders writes the header block in c.hbuf as HEADERS and
// CONTINUATIONs, and empties c.hbuf (writeH2Headers).
func (l *loop) h2WriteHeaders(c *h2conn, id uint32, end bool) {
	writeH2Headers(c.fr, c.maxFrame, id, &c.hbuf, end)
}

// h2Body sends response body bytes (writeDown's work for a stream):
// chunked framing stripped, as DATA frames as far as the windows let,
// the rest kept until a WINDOW_UPDATE, with the upstream paused.
func (l *loop) h2Body(d *down, b []byte) {
	st := d.h2
	if st.gone {
		return
	}
	if !st.chunked {
		l.h2Queue(st, b)
	} else {
		for len(b) > 0 {
			if st.dc.state == csData {
				n := int(min(int64(len(b)), st.dc.left))
				_, _, _ = st.dc.scan(b[:n])
				l.h2Queue(st, b[:n])
				b = b[n:]
				continue
			}
			_, _, _ = st.dc.scan(b[:1]) // framing: checked by the upstream side's scanner already
			b = b[1:]
		}
	}
	l.h2Push(st)
}

// h2Queue adds b to what waits on st for the windows: the bytes already
// sent of its buffer make room first when b would not fit behind them,
// and past bufSize it takes one of bigBufSize (appendBuf).
func (l *loop) h2Queue(st *h2stream, b []byte) {
	if len(b) == 0 {
		return
	}
	if len(st.pending) == 0 {
		st.pending, st.pendOff = l.getBuf(), 0
	}
	if st.pendOff > 0 && len(st.pending)+len(b) > cap(st.pending) {
		st.pending = st.pending[:copy(st.pending, st.pending[st.pendOff:])]
		st.pendOff = 0
	}
	st.pending = l.appendBuf(st.pending, b)
}

// h2Push sends what the windows let of st's pending body, and its
// END_STREAM after it when the response is complete.
func (l *loop) h2Push(st *h2stream) {
	c := st.c
	if st.gone || c.d.closed {
		return
	}
	// Not past h2MaxOut waiting to be written: an HTTP/2 upstream is
	// credited as the bytes go (h2uConsumed), so the bound is what holds a
	// client that opens its windows and reads nothing; the frame that
	// crosses it is bounded too (h2Out.dataMax).
	for len(st.pending) > 0 && st.window > 0 && c.sendWindow > 0 && c.out.len() <= h2MaxOut {
		p := st.pending[st.pendOff:]
		n := min(len(p), int(min(st.window, c.sendWindow)), c.out.dataMax(c.maxFrame))
		end := st.endPending && st.trailers == nil && n == len(p)
		_ = c.fr.WriteData(st.id, end, p[:n])
		if st.us != nil {
			l.h2uConsumed(st.us, n)
		}
		st.last = l.now
		st.window -= int64(n)
		c.sendWindow -= int64(n)
		if n == len(p) {
			l.putBuf(st.pending) // whole: its capacity kept (pendOff)
			st.pending, st.pendOff = nil, 0
			if end {
				l.h2Sent(st)
				return
			}
			break
		}
		st.pendOff += n
	}
	if len(st.pending) == 0 && st.endPending {
		if st.trailers != nil {
			c.hbuf.Reset() // encoded as they go out, after the body
			for _, hf := range st.trailers {
				_ = c.enc.WriteField(hf)
			}
			st.trailers = nil
			l.h2WriteHeaders(c, st.id, true)
		} else {
			_ = c.fr.WriteData(st.id, true, nil)
		}
		l.h2Sent(st)
		return
	}
	full := c.d.outOff < len(c.d.out) && c.out.len() > h2MaxOut
	if len(st.pending) > 0 || full {
		st.sd.wantOut = true // processUp pauses the upstream
		if !st.blocked {
			st.blocked = true
			c.blocked = append(c.blocked, st)
			if at := c.d.gen.stallDeadline(st); c.d.tm.idx == 0 || at < c.d.tm.at {
				l.setTimer(c.d, at) // its idle timeout (arm's work, without h2Deadline's walk)
			}
		}
	} else {
		st.sd.wantOut = false
	}
}

// h2Resume pushes the blocked streams' bodies after a WINDOW_UPDATE or a
// write, and resumes their upstreams once they have nothing waiting.
func (l *loop) h2Resume(c *h2conn) {
	if len(c.blocked) == 0 {
		return
	}
	bl := c.blocked
	c.blocked = nil
	for _, st := range bl {
		st.blocked = false
		if st.gone {
			continue
		}
		l.h2Push(st)
		sd := st.sd
		if st.blocked || sd.closed {
			continue
		}
		sd.wantOut = false
		if u := sd.u; u != nil && u.pausedIn {
			u.pausedIn = false
			l.watchUp(u)
			l.processUp(u)
		}
	}
}

// h2Sent: END_STREAM is out, the request's time recorded (rqTimed) unless
// st is uncounted, or gone (its end was sent and recorded already: once
// only). A client still sending its body is told to stop (RST_STREAM
// NO_ERROR, RFC 9113 8.1).
func (l *loop) h2Sent(st *h2stream) {
	if st.gone {
		return
	}
	if !st.uncounted {
		l.rqTimed(st.sd)
	}
	if !st.reqEnded {
		_ = st.c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	l.h2EndStream(st)
}

// h2Complete: the stream's response is complete (flushDown's work for a
// stream): its END_STREAM goes after the body still waiting, and the
// request is done on the loop's side.
func (l *loop) h2Complete(d *down) {
	st := d.h2
	if d.u != nil || d.state != dsHead || d.rs.waiting || d.closed {
		return
	}
	l.h2Done(d)
	if !st.gone {
		if st.ended {
			l.h2Sent(st)
			return
		}
		st.endPending, st.endAt = true, l.now
		l.h2Push(st)
		if st.blocked {
			// Blocked before its end came: its deadline is now the flush
			// timeout's, which may come before the stream idle one.
			if c := st.c.d; c != nil && (c.tm.idx == 0 || c.gen.stallDeadline(st) < c.tm.at) {
				l.setTimer(c, c.gen.stallDeadline(st))
			}
		}
	}
}
