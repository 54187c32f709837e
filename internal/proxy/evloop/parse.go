package evloop

// Parsing a client's HTTP/1.1 request head: finding its end across reads
// (headScanner), then its request line and header lines as spans into
// the buffer (parseRequest), refusing what net/http's server would not
// read, each refusal with the status the client gets (parseError); and
// the character classes the parsers share. Response heads are
// parseresp.go's, chunked bodies chunked.go's.

import (
	"bytes"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// Limits of a head: a request's are its connection manager's
// (proxyroute.Limits, the generation's); a response's Envoy's defaults.
const (
	// maxHeadBytes bounds a response head, and a request head unless its
	// connection manager sets max_request_headers_kb: Envoy's default
	// (60 KiB).
	maxHeadBytes = proxyroute.MaxHeadBytes
	// maxConnTokens bounds the tokens of a request's Connection header:
	// more are refused, as Envoy's codec refuses them.
	maxConnTokens = proxyroute.MaxConnectionTokens
	// maxRespConnTokens bounds the header names a response's Connection
	// header names hop-by-hop; those past it are forwarded.
	maxRespConnTokens = 8
)

// A parse error names how the client is answered (an HTTP/2 stream's
// refusal has its status and, for body, the error's text).
type parseError struct {
	refusal proxyroute.Refusal
	msg     string
}

func (e *parseError) Error() string { return e.msg }

var (
	errTooLarge       = &parseError{proxyroute.RefuseHeadTooLarge, "request header fields too large"}
	errTooManyHeaders = &parseError{proxyroute.RefuseTooManyHeaders, "too many header lines"}
	errBareLF         = &parseError{proxyroute.RefuseMalformed, "bare LF in head"}
	errRequest        = &parseError{proxyroute.RefuseMalformed, "malformed request line"}
	errHeader         = &parseError{proxyroute.RefuseMalformed, "malformed header line"}
	errHost           = &parseError{proxyroute.RefuseMalformed, "repeated or invalid host"}
	errLength         = &parseError{proxyroute.RefuseMalformed, "bad content-length"}
	errChunkedLength  = &parseError{proxyroute.RefuseChunkedLength, "content-length with transfer-encoding"}
	errSmuggle        = &parseError{proxyroute.RefuseMalformed, "transfer-encoding a next hop may read otherwise"}
	errLowVersion     = &parseError{proxyroute.RefuseLowVersion, "http version not supported"}
	errChunked        = &parseError{proxyroute.RefuseTransferEncoding, "transfer-encoding not implemented"}
	errUpgrade        = &parseError{proxyroute.RefuseUnimplemented, "upgrade not implemented"}
	errTarget         = &parseError{proxyroute.RefuseUnimplemented, "only origin-form request targets are implemented"}
	errConnection     = &parseError{proxyroute.RefuseConnectionHeader, "connection header rejected"}
)

// requestLine checks a request line (without its CRLF) as far as a
// parser reading it byte by byte does: a token method, a target without
// blanks or controls whose path's percent-escapes are whole (as net/url
// requires), nor bytes above 0x7f unless stream (an HTTP/2 stream's head,
// whose :path may hold them: route.H1TargetByte), and an HTTP/x.y
// version. It returns the two spaces' offsets, or errRequest.
func requestLine(line []byte, stream bool) (sp1, sp2 int, err error) {
	sp1 = bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return 0, 0, errRequest
	}
	sp2 = bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return 0, 0, errRequest
	}
	sp2 += sp1 + 1
	method, target, proto := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	for _, c := range method {
		if !isTokenChar(c) {
			return 0, 0, errRequest
		}
	}
	path := true // before '?': percent-escapes must be whole, as net/url requires
	for i, c := range target {
		switch {
		case !proxyroute.H1TargetByte(c) && (c < 0x80 || !stream):
			// An HTTP/2 stream's :path may hold bytes above 0x7f
			// (nghttp2's rules); HTTP/1.1's target not (Envoy's codec).
			return 0, 0, errRequest
		case c == '?':
			path = false
		case c == '%' && path:
			if i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2]) {
				return 0, 0, errRequest
			}
		}
	}
	if len(proto) != 8 || string(proto[:5]) != "HTTP/" || proto[6] != '.' || !isDigit(proto[5]) || !isDigit(proto[7]) {
		return 0, 0, errRequest
	}
	return sp1, sp2, nil
}

// checkHeaderLine checks a header line l (without its CRLF) as far as a
// parser reading it byte by byte does: a token name before ':', a value
// without controls but HT. It returns the colon's offset and the value's
// bounds, the blanks around it left out, or errHeader (an obs-fold line
// too: a line starting with SP or HT has no token before ':').
func checkHeaderLine(l []byte) (c, vs, ve int, err error) {
	c = bytes.IndexByte(l, ':')
	if c <= 0 {
		return 0, 0, 0, errHeader
	}
	for _, ch := range l[:c] {
		if !isTokenChar(ch) {
			return 0, 0, 0, errHeader
		}
	}
	vs, ve = c+1, len(l)
	for vs < ve && (l[vs] == ' ' || l[vs] == '\t') {
		vs++
	}
	for ve > vs && (l[ve-1] == ' ' || l[ve-1] == '\t') {
		ve--
	}
	for _, ch := range l[vs:ve] {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return 0, 0, 0, errHeader
		}
	}
	return c, vs, ve, nil
}

// lineError is the error of the first of a head's complete lines, b
// (from its request line, each ending in CRLF), that does not parse as a
// line (requestLine, checkHeaderLine); nil when all do. What only the whole
// head can tell (a second Host, the framing) is not looked at.
func lineError(b []byte) error {
	eol := bytes.IndexByte(b, '\n')
	if eol < 1 {
		return nil
	}
	if _, _, err := requestLine(b[:eol-1], false); err != nil {
		return err
	}
	for p := eol + 1; p < len(b); {
		i := bytes.IndexByte(b[p:], '\n')
		if i < 1 {
			return nil
		}
		if _, _, _, err := checkHeaderLine(b[p : p+i-1]); err != nil {
			return err
		}
		p += i + 1
	}
	return nil
}

// span is a range of the buffer a head was parsed from.
type span struct{ off, end int32 }

func (s span) of(b []byte) []byte { return b[s.off:s.end] }

// headScanner finds the end of a head across reads: it remembers where
// the next line starts, so bytes already scanned are not scanned again.
type headScanner struct {
	line int // offset of the first byte of the line being scanned
	// start is the offset of a request's first line, past the empty
	// lines before it (scanRequest); 0 for a response.
	start int
}

// scanRequest is scan for a request head of at most max bytes: CR and LF
// bytes before its request line are skipped (RFC 9112 section 2.2 says a
// server SHOULD ignore at least one empty line there; Envoy's codecs,
// llhttp's and http-parser's start states, skip any CR and LF, as Go's
// server, which the goroutine path reads heads with, does). They count
// in the head's size; the head timeout starts at the request line, and
// they do not restart the idle timeout (readIdle): a client cannot hold
// the connection with them. skip is how many came before the request
// line, the head b[skip:n].
func (s *headScanner) scanRequest(b []byte, max int) (skip, n int, err error) {
	if s.line == s.start && s.start < len(b) && (b[s.start] == '\r' || b[s.start] == '\n') {
		s.skipEmpty(b)
	}
	n, err = s.scan(b, max)
	if err == errTooLarge {
		// Envoy's parser (llhttp) fails at a malformed line as it reads
		// it, before its callbacks count the head past the limit: such a
		// line among those read within it is answered as malformed.
		if e := lineError(b[s.start:s.line]); e != nil {
			err = e
		}
	}
	if skip = s.start; n != 0 || err != nil {
		s.start = 0
	}
	return skip, n, err
}

// skipEmpty moves the request's start past the CR and LF bytes at it.
func (s *headScanner) skipEmpty(b []byte) {
	for s.start < len(b) && (b[s.start] == '\r' || b[s.start] == '\n') {
		s.start++
	}
	s.line = s.start
}

// scan looks for the empty line ending the head in b (the whole head so
// far, from its first byte), of at most max bytes. It returns the head's
// length including the final CRLF, or 0 if the head is incomplete. Lines
// must end in CRLF.
func (s *headScanner) scan(b []byte, max int) (int, error) {
	for {
		i := bytes.IndexByte(b[s.line:], '\n')
		if i < 0 {
			if len(b) > max {
				return 0, errTooLarge
			}
			return 0, nil
		}
		end := s.line + i // index of '\n'
		if end == 0 || b[end-1] != '\r' {
			return 0, errBareLF
		}
		if end+1 > max {
			return 0, errTooLarge
		}
		empty := end-1 == s.line
		s.line = end + 1
		if empty {
			if end-1 == s.start {
				// An empty first line of a response.
				return 0, errRequest
			}
			n := s.line
			s.line = 0
			return n, nil
		}
	}
}

// request is a parsed request head: spans into the buffer it was parsed
// from, valid while that buffer is.
type request struct {
	method, target span
	minor          byte // HTTP/1.<minor>
	host           span
	hasHost        bool
	contentLength  int64
	hasLength      bool
	chunked        bool // Transfer-Encoding: chunked
	head           bool // HEAD: the response has no body
	closeAfter     bool // the client asked to close, or HTTP/1.0 without keep-alive
	hasRequestID   bool // an x-request-id line holds an ID weft keeps (proxyroute.KeepsRequestID)
	// expectContinue: its Expect lines ask for 100-continue
	// (proxyroute.ExpectContinue); they are not forwarded.
	expectContinue bool
	hasXFP         bool
	// grpc: the first Content-Type line makes it a gRPC request
	// (proxyroute.IsGRPC), whose local replies are gRPC statuses; typed:
	// a Content-Type line came.
	grpc, typed bool
	// lines are the header lines, name and value, in order.
	lines []headerLine
	// connTokens are the header names the Connection header declares
	// hop-by-hop (proxyroute.ConnNames); connAll counts all its tokens
	// (proxyroute.CutConnectionToken), connKept those an h2c upgrade
	// keeps (not proxyroute.H2CDropsToken); connRefused: one names a
	// header Envoy refuses to have nominated; connTE: one names TE;
	// connUpgrade: one is upgrade.
	connTokens                       [maxConnTokens]span
	nConn                            int
	connAll, connKept                int
	connRefused, connTE, connUpgrade bool
	// h2c: the head is an h2c upgrade request, which is served as an
	// ordinary one (proxyroute.StripH2C): its Upgrade, HTTP2-Settings
	// and Connection lines are gone, and h2cConn is what is left of its
	// Connection header (the kept tokens joined by commas; empty: no
	// Connection header), the value routes and access logs see.
	h2c     bool
	h2cConn []byte
	// teTrailers: a TE line holds trailers (proxyroute.TETrailers), and
	// "te: trailers" is forwarded in place of the TE lines, which are
	// not; teBytes is their values' size joined as Envoy joins them
	// (proxyroute.JoinedLen).
	teTrailers bool
	teBytes    int
}

type headerLine struct {
	name, value span
	line        span // the whole line with its CRLF
	hop         bool // not forwarded
	gone        bool // not in the request at all (an h2c upgrade's): not forwarded, routed on nor logged
}

// parseRequest parses the complete head b (as scanRequest found it, from
// its request line). http10 says whether HTTP/1.0 requests are served
// (accept_http_10); any other version but HTTP/1.1 is refused
// (errLowVersion), as Envoy's codec, which reads them all as HTTP/1.0,
// refuses them, once the framing headers are checked. A head with more
// than maxLines header lines is refused (errTooManyHeaders). stream: b
// is an HTTP/2 stream's head as h2Headers wrote it, whose Expect lines
// are expectations to forward (it kept none with 100-continue).
func parseRequest(b []byte, r *request, http10 bool, maxLines int, stream bool) error {
	*r = request{lines: r.lines[:0], h2cConn: r.h2cConn[:0]}
	eol := bytes.IndexByte(b, '\n') - 1 // '\r'
	line := b[:eol]
	sp1, sp2, err := requestLine(line, stream)
	if err != nil {
		return err
	}
	method, target, proto := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	// HTTP/1.1, or read as HTTP/1.0 (minor 0) until refused below.
	otherVersion := false
	switch string(proto[5:]) {
	case "1.1":
		r.minor = 1
	case "1.0":
	default:
		otherVersion = true
	}
	if string(method) == "CONNECT" || target[0] != '/' {
		if string(method) == "OPTIONS" && string(target) == "*" {
			return errTarget
		}
		return errTarget
	}
	r.method = span{0, int32(sp1)}
	r.target = span{int32(sp1 + 1), int32(sp2)}
	r.head = string(method) == "HEAD"
	r.closeAfter = r.minor == 0
	var upgrade bool                  // an Upgrade line
	var h2c proxyroute.H2C            // what the Upgrade lines ask for
	var expect proxyroute.Expectation // what the Expect lines ask
	for p := eol + 2; p < len(b)-2; {
		e := p + bytes.IndexByte(b[p:], '\n') - 1
		l := b[p:e]
		if len(r.lines) == maxLines {
			return errTooManyHeaders
		}
		c, vs, ve, err := checkHeaderLine(l)
		if err != nil {
			return err
		}
		name := l[:c]
		h := headerLine{name: span{int32(p), int32(p + c)}, value: span{int32(p + vs), int32(p + ve)}, line: span{int32(p), int32(e + 2)}}
		val := l[vs:ve]
		switch {
		case equalFold(name, "host"):
			if r.hasHost {
				return errHost
			}
			for _, ch := range val {
				if !isHostChar(ch) {
					return errHost
				}
			}
			r.hasHost, r.host = true, h.value
		case equalFold(name, "content-length"):
			n, ok := parseLength(val)
			if !ok || (r.hasLength && n != r.contentLength) {
				return errLength
			}
			r.hasLength, r.contentLength = true, n
		case equalFold(name, "transfer-encoding"):
			// As Go's server: one coding, chunked; the body is relayed as
			// it is, so the header is too.
			if r.chunked || !equalFold(val, "chunked") {
				return errChunked
			}
			r.chunked = true
		case equalFold(name, "connection"):
			h.hop = true
			r.connection(b, h.value)
		case equalFold(name, "upgrade"):
			upgrade, h2c = true, proxyroute.AddUpgrade(h2c, val)
		case equalFold(name, "keep-alive"), equalFold(name, "proxy-connection"):
			h.hop = true
		case equalFold(name, "te"):
			// Not forwarded as it came: "te: trailers" is, when one of
			// its lines holds trailers (dispatch).
			h.hop, r.teBytes = true, proxyroute.JoinedLen(r.teBytes, len(val))
			r.teTrailers = r.teTrailers || proxyroute.TETrailers(val)
		case equalFold(name, "expect") && !stream:
			// 100-continue is answered by the proxy (dispatch) and not
			// forwarded; any other expectation is forwarded, as Envoy
			// forwards it.
			expect = proxyroute.ExpectLine(expect, val)
		case equalFold(name, "x-request-id"):
			// An empty one is not forwarded; without another, dispatch
			// adds weft's ID (proxyroute.KeepsRequestID).
			if proxyroute.KeepsRequestID(val) {
				r.hasRequestID = true
			} else {
				h.hop = true
			}
		case equalFold(name, "x-forwarded-proto"):
			r.hasXFP = true
		case !r.typed && equalFold(name, "content-type"):
			// The first line's, as net/http's Header.Get reads it on the
			// goroutine path.
			r.typed, r.grpc = true, proxyroute.IsGRPC(val)
		}
		r.lines = append(r.lines, h)
		p = e + 2
	}
	if r.chunked && r.hasLength {
		// Both framings: refused, as a smuggling attempt would be.
		return errChunkedLength
	}
	tokens := r.connAll
	if r.h2c = h2c == proxyroute.H2CAlone && r.connUpgrade; r.h2c {
		// Envoy's codec strips an h2c upgrade's headers before it
		// sanitizes the Connection tokens left.
		tokens = r.connKept
		r.stripH2C(b)
	}
	conn := proxyroute.ConnectionHeader{Tokens: tokens, NamesRefused: r.connRefused, NamesTE: r.connTE,
		TEBytes: r.teBytes, Upgrade: upgrade && r.connUpgrade && !r.h2c}
	if conn.Refused() {
		// Where the goroutine path checks it too (checkHead): once the
		// head is read, before its version.
		return errConnection
	}
	if r.minor == 0 && (!http10 || otherVersion) {
		return errLowVersion
	}
	if r.chunked && r.minor == 0 {
		// A chunked HTTP/1.0 body net/http would not read as one.
		return errSmuggle
	}
	if expect == proxyroute.ExpectContinue {
		r.expectContinue = true
		for i := range r.lines {
			if equalFold(r.lines[i].name.of(b), "expect") {
				r.lines[i].hop = true
			}
		}
	}
	if (upgrade || r.connUpgrade) && !r.h2c {
		return errUpgrade
	}
	// An HTTP/1.1 request without Host is read: dispatch answers it, as
	// Envoy's connection manager does once its codec read the head.
	// Headers the Connection header names are hop-by-hop too, but the
	// body's framing must reach the upstream; TE is as TE lines are
	// (teTrailers).
	for i := range r.lines {
		for _, t := range r.connTokens[:r.nConn] {
			if proxyroute.EqualFoldASCII(r.lines[i].name.of(b), t.of(b)) {
				if r.chunked && equalFold(r.lines[i].name.of(b), "transfer-encoding") {
					return errSmuggle
				}
				r.lines[i].hop = true
			}
		}
	}
	return nil
}

// connection reads a Connection header's tokens as Envoy's codec reads
// them (proxyroute.CutConnectionToken, proxyroute.ConnectionToken); once
// more than maxConnTokens are kept (connKept, which never counts more
// than connAll) they are counted, and looked at for upgrade only: the
// head is refused unless it is an upgrade, which Envoy (isUpgrade) and
// the goroutine path find wherever the token is. Up to there, the tokens
// an h2c upgrade keeps are all read, however many it drops.
func (r *request) connection(b []byte, v span) {
	for tok, rest, ok := proxyroute.CutConnectionToken(v.of(b)); ok; tok, rest, ok = proxyroute.CutConnectionToken(rest) {
		r.connAll++
		if !proxyroute.H2CDropsToken(tok) {
			r.connKept++
		}
		if r.connKept > maxConnTokens {
			r.connUpgrade = r.connUpgrade || proxyroute.ConnectionToken(tok) == proxyroute.ConnUpgrade
			continue
		}
		switch proxyroute.ConnectionToken(tok) {
		case proxyroute.ConnClose:
			r.closeAfter = true
		case proxyroute.ConnKeepAlive:
			if r.minor == 0 {
				r.closeAfter = false
			}
		case proxyroute.ConnUpgrade:
			r.connUpgrade = true
		case proxyroute.ConnRefused:
			r.connRefused = true
		case proxyroute.ConnNames:
			r.connTE = r.connTE || equalFold(tok, "te")
			off := int32(cap(b[:0]) - cap(tok[:0])) // tok's offset in b
			r.connTokens[r.nConn] = span{off, off + int32(len(tok))}
			r.nConn++
		}
	}
}

// stripH2C removes an h2c upgrade's headers from the request, as
// proxyroute.StripH2C does on the goroutine path: its Upgrade,
// HTTP2-Settings and Connection lines are gone, and h2cConn holds the
// Connection tokens the upgrade keeps, joined by commas.
func (r *request) stripH2C(b []byte) {
	for i := range r.lines {
		h := &r.lines[i]
		name := h.name.of(b)
		switch {
		case equalFold(name, "connection"):
			for tok, rest, ok := proxyroute.CutConnectionToken(h.value.of(b)); ok; tok, rest, ok = proxyroute.CutConnectionToken(rest) {
				if proxyroute.H2CDropsToken(tok) {
					continue
				}
				if len(r.h2cConn) > 0 {
					r.h2cConn = append(r.h2cConn, ',')
				}
				r.h2cConn = append(r.h2cConn, tok...)
			}
		case equalFold(name, "upgrade"), equalFold(name, "http2-settings"):
		default:
			continue
		}
		h.hop, h.gone = true, true
	}
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// isHostChar reports whether c may appear in a Host header, as Go's
// server (httpguts.ValidHostHeader) allows it.
func isHostChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '!', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', ':', ';', '=', '[', ']', '_', '~':
		return true
	}
	return false
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// equalFold compares b with the lower-case ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
