package cluster

import (
	"errors"
	"net"
	"strings"

	"golang.org/x/net/http2"
)

// CountConnError counts upstream_cx_protocol_error for nc when err, a
// stream's error on it, is a connection error x/net's client raised
// itself for what the upstream sent (a frame that breaks HTTP/2, such as
// DATA on stream 0), which fails the connection as Envoy's codec fails
// it (CodecClient::onData counts it). nc is the connection x/net tells
// httptrace's GotConn (the *h2Conn it was given); anything else, or any
// other error, counts nothing. A connection counts once, whichever of
// its streams comes first, and not again when h2Conn.fail failed it (the
// same flag): its other streams end with ErrConnProtocol, not a
// ConnectionError.
func CountConnError(nc net.Conn, err error) {
	w, ok := nc.(*h2Conn)
	var ce http2.ConnectionError
	if !ok || !errors.As(err, &ce) {
		return
	}
	if w.failed.CompareAndSwap(false, true) {
		w.c.Stats.CxProtocolError.Inc()
	}
}

// PassedLength reports whether err ended an HTTP/2 response body whose
// DATA passed its content-length: x/net's client cuts the body at the
// length, resets the stream (CANCEL) and returns this error with the
// bytes up to it. nghttp2, in Envoy's codec, resets such a stream
// (PROTOCOL_ERROR) before the codec sees the DATA frame that passes the
// length, a remote reset (route.H2LengthInvalid); the caller drops the
// bytes that come with err, which is that frame's when it came alone.
func PassedLength(err error) bool {
	return err != nil && strings.Contains(err.Error(), "server replied with more than declared Content-Length")
}
