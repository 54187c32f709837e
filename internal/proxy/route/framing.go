package route

import "math"

// DropsLength reports whether a response head of status loses its
// Content-Length on the way to the client: a 1xx or a 204, whose
// "Content-Length: 0" Envoy's HTTP/1 codec removes
// (ClientConnectionImpl::onHeadersCompleteBase; any other value is
// BodylessFramed's protocol error), so that a 204's client gets none.
func DropsLength(status int) bool {
	return status < 200 || status == 204
}

// HeadChunked reports whether a response without a Content-Length to an
// HTTP/1.1 client's request (a HEAD one when head) announces
// "Transfer-Encoding: chunked" while writing no body: Envoy's HTTP/1.1
// encoder so announces a HEAD answer of any status but 204 and 304
// (StreamEncoderImpl::encodeHeadersBase in
// source/common/http/http1/codec_impl.cc).
func HeadChunked(head bool, status int) bool {
	return head && status != 204 && status != 304
}

// H2LengthInvalid reports whether an HTTP/2 response's content-length
// fields, n of them, the first value v, are malformed as nghttp2 (Envoy's
// HTTP/2 codec) takes them: more than one, or one that is not a decimal
// number below 2^63 (http_response_on_header's NGHTTP2_ERR_HTTP_HEADER).
// Such a response fails the whole connection, as any invalid frame does
// with stream_error_on_invalid_http_messaging unset
// (ConnectionImpl::onInvalidFrame). DATA past a valid length is not this:
// nghttp2 resets that stream alone (RST_STREAM PROTOCOL_ERROR, without
// calling onInvalidFrame), a remote reset to Envoy
// (ConnectionImpl::onStreamClose).
func H2LengthInvalid[T ~string | ~[]byte](n int, v T) bool {
	if n == 0 {
		return false
	}
	if n > 1 || len(v) == 0 {
		return true
	}
	var x int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' || x > (math.MaxInt64-int64(c-'0'))/10 {
			return true
		}
		x = x*10 + int64(c-'0')
	}
	return false
}

// LocalReplyCloses reports whether an HTTP/1.1 connection closes after a
// local reply to a request with a body (a length above 0, or chunked),
// one rule for both request paths: it does when the request is not
// complete as Envoy's connection manager sees it then, which says
// "connection: close" in a head it encodes before the request's end and
// closes the connection once the response is out (ActiveStream::
// encodeHeaders, doEndStream in source/common/http/conn_manager_impl.cc).
// A reply made at the head (no route, a direct response, no healthy
// host, an overflow: Envoy makes those while its codec dispatches the
// head, before it parses any of the body behind it, in the same read or
// not) always closes; one made later (a connect failure, even one the
// connect call returned: Envoy raises it on a later event; a timeout, a
// reset) closes unless the whole body has arrived by then (arrived, asked
// only then).
func LocalReplyCloses(atHead bool, arrived func() bool) bool {
	return atHead || !arrived()
}
