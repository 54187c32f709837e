package evloop

// HTTP/1.1 requests to HTTP/2 clusters on the loops: a request parsed on
// a client's HTTP/1.1 connection whose Target names an HTTP/2 cluster
// (Config.H2, the --h2loops switch) goes out as a stream of the loop's
// HTTP/2 connections to the host (h2up_linux.go), plaintext or over TLS
// (h2tls_linux.go), as an h2c client's stream does (h2ustream_linux.go). The request's side of that stream is
// an h2stream with no client connection (down.hb): its fields are made
// from the HTTP/1.1 head (hop-by-hop lines dropped, :authority from
// Host, TE only as "trailers"), its body is the request's, content-length
// or chunked, without the chunk framing, read from the client only as
// far as the upstream's windows take it. The response's HEADERS become an
// HTTP/1.1 head (chunked when no content-length came, as the goroutine
// path's server writes it), its DATA the body (credited upstream once
// written to the client), its trailers the last chunk's; an upstream
// reset before the head is the h2c streams' 503, after it the client's
// connection is closed (the body cannot be completed). Retries are the
// h2c streams' (h2uretry_linux.go).

import (
	"bytes"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h1h2 is an HTTP/1.1 request's side of an upstream HTTP/2 stream.
type h1h2 struct {
	st      h2stream // what the upstream stream reads of its request; st.c is nil
	chunked bool     // the response goes down chunked
	http10  bool     // an HTTP/1.0 request: a body without a length ends with the connection
	status  int      // the response's, once its head went down
	owed    int      // response bytes waiting in d.out, credited upstream once written
	// left is what the response's content-length still announces, -1
	// without one; bodyless: a response to HEAD, a 204 or a 304.
	left     int64
	bodyless bool
	inBody   bool // h1uBody is feeding the stream (h1uCredit must not re-enter it)
}

// ustream is the h2stream an upstream HTTP/2 stream serves for d: an h2c
// client's stream, an HTTP/1.1 request's (hb), or nil.
func (d *down) ustream() *h2stream {
	if d.h2 != nil {
		return d.h2
	}
	if d.hb != nil {
		return &d.hb.st
	}
	return nil
}

// h1uDispatch is dispatch's work for an HTTP/1.1 request routed to an
// HTTP/2 cluster: its fields from the head, weft's added, the body's
// framing noted, then its first attempt. What the client sends of the
// body is fed to the stream by process (h1uBody).
func (l *loop) h1uDispatch(d *down, pool *clusterPool, t *Target, r *request, head []byte) {
	hb := &h1h2{http10: r.minor == 0}
	st := &hb.st
	st.sd, st.declared, st.toH2, st.start, st.last = d, -1, true, l.now, l.now
	authority := t.Authority
	if authority == "" {
		authority = string(r.host.of(head))
	}
	if authority == "" {
		authority = t.Host.String() // HTTP/1.0 without Host: the host's address, as Go's Transport sends it
	}
	target := r.target.of(head)
	path := string(target)
	if t.Path != "" {
		q := bytes.IndexByte(target, '?')
		if q < 0 {
			q = len(target)
		}
		path = t.Path + string(target[q:])
	}
	fields := make([]hpack.HeaderField, 0, len(r.lines)+5)
	fields = append(fields, hpack.HeaderField{Name: ":method", Value: string(r.method.of(head))},
		hpack.HeaderField{Name: ":scheme", Value: h1Scheme(d, r, head)}, hpack.HeaderField{Name: ":authority", Value: authority},
		hpack.HeaderField{Name: ":path", Value: path})
	var name [64]byte
	mut := l.mut.reset(t.Headers)
	for i := range r.lines {
		h := &r.lines[i]
		n := h.name.of(head)
		if h.hop || equalFold(n, "host") || equalFold(n, "transfer-encoding") || equalFold(n, "content-length") ||
			t.OriginalPath != "" && equalFold(n, "x-envoy-original-path") || t.Headers != nil && mut.take(n, h.value.of(head)) {
			continue // content-length: written below, even when Connection named it
		}
		lower := append(name[:0], n...)
		for j, ch := range lower {
			if ch >= 'A' && ch <= 'Z' {
				lower[j] = ch + 'a' - 'A'
			}
		}
		fields = append(fields, hpack.HeaderField{Name: string(lower), Value: string(h.value.of(head))})
	}
	if r.teTrailers {
		fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	mut.result(func(_, lower string, f *mutField) {
		fields = append(fields, hpack.HeaderField{Name: lower, Value: f.String()})
	})
	if r.hasLength {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(r.contentLength, 10)})
	}
	if t.OriginalPath != "" {
		fields = append(fields, hpack.HeaderField{Name: "x-envoy-original-path", Value: t.OriginalPath})
	}
	st.head = http2.MetaHeadersFrame{Fields: fields}
	st.hf = &st.head
	l.h2uExtra(d, st, r)
	d.bodyLeft, d.chunked, d.chunks = 0, r.chunked, chunkScanner{}
	if r.hasLength {
		d.bodyLeft = r.contentLength
	}
	more := d.chunked || d.bodyLeft > 0
	st.reqEnded = !more
	d.bodyIn = more
	d.hb = hb
	pool.h2Idle, pool.h2Win = t.IdleTimeout, t.H2Windows
	if l.h2uOpen(d, pool, t.Cluster, t.Tag) {
		l.retryNow(d)
	}
}

// h1Scheme is the :scheme an HTTP/1.1 request goes to an HTTP/2 upstream
// with, as Envoy gives it (route.H1Scheme): its x-forwarded-proto's when
// valid, else the connection's (request.h1Scheme).
func h1Scheme(d *down, r *request, head []byte) string { return r.h1Scheme(head, d.overTLS()) }

// h1uBody feeds the request body the client sent to its upstream stream,
// as far as the upstream's windows take it (the stream's pending bytes
// stay under h2Window; past that the client is not read until
// h1uCredit); false when process should stop.
func (l *loop) h1uBody(d *down) bool {
	hb := d.hb
	st := &hb.st
	if st.us == nil {
		if d.rs.waiting {
			// A retry's back-off: the body waits in d.in for the next
			// attempt, which reads the client on (h2uOpen, h1uCredit).
			l.holdBody(d)
		}
		return false
	}
	b := d.in[d.off:]
	if len(b) == 0 {
		l.releaseIn(d)
		return false
	}
	if st.unpaid >= h2Window {
		if !d.pausedIn {
			d.pausedIn = true
			l.watchDown(d)
		}
		return false
	}
	b = b[:min(len(b), int(h2Window-st.unpaid))]
	hb.inBody = true
	defer func() { hb.inBody = false }()
	if !d.chunked {
		take := int(min(int64(len(b)), d.bodyLeft))
		d.bodyLeft -= int64(take)
		d.off += take
		d.received(take, 0)
		st.unpaid += int64(take)
		done := d.bodyLeft == 0
		l.h2uBody(st, b[:take], done)
		return !d.closed
	}
	for len(b) > 0 && d.state == dsBody && d.hb == hb && !d.closed {
		if d.chunks.state == csData {
			n := int(min(int64(len(b)), d.chunks.left))
			data := d.chunks.data
			_, _, _ = d.chunks.scan(b[:n])
			d.off += n
			d.received(n, data)
			st.unpaid += int64(n)
			l.h2uBody(st, b[:n], false)
			b = b[n:]
			continue
		}
		// Framing: a byte at a time, so that data is told apart.
		_, done, err := d.chunks.scan(b[:1])
		if err != nil {
			l.badBody(d)
			return false
		}
		d.off++
		b = b[1:]
		if done {
			l.h2uBody(st, nil, true)
		}
	}
	return !d.closed
}

// h1uCredit: n bytes of the request body left for the upstream
// (h2uCredit's work for an HTTP/1.1 request): a client paused on the
// stream's window is read again.
func (l *loop) h1uCredit(st *h2stream) {
	d := st.sd
	if st.unpaid >= h2Window || !d.pausedIn || d.closed || d.draining {
		return
	}
	d.pausedIn = false
	l.watchDown(d)
	if !d.hb.inBody {
		l.process(d)
	}
}

// h1uHead writes the response head of an HTTP/2 upstream's HEADERS
// (status, the response's fields but the connection-specific ones) to
// the HTTP/1.1 client, and how its body is framed, as the goroutine
// path's writer (httpconn's h1Writer) frames it: as received with a
// content-length unless trailers are declared, none for a bodiless
// response (a HEAD answer without length announced chunked:
// route.HeadChunked), chunked otherwise (or until the connection closes for
// HTTP/1.0).
func (l *loop) h1uHead(s *h2ustream, f *http2.MetaHeadersFrame, status int) {
	d := s.st.sd
	hb := d.hb
	hasLength, hasTrailer, hasDate, length := false, false, false, int64(-1)
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "date":
			hasDate = true
		case "content-length":
			// One, valid: h2uHeaders failed the connection otherwise.
			hasLength, length = true, s.left
		case "trailer":
			hasTrailer = true
		}
	}
	s.gotHead = true
	s.x.status, hb.status = status, status
	bodyless := d.head || status == 204 || status == 304
	// As the goroutine path's writer frames it: declared trailers need
	// chunks, a 204 has no length.
	dropLength := proxyroute.DropsLength(status) || hasTrailer && !bodyless
	hb.bodyless, hb.left = bodyless, -1
	if hasLength && !dropLength && !bodyless {
		hb.left = length
	}
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	hs := len(d.out)
	o := appendStatusLine(d.out, status)
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
			"server", "x-envoy-upstream-service-time":
			continue // connection-specific, or written again by the proxy
		case "content-length":
			if dropLength {
				continue
			}
		}
		o = appendField(o, hf.Name, hf.Value)
	}
	switch {
	case bodyless:
		if (!hasLength || dropLength) && !hb.http10 && proxyroute.HeadChunked(d.head, status) {
			o = append(o, "transfer-encoding: chunked\r\n"...) // announced, no body (route.HeadChunked)
		}
	case f.StreamEnded() && !hasTrailer:
		if !hasLength {
			o = append(o, "content-length: 0\r\n"...) // as the goroutine path writes an empty body's
		}
	case hasLength && !dropLength:
	case hb.http10:
		d.closeAfter = true
	default:
		hb.chunked = true
		o = append(o, "transfer-encoding: chunked\r\n"...)
	}
	if d.state == dsBody {
		// The response came before the whole body: the rest of the body
		// cannot be told from the next request.
		d.closeAfter = true
	}
	o = append(o, "server: envoy\r\nx-envoy-upstream-service-time: "...)
	o = strconv.AppendInt(o, (l.now-s.x.started)/int64(time.Millisecond), 10)
	o = append(o, "\r\n"...)
	if d.closeAfter {
		o = append(o, "connection: close\r\n"...)
	}
	logged := len(o) // the head the goroutine path logs: without the date its writer adds
	if !hasDate {
		o = l.appendDate(o)
	}
	d.out = append(o, "\r\n"...)
	l.logResponse(d, d.out[hs:logged])
	l.responseCounted(&s.x, d, status)
	if f.StreamEnded() {
		l.h2uFinish(s, true)
		return
	}
	l.flushDown(d)
}

// appendStatusLine appends an HTTP/1.1 status line for status.
func appendStatusLine(o []byte, status int) []byte {
	o = append(o, "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, http.StatusText(status)...)
	return append(o, "\r\n"...)
}

// appendField appends a header line.
func appendField(o []byte, name, value string) []byte {
	o = append(o, name...)
	o = append(o, ": "...)
	o = append(o, value...)
	return append(o, "\r\n"...)
}

// h1uData writes a response DATA frame's bytes to the HTTP/1.1 client
// (a chunk when chunked), and credits them upstream once written.
func (l *loop) h1uData(s *h2ustream, data []byte, end bool) {
	d := s.st.sd
	hb := d.hb
	if hb.bodyless && len(data) > 0 {
		l.h2uConsumed(s, len(data)) // a body where none may be: not relayed
		data = nil
	}
	if hb.left >= 0 {
		// Never past it: h2uData reset the stream before.
		hb.left -= int64(len(data))
	}
	if len(data) > 0 {
		d.logSent(int64(len(data)))
		if d.out == nil {
			d.out, d.outOff = l.getBuf(), 0
		}
		if hb.chunked {
			d.out = strconv.AppendInt(d.out, int64(len(data)), 16)
			d.out = append(d.out, "\r\n"...)
		}
		d.out = l.appendBuf(d.out, data) // a full-size frame and its chunk's size line overflow one of bufSize
		if hb.chunked {
			d.out = append(d.out, "\r\n"...)
		}
		hb.owed += len(data)
	}
	if end {
		l.h2uFinish(s, false)
		return
	}
	l.flushDown(d) // credits what went out (h1uFlushed)
}

// h1uFlushed: the client's pending bytes are written (flushDown's hook):
// the response bytes among them are credited to the upstream stream.
func (l *loop) h1uFlushed(d *down) {
	hb := d.hb
	if hb.owed == 0 {
		return
	}
	if s := hb.st.us; s != nil {
		l.h2uConsumed(s, hb.owed)
	}
	hb.owed = 0
}

// h1uEnd: the upstream's response is complete (h2uFinish's work for an
// HTTP/1.1 request, its record logged): the last chunk with the
// trailers, then the next request, as finish does for HTTP/1.1
// upstreams.
func (l *loop) h1uEnd(d *down) {
	hb := d.hb
	st := &hb.st
	if hb.chunked {
		if d.out == nil {
			d.out, d.outOff = l.getBuf(), 0
		}
		d.out = append(d.out, "0\r\n"...)
		for _, hf := range st.trailers {
			d.out = append(d.out, hf.Name...)
			d.out = append(d.out, ": "...)
			d.out = append(d.out, hf.Value...)
			d.out = append(d.out, "\r\n"...)
		}
		d.out = append(d.out, "\r\n"...)
	}
	if !st.reqEnded {
		d.closeAfter = true // the rest of the body cannot be told from the next request
	}
	if hb.left > 0 {
		d.closeAfter = true // shorter than its content-length: the client can tell only by the close
	}
	l.h1uRelease(d)
	l.flushDown(d)
	if d.closed {
		return
	}
	if d.pausedIn && d.outOff >= len(d.out) {
		d.pausedIn = false
		l.watchDown(d)
	}
	l.process(d)
	l.arm(d) // its idle timeout, which the stream's did not include (the upstream's events arm no client)
}

// h1uRelease drops d's upstream HTTP/2 side: the stream if still open
// (reset), the request kept for retries.
func (l *loop) h1uRelease(d *down) {
	if hb := d.hb; hb != nil {
		l.h2uForget(&hb.st)
		d.hb = nil
	}
}

// h1uReply: a local reply to a request whose upstream is HTTP/2
// (localReply's hook), its stream released. A body not all taken is
// left to localReply as any other's (route.LocalReplyCloses): framed as
// h1uDispatch noted, what the stream took of it already consumed (a
// first attempt may fail before its stream set the state).
func (l *loop) h1uReply(d *down) {
	hb := d.hb
	ended := hb.st.reqEnded
	l.h1uRelease(d)
	if !ended {
		d.state = dsBody
	}
}

// h2uResetDown ends the client's side of a response cut after its head:
// an h2c stream is reset, an HTTP/1.1 connection closed.
func (l *loop) h2uResetDown(d *down) {
	if d.h2 != nil {
		l.h2Reset(d)
		return
	}
	l.closeDown(d)
}
