package route

import "time"

// Refusal is a request head weft proxy answers without routing it, and
// how: as Envoy's connection manager answers a head its HTTP/1 codec
// refuses (ServerConnectionImpl::sendProtocolError in
// source/common/http/http1/codec_impl.cc: a local reply whose body is the
// status's reason phrase, the stream's details set, the stream reset and
// flagged DPE, the connection counted in downstream_cx_protocol_error and
// closed) or one whose head did not arrive within request_headers_timeout
// (ActiveStream::onRequestHeaderTimeout in conn_manager_impl.cc). Both
// request paths, the goroutine path (httpconn) and the event loops
// (evloop), answer, count and log a refusal from these values alone.
type Refusal uint8

// The refusals. The zero Refusal is none.
const (
	// RefuseMalformed: a request line or header line the codec cannot
	// read, or framing two parsers could read differently.
	RefuseMalformed Refusal = iota + 1
	// RefuseHeadTooLarge: a head over max_request_headers_kb (60 KiB).
	RefuseHeadTooLarge
	// RefuseTooManyHeaders: more header lines than
	// max_request_headers_count (MaxHeaders).
	RefuseTooManyHeaders
	// RefuseChunkedLength: Content-Length together with
	// Transfer-Encoding (Envoy's allow_chunked_length unset).
	RefuseChunkedLength
	// RefuseTransferEncoding: a Transfer-Encoding other than one
	// "chunked".
	RefuseTransferEncoding
	// RefuseLowVersion: a version other than HTTP/1.1 (HTTP/1.0 and, as
	// Envoy reads them, any other) where the connection manager does not
	// accept_http_10; weft proxy also refuses versions other than
	// HTTP/1.0 and HTTP/1.1 where it does.
	RefuseLowVersion
	// RefuseHeaderTimeout: request_headers_timeout ran out once the
	// head's first byte came.
	RefuseHeaderTimeout
	// RefuseExpectation: an Expect header other than 100-continue, which
	// weft proxy refuses (Envoy would forward it).
	RefuseExpectation
	// RefuseUnimplemented: what the event loops leave to the goroutine
	// path (an upgrade, a target that is not origin-form) when they have
	// no hand-off to give it to (tests, benchmarks).
	RefuseUnimplemented
)

// MaxHeaders is Envoy's default limit of a head's header lines
// (max_request_headers_count, and a cluster's max_headers_count for the
// responses): a request head with more is refused (RefuseTooManyHeaders).
const MaxHeaders = 100

// The limits of an HTTP/1.1 request head and of what is read of a request
// body the proxy does not forward, one rule for both request paths.
const (
	// MaxHeadBytes bounds a request or response head: Envoy's
	// max_request_headers_kb default (60 KiB).
	MaxHeadBytes = 60 << 10
	// DrainBytes and DrainFor bound how much of a request body the proxy
	// did not forward, and how long, is read and dropped to keep the
	// connection (net/http's server reads 256 KiB), and how long a
	// connection refusing a request reads what the client still sends
	// before closing, so that the close does not reset the answer away.
	DrainBytes = 256 << 10
	DrainFor   = 500 * time.Millisecond
)

var refusals = [...]struct {
	status        int
	body, details string
	codec         bool
}{
	RefuseMalformed:        {400, "Bad Request", "http1.codec_error", true},
	RefuseHeadTooLarge:     {431, "Request Header Fields Too Large", "http1.headers_too_large", true},
	RefuseTooManyHeaders:   {431, "Request Header Fields Too Large", "http1.too_many_headers", true},
	RefuseChunkedLength:    {400, "Bad Request", "http1.content_length_and_chunked_not_allowed", true},
	RefuseTransferEncoding: {501, "Not Implemented", "http1.invalid_transfer_encoding", true},
	RefuseLowVersion:       {426, "Upgrade Required", "low_version", true},
	RefuseHeaderTimeout:    {408, "request header timeout", "request_header_timeout", false},
	RefuseExpectation:      {417, "Expectation Failed", "", false},
	RefuseUnimplemented:    {501, "Not Implemented", "", false},
}

// Status is the answer's status; its status line says HTTP/1.1.
func (r Refusal) Status() int { return refusals[r].status }

// Body is the answer's body (text/plain), sent to a HEAD request too: as
// Envoy's, whose filter manager has not seen the request's method when
// its codec refuses the head.
func (r Refusal) Body() string { return refusals[r].body }

// Details is the access log's %RESPONSE_CODE_DETAILS%; "" for none.
func (r Refusal) Details() string { return refusals[r].details }

// CodecError reports whether the codec refused the head: counted in
// downstream_cx_protocol_error and logged with the DPE flag.
func (r Refusal) CodecError() bool { return refusals[r].codec }
