package cluster

import (
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"
)

// x/net's Transport.RoundTrip sends a request again by itself, up to six
// times and from the second time on after 1 s, 2 s, 4 s ... of back-off,
// when the upstream refused its stream (RST_STREAM REFUSED_STREAM), when
// the connection it was given could take no stream before the request
// went out, or when a GOAWAY's last-stream-id left the stream out
// (roundTripViaPool, shouldRetryRequest). Envoy's router sees a refused
// stream as a reset (remote refused stream reset, UR) and sends it again
// only under the route's retry policy (retry_on refused-stream or reset),
// with that policy's back-off and counters, as the loops do; x/net's
// retries hid it from the route, so that an upstream refusing every
// stream was answered 504 at the route timeout. A stream a GOAWAY left
// out is one too: Envoy's codec (nghttp2's session_close_stream_on_goaway,
// oghttp2's OnGoAway) closes each stream above the last-stream-id
// REFUSED_STREAM, whatever the GOAWAY's code, and the loops refuse it
// likewise (h2up_linux.go); Refused tells it apart. h2RT sends each
// attempt on a connection of its own pool (ClientConn.RoundTrip) and
// takes another connection only for a request the connection gave no
// stream (errUnusable), as x/net did. A stream that had its id when the
// GOAWAY was read is refused even if x/net had yet to write its HEADERS
// (waiting for the connection's write lock: setGoAway aborts it and
// encodeAndWriteHeaders writes nothing), as Envoy's codec refuses every
// stream the connection took before the GOAWAY, each one's HEADERS
// encoded as the pool hands it the connection.

// h2RT is an HTTP/2 cluster's round tripper (of a destination's host, for
// an ORIGINAL_DST cluster): its pool's connections, no retry of its own
// but for a connection that could not carry the stream.
type h2RT struct{ pool *h2Pool }

// maxRepick is how many times a request goes on another connection
// because the one it had took no stream (x/net's bound).
const maxRepick = 6

// x/net's errors for a request the upstream did not process, unexported:
// the connection could take no stream (closed, going away, or failed)
// before the request went out, or the stream was above a GOAWAY's
// last-stream-id (errGoAway; errGoAwayFirst, a prefix, for the
// connection's first stream and a GOAWAY with an error code, which x/net
// would not send again).
const (
	errUnusable    = "http2: client conn not usable"
	errGoAway      = "http2: Transport received Server's graceful shutdown GOAWAY"
	errGoAwayFirst = "http2: Transport received GOAWAY from server ErrCode:"
	// The connection closed before its first stream went out.
	errNotEstablished = "http2: client conn could not be established"
)

// Refused reports whether err is an HTTP/2 upstream's refusal of the
// stream, Envoy's reset reason remote refused stream reset: its
// RST_STREAM REFUSED_STREAM (also in the text of an error that wraps it),
// or a GOAWAY whose last-stream-id left the stream out, which Envoy's
// codec closes REFUSED_STREAM whatever the GOAWAY's code (see above).
func Refused(err error) bool {
	s := err.Error()
	return strings.Contains(s, "REFUSED_STREAM") || s == errGoAway || strings.HasPrefix(s, errGoAwayFirst)
}

func (t h2RT) RoundTrip(req *http.Request) (*http.Response, error) {
	addr := authorityAddr(req.URL.Scheme, req.URL.Host)
	for try := 0; ; try++ {
		cc, w, err := t.pool.take(req, addr)
		if err != nil {
			// No connection took the request: its body is closed unread,
			// as a RoundTripper closes it on every error (h1Client's get
			// likewise), so that httpconn's next attempt does not wait
			// for it (replayBody.waitPrevious), on the first pick or on a
			// repick after errUnusable (the body then GetBody's).
			closeBody(req)
			return nil, err
		}
		if tr := httptrace.ContextClientTrace(req.Context()); tr != nil && tr.GotConn != nil && w != nil {
			tr.GotConn(httptrace.GotConnInfo{Conn: w}) // CountConnError's connection
		}
		res, err := cc.RoundTrip(req)
		if err == nil {
			return res, nil
		}
		if err.Error() == errNotEstablished {
			// The connection's first stream found it closed: not kept
			// for the next request (x/net marks it dead likewise).
			t.pool.MarkDead(cc)
			return nil, err
		}
		if try >= maxRepick || err.Error() != errUnusable {
			// A refused stream among them, by RST_STREAM or GOAWAY: the
			// route's retry policy's.
			return nil, err
		}
		// The body goes again from GetBody when it can, as x/net's
		// shouldRetryRequest: x/net closed the one it was given (and
		// httpconn's replay waits for the body it handed out last to
		// close before the next attempt reads). Without GetBody it goes
		// again unread: the request never went out.
		if req.Body != nil && req.Body != http.NoBody && req.GetBody != nil {
			body, berr := req.GetBody()
			if berr != nil {
				return nil, err
			}
			r := *req
			r.Body = body
			req = &r
		}
		if try > 0 {
			tm := time.NewTimer(time.Second << (try - 1)) // x/net's back-off, without its jitter
			select {
			case <-tm.C:
			case <-req.Context().Done():
				tm.Stop()
				closeBody(req)
				return nil, req.Context().Err()
			}
		}
	}
}

// authorityAddr is host:port for a URL's scheme and host, the port the
// scheme's when the host has none: x/net's key for a connection.
func authorityAddr(scheme, host string) string {
	if _, port, err := net.SplitHostPort(host); err == nil && port != "" {
		return host
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	port := "443"
	if scheme == "http" {
		port = "80"
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return net.JoinHostPort(h, port)
}
