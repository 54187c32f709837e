package route

import (
	"math"
	"strings"
	"time"
)

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
	// RefuseHeadTooLarge: a head over max_request_headers_kb (60 KiB by
	// default), the empty lines before its request line included.
	RefuseHeadTooLarge
	// RefuseTooManyHeaders: more header lines than max_headers_count
	// (MaxHeaders by default).
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
	// RefuseUnimplemented: what the event loops leave to the goroutine
	// path (an upgrade, a target that is not origin-form) when they have
	// no hand-off to give it to (tests, benchmarks).
	RefuseUnimplemented
	// RefuseConnectionHeader: a Connection header Envoy's codec will not
	// sanitize (ConnectionToken, TETrailers).
	RefuseConnectionHeader
	// RefuseHTTPSInPlaintext: an absolute-form https:// target on a
	// plaintext connection whose connection manager uses the remote
	// address (use_remote_address, xff_num_trusted_hops 0: the codec's
	// validate_scheme, ServerConnectionImpl::handlePath), which would
	// otherwise give the request the :scheme https that neither its
	// x-forwarded-proto nor its connection may give it there.
	RefuseHTTPSInPlaintext
)

// MaxHeaders is Envoy's default limit of a head's header lines
// (common_http_protocol_options.max_headers_count, and a cluster's for the
// responses): a request head with more is refused (RefuseTooManyHeaders).
// A connection manager's own limit (Limits) replaces it for its requests.
const MaxHeaders = 100

// Limits are a connection manager's limits of a request head: its
// max_request_headers_kb in bytes and its common_http_protocol_options'
// max_headers_count. The zero Limits are Envoy's defaults (MaxHeadBytes,
// MaxHeaders).
type Limits struct {
	HeadBytes, Headers int
}

// Bytes is the head's size limit in bytes.
func (l Limits) Bytes() int {
	if l.HeadBytes == 0 {
		return MaxHeadBytes
	}
	return l.HeadBytes
}

// Lines is the limit of the head's header lines.
func (l Limits) Lines() int {
	if l.Headers == 0 {
		return MaxHeaders
	}
	return l.Headers
}

// H2Overflow reports whether an HTTP/2 request's header list passes the
// limits: fields fields whose names and values are bytes bytes long,
// the pseudo-headers counted and cookies not (Envoy's HTTP/2 codec sets
// cookies aside to join them once the list is read). Envoy's codec then
// resets the stream (ConnectionImpl::saveHeader in
// source/common/http/http2/codec_impl.cc: RST_STREAM INTERNAL_ERROR,
// counted in http2.header_overflow, the stream's details
// H2TooManyHeaders, flagged DPE by the connection manager, which counts
// a request reset and logs it without request headers). Over HTTP/1.1
// the pseudo-headers are not header lines, and a head's limits are
// RefuseHeadTooLarge's and RefuseTooManyHeaders'.
func (l Limits) H2Overflow(fields, bytes int) bool {
	return bytes > l.Bytes() || fields > l.Lines()
}

// H2List counts an HTTP/2 request's header list for H2Overflow, field by
// field as it was received, the same on both request paths: as
// net/http's HTTP/2 server (x/net) hands the request to the goroutine
// path, which sees nothing else of it (h2HeadSize there). Envoy's codec
// counts the fields received (saveHeader); this view differs from it in
// what x/net drops or rewrites before the goroutine path sees the request:
//
//   - a host field is not counted; it is the :authority when the list has
//     none (counted as an :authority field), else equal to it or the
//     stream is refused;
//   - trailer fields are not counted, nor expect fields when one of them
//     holds the 100-continue token;
//   - :scheme's value counts as the connection's scheme, "https" on a
//     TLS connection and "http" otherwise, whatever the client sent: the
//     goroutine path's request keeps none of it but whether it was
//     https (x/net sets r.TLS then: httpconn's h2SchemeConn), which the
//     upstream gets and this count does not read, as the loops do not.
//
// Cookies are not counted, as Envoy's codec does not count them.
type H2List struct {
	fields, bytes int
	authority     int // the :authority value's length; -1: none
	host          int // the first host field's value length; -1: none
	// The expect fields, counted unless one holds 100-continue.
	expectFields, expectBytes int
	continue100               bool
}

// NewH2List returns an empty count.
func NewH2List() H2List { return H2List{authority: -1, host: -1} }

// Pseudo counts a pseudo-header field; tls: the connection is TLS.
func (l *H2List) Pseudo(name, value string, tls bool) {
	switch name {
	case ":authority":
		if value != "" {
			l.authority = len(value)
		}
		return
	case ":scheme":
		value = "http"
		if tls {
			value = "https"
		}
	}
	l.fields, l.bytes = l.fields+1, l.bytes+len(name)+len(value)
}

// Field counts a regular field (its name's case aside: HTTP/2 sends it
// lower-case, net/http's Header has it canonical).
func (l *H2List) Field(name, value string) {
	switch {
	case EqualFoldASCII(name, "cookie"), EqualFoldASCII(name, "trailer"):
	case EqualFoldASCII(name, "host"):
		if l.host < 0 {
			l.host = len(value)
		}
	case EqualFoldASCII(name, "expect"):
		l.expectFields, l.expectBytes = l.expectFields+1, l.expectBytes+len(name)+len(value)
		l.continue100 = l.continue100 || hasToken(value, "100-continue")
	default:
		l.fields, l.bytes = l.fields+1, l.bytes+len(name)+len(value)
	}
}

// Continue reports whether an expect field holds the 100-continue token:
// x/net's server then drops every expect field before the goroutine path
// sees the request, and the loops drop them likewise; otherwise they are
// forwarded. (Envoy's connection manager consumes an expect field whose
// value is 100-continue as a whole, and forwards any other.)
func (l *H2List) Continue() bool { return l.continue100 }

// Count is the list's fields and their names' and values' bytes, for
// H2Overflow.
func (l *H2List) Count() (fields, bytes int) {
	fields, bytes = l.fields, l.bytes
	a := l.authority
	if a < 0 {
		a = l.host
	}
	if a > 0 {
		fields, bytes = fields+1, bytes+len(":authority")+a
	}
	if !l.continue100 {
		fields, bytes = fields+l.expectFields, bytes+l.expectBytes
	}
	return fields, bytes
}

// hasToken reports whether the comma-separated list v holds tok, case
// aside, between optional SP and HTAB (httpguts.HeaderValuesContainsToken
// for one value).
func hasToken(v, tok string) bool {
	for len(v) > 0 {
		m, rest, _ := strings.Cut(v, ",")
		v = rest
		if EqualFoldASCII(strings.Trim(m, " \t"), tok) {
			return true
		}
	}
	return false
}

// H2ListSize is the SETTINGS_MAX_HEADER_LIST_SIZE both request paths
// advertise and enforce (a list cut off there is answered 431, as x/net's
// server answers it, before the limits are applied): the largest HPACK
// size (RFC 9113 section 6.5.2: names, values and 32 bytes a field) a
// list within both limits can have, Bytes() + 32*Lines(), so that no list
// Envoy's rule (H2Overflow) takes is cut off. A list over the limits is
// reset by that rule as Envoy resets it only while under this size: one
// over max_request_headers_kb with max_headers_count fields or nearly is
// answered 431. Cookies, which H2Overflow does not count, take from the
// room. A list within both limits has no more fields than bytes (a
// field's name is a byte or more): past Bytes() fields, max_headers_count
// adds nothing, so that the size, and what either path buffers of a
// list, stays bounded by max_request_headers_kb (33 times it at most)
// however large max_headers_count is.
func (l Limits) H2ListSize() uint32 {
	fields := min(int64(l.Lines()), int64(l.Bytes()))
	return uint32(min(int64(l.Bytes())+32*fields, math.MaxInt32))
}

// H2TooManyHeaders is the response code details of a stream reset for
// H2Overflow.
const H2TooManyHeaders = "http2.too_many_headers"

// MaxConnectionTokens is how many comma-separated tokens the Connection
// header of a request may have (its lines together): Envoy's HTTP/1
// codec refuses 10 or more (Utility::sanitizeConnectionHeader in
// source/common/http/utility.cc, called from
// ServerConnectionImpl::onHeadersCompleteBase unless the request is an
// upgrade or a CONNECT), 400 with http1.connection_header_rejected
// (RefuseConnectionHeader).
const MaxConnectionTokens = 9

// MaxTEBytes is the size of a TE value (its lines joined by commas) from
// which a request whose Connection header names TE is refused
// (sanitizeConnectionHeader's MAX_ALLOWED_TE_VALUE_SIZE).
const MaxTEBytes = 256

// ConnToken is what a Connection header's token is to Envoy's codec
// (ConnectionToken).
type ConnToken uint8

const (
	// ConnNames: the token names a header hop-by-hop; it is not forwarded
	// (TE aside: TETrailers).
	ConnNames ConnToken = iota
	// ConnClose, ConnKeepAlive, ConnUpgrade: the connection's options.
	ConnClose
	ConnKeepAlive
	ConnUpgrade
	// ConnSkipped: a token Envoy's codec passes over (http2-settings,
	// connection itself, an empty one).
	ConnSkipped
	// ConnRefused: a token naming X-Forwarded-For, X-Forwarded-Host,
	// X-Forwarded-Proto, whose removal would hide where the request came
	// from, or a pseudo-header: the request is refused.
	ConnRefused
)

// CutConnectionToken cuts the first token off a Connection header value
// v: the first comma-separated piece that is not empty (before trimming;
// ok is false when v has none left), trimmed of SP and HTAB, and what
// follows it. A request has at most MaxConnectionTokens of them over its
// Connection lines.
func CutConnectionToken[T ~string | ~[]byte](v T) (tok, rest T, ok bool) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok, rest = v[:i], v[i:]
		if i < len(v) {
			rest = v[i+1:]
		}
		if len(tok) == 0 {
			v = rest
			continue
		}
		for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
			tok = tok[1:]
		}
		for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
			tok = tok[:len(tok)-1]
		}
		return tok, rest, true
	}
	return v, v, false
}

// ConnectionToken is what a token CutConnectionToken cut is to Envoy's
// codec (sanitizeConnectionHeader; close, keep-alive and upgrade are the
// connection's own).
func ConnectionToken[T ~string | ~[]byte](tok T) ConnToken {
	switch {
	case len(tok) == 0, EqualFoldASCII(tok, "http2-settings"), EqualFoldASCII(tok, "connection"):
		return ConnSkipped
	case EqualFoldASCII(tok, "close"):
		return ConnClose
	case EqualFoldASCII(tok, "keep-alive"):
		return ConnKeepAlive
	case EqualFoldASCII(tok, "upgrade"):
		return ConnUpgrade
	case tok[0] == ':', EqualFoldASCII(tok, "x-forwarded-for"), EqualFoldASCII(tok, "x-forwarded-host"),
		EqualFoldASCII(tok, "x-forwarded-proto"):
		return ConnRefused
	}
	return ConnNames
}

// ConnectionHeader is what Envoy's codec weighs of a request's Connection
// header to refuse the request for it (sanitizeConnectionHeader): each
// request path counts it over the head's lines as it reads them, an h2c
// upgrade's once its h2c headers are stripped (StripH2C), when it is no
// upgrade any more.
type ConnectionHeader struct {
	// Tokens is how many tokens its lines have (CutConnectionToken).
	Tokens int
	// NamesRefused: one of them is ConnRefused; NamesTE: one names TE.
	NamesRefused, NamesTE bool
	// TEBytes is the size of the request's TE value, its lines joined as
	// Envoy joins them (JoinedLen); 0 without one.
	TEBytes int
	// Upgrade: the request is an upgrade (an Upgrade header, and an
	// upgrade token wherever it stands, as Envoy's isUpgrade finds it) or
	// a CONNECT, whose Connection header the codec leaves as it is.
	Upgrade bool
}

// Refused reports whether Envoy's codec refuses the request for its
// Connection header (RefuseConnectionHeader): more than
// MaxConnectionTokens tokens, a token naming a header it will not have
// removed, or TE named with a value of MaxTEBytes or more; never an
// upgrade's.
func (h ConnectionHeader) Refused() bool {
	if h.Upgrade {
		return false
	}
	return h.Tokens > MaxConnectionTokens || h.NamesRefused || h.NamesTE && h.TEBytes >= MaxTEBytes
}

// JoinedLen is the length of a header's value, its lines joined as
// Envoy's header map joins them, once a line of n bytes is added to a
// value of joined bytes so far: a comma between lines, and an empty line
// adding nothing (HeaderMapImpl's append skips it), so that TE's size for
// ConnectionHeader.TEBytes is what Envoy measures.
func JoinedLen(joined, n int) int {
	switch {
	case n == 0:
		return joined
	case joined == 0:
		return n
	}
	return joined + 1 + n
}

// TETrailers reports whether a request's TE value (one of its lines)
// holds the member trailers, case aside, between commas and SP or HTAB:
// Envoy then forwards "TE: trailers" (whatever else the value held), and
// no TE otherwise, whether Connection names TE or not
// (sanitizeConnectionHeader when it does, then the connection manager's
// sanitizeTEHeader in source/common/http/conn_manager_utility.cc, which
// keeps only trailers, since Envoy 1.29.3).
func TETrailers[T ~string | ~[]byte](v T) bool {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		m := v[:i]
		if i < len(v) {
			i++
		}
		v = v[i:]
		for len(m) > 0 && (m[0] == ' ' || m[0] == '\t') {
			m = m[1:]
		}
		for len(m) > 0 && (m[len(m)-1] == ' ' || m[len(m)-1] == '\t') {
			m = m[:len(m)-1]
		}
		if EqualFoldASCII(m, "trailers") {
			return true
		}
	}
	return false
}

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
	RefuseUnimplemented:    {501, "Not Implemented", "", false},
	RefuseConnectionHeader: {400, "Bad Request", "http1.connection_header_rejected", true},
	RefuseHTTPSInPlaintext: {403, "Forbidden", "http1.https_url_on_plaintext_connection", true},
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
