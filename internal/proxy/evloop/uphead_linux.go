package evloop

import (
	"strconv"
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// An HTTP/1.1 upstream's response head on a loop: the client's head
// written from it, interim (1xx) responses, and the response's counting.

// responseHead writes the client's response head for the upstream's head
// b and sets how the body is framed; false if the exchange ended.
func (l *loop) responseHead(u *up, d *down, b []byte) bool {
	rs := &l.resp
	if err := parseResponse(b, rs); err != nil || rs.status == 101 ||
		proxyroute.BodylessFramed(rs.status, rs.chunked, rs.hasLength, rs.length.of(b)) {
		l.badGateway(u)
		return false
	}
	if proxyroute.DropsLength(rs.status) {
		rs.hasLength = false // a "Content-Length: 0" goes, as Envoy's codec removes it
	}
	if rs.status < 200 {
		// An interim response is dropped, as Envoy drops an upstream's
		// without proxy_100_continue (and the goroutine path): the final
		// one follows (l.interim).
		u.scan = headScanner{}
		if proxyroute.Special1xx(rs.status) && u.replayable {
			l.dropKept(u) // kept for a retry (readUp), which can no longer come
		}
		l.interim(u, d, rs.status)
		return true
	}
	if l.readHead(u, d, rs.status) {
		u.rh.GRPCStatus = grpcStatus(b, rs)
		u.rh.End = rs.bodyless(d.head) || !rs.chunked && rs.hasLength && rs.contentLength == 0
	}
	if l.responseRetry(d, u, b, rs) {
		return false
	}
	// Kept for a retry on the response's status (readUp): no retry
	// follows, as Envoy's Filter::onUpstreamHeaders ends its retry state;
	// a body still arriving goes on.
	l.dropKept(u)
	u.status = rs.status
	if d.h2 != nil {
		return l.h2ResponseHead(u, d, b)
	}
	if d.out == nil {
		d.out, d.outOff = l.getBuf(), 0
	}
	hs := len(d.out)
	o := append(d.out, "HTTP/1.1 "...)
	o = append(o, rs.statusLine.of(b)[9:]...)
	if rs.statusLine.end == 12 {
		o = append(o, ' ')
	}
	o = append(o, "\r\n"...)
	for i := range rs.lines {
		if h := &rs.lines[i]; !h.hop {
			o = append(o, h.line.of(b)...)
		}
	}
	switch {
	case rs.bodyless(d.head):
		u.rstate = rsHead
		if rs.hasLength {
			o = append(o, "content-length: "...)
			o = strconv.AppendInt(o, rs.contentLength, 10)
			o = append(o, "\r\n"...)
		} else if proxyroute.HeadChunked(d.head, rs.status) {
			// Envoy's HTTP/1.1 encoder announces a HEAD answer without
			// content-length as chunked, and writes no body
			// (StreamEncoderImpl::encodeHeadersBase), as the goroutine
			// path's writer does.
			o = append(o, "transfer-encoding: chunked\r\n"...)
		}
	case rs.chunked:
		u.rstate, u.chunks = rsChunked, chunkScanner{}
		o = append(o, "transfer-encoding: chunked\r\n"...)
	case rs.hasLength:
		u.rstate, u.left = rsLength, rs.contentLength
		o = append(o, "content-length: "...)
		o = strconv.AppendInt(o, rs.contentLength, 10)
		o = append(o, "\r\n"...)
	default:
		// A body the upstream's close ends goes to the client chunked,
		// its connection kept, as Envoy's HTTP/1.1 encoder chunks a body
		// without content-length (the goroutine path's writer too). An
		// HTTP/1.0 client, which cannot take chunks, is the goroutine
		// path's (dispatch).
		u.rstate = rsClose
		o = append(o, "transfer-encoding: chunked\r\n"...)
	}
	u.keep = !rs.closeAfter && u.rstate != rsClose
	if d.state == dsBody {
		// The response came before the whole body: the rest of the body
		// cannot be told from the next request.
		d.closeAfter = true
		u.keep = false
	}
	o = append(o, "server: envoy\r\nx-envoy-upstream-service-time: "...)
	o = strconv.AppendInt(o, (l.now-u.started)/int64(time.Millisecond), 10)
	o = append(o, "\r\n"...)
	if d.closeAfter {
		o = append(o, "connection: close\r\n"...)
	}
	logged := len(o) // the head the goroutine path logs: without the date its writer adds
	if !rs.hasDate {
		o = l.appendDate(o)
	}
	d.out = append(o, "\r\n"...)
	l.logResponse(d, d.out[hs:logged])
	l.responseCounted(u, d, rs.status)
	return true
}

// interim takes an upstream's 1xx response of status, dropped, as Envoy's
// router takes one it does not drop unseen (proxyroute.Special1xx;
// Filter::onUpstream1xxHeaders): counted for the cluster as a response
// (upstream_rq_<code>, upstream_rq_1xx, upstream_rq_completed), and
// starting the response (retryState.start: no retry follows, its
// reservation of max_retries is given back). u is the attempt,
// HTTP/1.1's or an HTTP/2 stream's.
func (l *loop) interim(u *up, d *down, status int) {
	if !proxyroute.Special1xx(status) {
		return
	}
	d.rs.start()
	if u.observing {
		l.srv.cfg.Observer.Interim(u.cluster, u.tag, status)
	} else {
		u.pool.st.response(status)
	}
}

// responseCounted ends a response head's work, HTTP/1.1's or an HTTP/2
// stream's: the head scanner reset, the status counted for the
// connection manager and the cluster (or its observer), the upstream
// time recorded, the response started (retryState.start: its
// per-try timeout no longer ends it, its retry's reservation of
// max_retries is given back), and its details logged as relayed
// from the upstream.
func (l *loop) responseCounted(u *up, d *down, status int) {
	u.scan = headScanner{}
	d.rs.start()
	if d.logged() {
		d.lg.rec.Details = proxyroute.DetailsViaUpstream // until what cuts the response replaces it (logFlags)
	}
	d.gen.st.response(status)
	if u.observing {
		l.observeHead(u, false)
	} else {
		u.pool.st.response(status)
	}
	u.pool.st.rqTime.Record(uint64((l.now - u.started) / int64(time.Millisecond)))
}

// rqTimed records d's request in downstream_rq_time once its response's
// end went to the client's connection (in d.out, the connection's write
// buffer): an HTTP/1.1 response's last byte, a stream's END_STREAM frame
// (h2Sent), as Envoy's connection manager completes the request's
// timespan when its codec has encoded the end (onCodecEncodeComplete:
// HTTP/1's last bytes moved to the connection's buffer, HTTP/2's frame
// with END_STREAM sent). A response cut before, or a stream reset while
// its end waits for the client's window, is not recorded.
func (l *loop) rqTimed(d *down) {
	d.gen.st.rqTime.Record(uint64((l.now - d.reqStart) / int64(time.Millisecond)))
}

// h1Done is an HTTP/1.1 exchange's end, its response's end in d.out: the
// request is recorded (rqTimed), and the connection's idle timeout runs
// from now, as Envoy's idle timer starts when the connection's last
// stream ends (it ran from the request's last read, so a response slower
// than the idle timeout had its connection closed right after it).
func (l *loop) h1Done(d *down) {
	l.rqTimed(d)
	d.last = l.now
}
