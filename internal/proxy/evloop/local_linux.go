package evloop

// Requests the loops do not forward: answers of their own (local
// replies, as Envoy's connection manager gives them) and connections
// handed to the goroutine path.

import (
	"bytes"
	"errors"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// badRequest answers a head the parser refused: an HTTP/1.1 client's as
// a refusal, an HTTP/2 stream's with the refusal's status and the
// parser's text (its connection carries on).
func (l *loop) badRequest(d *down, err error) {
	r := proxyroute.RefuseMalformed
	var pe *parseError
	if errors.As(err, &pe) {
		r = pe.refusal
	}
	if d.h2 == nil {
		l.refuse(d, r)
		return
	}
	d.gen.st.rqTotal.Inc()
	d.off = len(d.in)
	l.localReply(d, r.Status(), err.Error(), true)
}

// refuse answers a request head the loops do not route, as Envoy's
// connection manager answers it (proxyroute.Refusal) and as the goroutine
// path does (httpconn's h1Conn.refuse), and closes the connection after
// it. It is counted as Envoy counts the stream its codec opened at the
// head's first byte: a request (downstream_rq_total, _http1_total,
// _completed, its status class, the time), reset since its head was not
// complete (downstream_rq_rx_reset), a protocol error
// (downstream_cx_protocol_error, DPE) when the codec refused it; and
// logged without request headers.
func (l *loop) refuse(d *down, r proxyroute.Refusal) {
	st := d.gen.st
	switch {
	case r.CodecError():
		st.cxProtocolError.Inc()
	case r == proxyroute.RefuseHeaderTimeout:
		st.rqHeaderTimeout.Inc()
	}
	l.firstHeadEnded(d)
	st.rqTotal.Inc()
	st.rqHTTP1.Inc()
	st.rqRxReset.Inc()
	d.off = len(d.in)
	d.reqStart = l.now
	if d.headStart != 0 {
		d.reqStart = d.headStart - 1
	}
	l.logRefused(d, r)
	l.localReply(d, r.Status(), r.Body(), true)
}

// badBody ends a request whose body's framing is malformed (a chunk
// size that is not one) once its head was dispatched, as Envoy's codec
// error and the goroutine path end it: a protocol error, flagged DPE,
// and the connection closes. Its upstream exchange, which has part of a
// request, is dropped. Before the response started the request is
// answered 400 "Bad Request" (a gRPC request's as a gRPC status); after,
// no answer can follow the response's bytes (Envoy's codec sends none
// then, and resets the stream): what was received of the response goes
// out, and the connection closes with it cut, the request logged with
// the status sent.
func (l *loop) badBody(d *down) {
	d.gen.st.cxProtocolError.Inc()
	d.logFlags(accesslog.DownstreamProtocolError, "downstream_protocol_error")
	d.off = len(d.in)
	sent := 0 // the final response's status, once its head went down
	if u := d.u; u != nil {
		if u.status >= 200 {
			sent = u.status
		}
		u.d, d.u = nil, nil
		l.closeUp(u)
	}
	if hb := d.hb; hb != nil {
		sent = hb.status
		l.h1uRelease(d)
	}
	if sent == 0 {
		l.localReply(d, 400, "Bad Request", true)
		return
	}
	// Counted as a response already (responseCounted): the reply's
	// work but the counting and the reply.
	d.closeAfter, d.state = true, dsHead
	l.endRetries(d)
	l.logDone(d, sent)
	l.flushDown(d) // drains the connection once the response's bytes are out
}

// reason is a local reply's reason phrase.
func reason(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 426:
		return "Upgrade Required"
	case 408:
		return "Request Timeout"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Unknown"
}

// localReply answers the client from the proxy, as Envoy's local replies:
// status and body, or to a gRPC request 200 with the status as a gRPC
// code (h2Reply and localReplyH1 say how).
func (l *loop) localReply(d *down, status int, body string, closeAfter bool) {
	if d.h2 != nil {
		l.replyDone(d, l.h2Reply(d, status, body))
		return
	}
	if d.hb != nil {
		l.h1uReply(d)
	}
	if d.state == dsBody && !closeAfter && !d.closeAfter {
		// Made after the head (an upstream's failure, a timeout) with
		// the body not all read: the connection closes after it unless
		// the rest has arrived, which replyDone then skips.
		closeAfter = proxyroute.LocalReplyCloses(false, func() bool { return l.bodyArrived(d) })
	}
	l.replyDone(d, l.localReplyH1(d, status, body, closeAfter))
}

// bodyArrived reports whether the rest of the body of d's request, not
// read yet, has arrived: it is in the read buffer (a body with a length:
// or the socket's), as Envoy's codec would have parsed it by then, and
// as the goroutine path tells it (httpconn's h1Body.Arrived).
func (l *loop) bodyArrived(d *down) bool {
	var b []byte
	if d.in != nil {
		b = d.in[d.off:]
	}
	if !d.chunked {
		n := int64(len(b))
		if d.tls == nil {
			if q, err := unix.IoctlGetInt(d.fd, unix.SIOCINQ); err == nil {
				n += int64(q)
			}
		}
		return n >= d.bodyLeft
	}
	cs := d.chunks // scanned on a copy: skipBody reads it again
	_, done, err := cs.scan(b)
	return done && err == nil
}

// localReplyH1 writes a local reply's head and body to an HTTP/1.1
// client, and returns the status counted. A gRPC request's is answered
// as the goroutine path answers it, and Envoy over HTTP/1.1: 200,
// application/grpc, the gRPC code in grpc-status and the text in
// grpc-message, content-length 0 and no body. A HEAD request's has the
// body's length and not the body.
func (l *loop) localReplyH1(d *down, status int, body string, closeAfter bool) int {
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	d.closeAfter = d.closeAfter || closeAfter
	hs := len(d.out)
	o := append(d.out, "HTTP/1.1 "...)
	// The goroutine path's log reads its header map before its writer
	// adds the content-length of a reply without a body: that one comes
	// after the logged head.
	bodyLength := false
	if d.grpc {
		o = append(o, "200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: "...)
		o = strconv.AppendInt(o, int64(proxyroute.GRPCStatusFor(status)), 10)
		if body != "" {
			o = append(o, "\r\ngrpc-message: "...)
			o = append(o, body...)
		}
		status, body = 200, ""
	} else {
		o = strconv.AppendInt(o, int64(status), 10)
		o = append(o, ' ')
		o = append(o, reason(status)...)
		if body != "" {
			// As Envoy's local reply: a type only for a body.
			bodyLength = true
			o = append(o, "\r\ncontent-length: "...)
			o = strconv.AppendInt(o, int64(len(body)), 10)
			o = append(o, "\r\ncontent-type: text/plain"...)
		}
	}
	o = append(o, "\r\nserver: envoy\r\n"...)
	if d.closeAfter {
		o = append(o, "connection: close\r\n"...)
	}
	if d.logged() {
		// Without the date, as the goroutine path logs its reply (its
		// writer adds the date on the wire only), and the length of
		// the body it was given (a HEAD request's too).
		l.logResponse(d, o[hs:])
		d.lg.rec.BytesSent += int64(len(body))
	}
	switch {
	case bodyLength:
	case proxyroute.HeadChunked(d.head, status):
		// As Envoy's HTTP/1.1 encoder frames a HEAD answer without a
		// length: announced chunked, no body (route.HeadChunked).
		o = append(o, "transfer-encoding: chunked\r\n"...)
	default:
		o = append(o, "content-length: 0\r\n"...)
	}
	o = append(l.appendDate(o), "\r\n"...)
	if !d.head {
		o = append(o, body...)
	}
	d.out = o
	return status
}

// replyDone counts and logs a local reply, and sends it. An HTTP/1.1
// request whose body is still to come and may be skipped (the reply does
// not close the connection) has it skipped (skipBody). A reply made
// outside process (on an upstream's event, a timer) carries on with what
// the client sent behind the request, as a response's end does (finish):
// nothing else would look at those bytes before the client sends more.
func (l *loop) replyDone(d *down, status int) {
	if d.h2 == nil || !d.h2.uncounted {
		d.gen.st.response(status)
	}
	if d.h2 == nil {
		l.h1Done(d) // a stream's once its END_STREAM goes (h2Sent)
	}
	skip := d.state == dsBody && !d.closeAfter && d.h2 == nil
	d.state = dsHead
	if skip {
		d.state, d.skipBy, d.drained = dsSkip, l.now+int64(drainFor), 0
	}
	l.endRetries(d)
	l.logDone(d, status)
	l.flushDown(d)
	if d.closed || d.h2 != nil || d.processing {
		return
	}
	if d.pausedIn && d.outOff >= len(d.out) {
		d.pausedIn = false
		l.watchDown(d)
	}
	l.process(d)
	l.arm(d) // the skip's deadline, or the next request's; an upstream's event arms no client (h1uEnd)
}

// replyUnread answers a request from the proxy before any of its body
// was read (dispatch's local replies): at the head (atHead: no route, no
// healthy host), or for a connect that failed at once, which Envoy
// notices only on a later event, once its codec has parsed what came
// with the head. A body, content-length or chunked, then closes the
// connection after the reply, or is skipped (replyDone) when it has
// arrived whole by a reply made later (route.LocalReplyCloses), as the
// goroutine path drains what its handler left unread (a request that
// asked for 100-continue was sent it at dispatch: its body comes too).
func (l *loop) replyUnread(d *down, r *request, status int, body string, atHead bool) {
	closeAfter := false
	if d.h2 == nil {
		d.bodyLeft, d.chunked, d.chunks = 0, r.chunked, chunkScanner{}
		if r.hasLength {
			d.bodyLeft = r.contentLength
		}
		if d.chunked || d.bodyLeft > 0 {
			d.state = dsBody
			closeAfter = atHead
		}
	}
	l.localReply(d, status, body, closeAfter)
}

// skipBody reads and drops what came of a body being skipped, and
// reports whether process may go on (to the next request). As the
// goroutine path drains a body: at most maxDrain of its bytes, within
// drainFor of the reply (expire), and a malformed one is not answered;
// past those the connection closes once the reply is out.
func (l *loop) skipBody(d *down) bool {
	b := d.in[d.off:]
	if len(b) == 0 {
		l.releaseIn(d)
		return false
	}
	data := d.chunks.data
	take, done, err := d.bodyPart(b)
	if d.chunked {
		d.drained += int(d.chunks.data - data)
	} else {
		d.drained += take
	}
	if err != nil || d.drained > maxDrain {
		d.off = len(d.in)
		d.state, d.closeAfter = dsHead, true
		l.flushDown(d) // drains the connection once the reply is out
		return false
	}
	d.off += take
	if done {
		d.state = dsHead
		if d.closeAfter {
			l.flushDown(d) // drained meanwhile (drainConns)
			return false
		}
	}
	return true
}

// h2cPreface starts an HTTP/2 connection without TLS (RFC 9113 3.4).
const h2cPreface = "PRI * HTTP/2.0\r\n"

// handOffWhenWritten gives d to Config.HandOff with the request just
// parsed, at once or, behind a pipelined answer not written yet (TLS
// records included), once that is out (d reads no more meanwhile); false
// without a HandOff (HandOffTLS over TLS).
func (l *loop) handOffWhenWritten(d *down) bool {
	if l.srv.cfg.HandOff == nil || (d.tls != nil && l.srv.cfg.HandOffTLS == nil) {
		return false
	}
	if d.outOff >= len(d.out) && !d.tlsPending() {
		l.handOff(d)
		return true
	}
	d.handOffNext = true
	if !d.pausedIn {
		d.pausedIn = true
		l.watchDown(d)
	}
	return true
}

// handOff gives a connection waiting for a request to Config.HandOff with
// the bytes not yet consumed, the current head first.
func (l *loop) handOff(d *down) {
	// The loops counted the connection (at accept, or after its
	// handshake), and as HTTP/1.1 once they served a request of its:
	// the goroutine path counts the rest.
	counted := CountedCx
	if d.requests > 0 {
		counted |= CountedHTTP1
	}
	buffered := append([]byte(nil), d.in[d.off:]...)
	fd := d.fd
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, fd, nil)
	l.forgetDown(d)
	d.gen.st.cxActive.Dec()
	if ls := l.srv.cfg.Listener; ls != nil {
		ls.CxActive.Dec() // the goroutine path counts it again
	}
	if d.tls != nil {
		l.srv.cfg.HandOffTLS(fd, d.tls, buffered, counted)
		return
	}
	l.srv.cfg.HandOff(fd, buffered, counted)
}

// firstHeadEnded counts an HTTP/1.1 connection whose first request head
// ends unserved (malformed, timed out, cut by the client) as HTTP/1.1
// (downstream_cx_http1_total), as the goroutine path counts a connection
// once its first bytes are not the h2c preface; dispatch counts the
// others at their first request.
func (l *loop) firstHeadEnded(d *down) {
	if d.requests == 0 && d.h2 == nil && d.h2c == nil && d.in != nil && d.off < len(d.in) &&
		!bytes.HasPrefix([]byte(h2cPreface), d.in[d.off:min(len(d.in), d.off+len(h2cPreface))]) {
		d.gen.st.cxHTTP1.Inc()
	}
}
