package evloop

// The answers the proxy gives an h2 stream itself: local replies (a gRPC
// request's as a gRPC status) and the refusal of a stream an update took
// off the loops.

import (
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2Reply writes a local reply's head and body as frames (localReply's
// work for a stream), and returns the status counted: a gRPC request's
// is answered as the goroutine path answers it, 200 with the gRPC code
// in the HEADERS that end the stream (trailers only).
func (l *loop) h2Reply(d *down, status int, body string) int {
	st := d.h2
	if st.gone {
		return status
	}
	if d.logged() {
		l.logH2Reply(d, status, body)
	}
	c := st.c
	c.hbuf.Reset()
	if st.grpc {
		_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		_ = c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
		_ = c.enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(proxyroute.GRPCStatusFor(status))})
		if body != "" {
			_ = c.enc.WriteField(hpack.HeaderField{Name: "grpc-message", Value: body})
		}
		_ = c.enc.WriteField(hpack.HeaderField{Name: "server", Value: "envoy"})
		l.h2Date(c)
		l.h2WriteHeaders(c, st.id, true)
		st.ended = true
		return 200
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	if body != "" {
		// As Envoy's local reply (and the access log above): a length
		// and a type only for a body (Utility::prepareLocalReply); its
		// HTTP/2 codec adds none to a head that ends the stream.
		_ = c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
		_ = c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain"})
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: "server", Value: "envoy"})
	l.h2Date(c)
	if body == "" {
		// The HEADERS end the stream, as Envoy's encode_headers with
		// end_stream for an empty body.
		l.h2WriteHeaders(c, st.id, true)
		st.ended = true
		return status
	}
	l.h2WriteHeaders(c, st.id, false)
	if d.logged() {
		d.lg.rec.BytesSent += int64(len(body))
	}
	st.pending, st.pendOff = append(l.getBuf(), body...), 0
	return status
}

// h2Refuse answers a stream the router would hand off once the loops no
// longer serve its listener over HTTP/2 (a route or cluster update after
// the preface): REFUSED_STREAM, which a client may retry (RFC 9113 8.7),
// and GOAWAY NO_ERROR, so that it retries on a new connection, which
// goes to the goroutine path. False while the loops still serve the
// listener (a request of its own that the router hands off: 501).
func (l *loop) h2Refuse(d *down) bool {
	if _, ok := d.gen.router.(H2Router).H2(); ok {
		return false
	}
	st := d.h2
	c := st.c
	_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
	st.reset = true
	l.h2EndStream(st)
	l.h2GoAway(c, http2.ErrCodeNo, false)
	l.h2MaybeClose(c)
	return true
}

// h2Continue answers a request's "expect: 100-continue" with a 100
// HEADERS once the request went upstream with its body still to come,
// as the goroutine path's HTTP/2 server does when the body is first read
// and Envoy does without proxy_100_continue; not after a local reply.
func (l *loop) h2Continue(st *h2stream) {
	sd := st.sd
	if st.gone || sd.closed || st.reqEnded || sd.state != dsBody {
		return
	}
	c := st.c
	c.hbuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
	l.h2WriteHeaders(c, st.id, false)
}

// h2Date adds the date to the header block being encoded for c, as on
// every response without one (date_linux.go); not logged, as the
// goroutine path does not log the date its writer adds.
func (l *loop) h2Date(c *h2conn) {
	_ = c.enc.WriteField(hpack.HeaderField{Name: "date", Value: l.date()})
}
