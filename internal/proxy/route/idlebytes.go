package route

import (
	"bytes"

	"golang.org/x/net/http/httpguts"
)

// IdleBytes is what bytes an HTTP/1.1 upstream sends on a pooled
// connection with no request on it are to Envoy's codec client, one rule
// for both request paths (the loops read them as they come, the goroutine
// path when it checks the idle connection before reusing it). Either way
// the connection is closed; what differs is whether it counts in the
// cluster's upstream_cx_protocol_error.
//
// Envoy's HTTP/1.1 client codec fails a response head that comes whole
// with no request pending as a premature response
// (ClientConnectionImpl::onHeadersCompleteBase), and one that does not
// parse as its protocol error, a first byte other than 'H' included
// (BalsaParser::execute, HPE_INVALID_CONSTANT), as does a head past
// max_response_headers_kb; its codec client counts either in
// upstream_cx_protocol_error and closes the connection
// (CodecClient::onData), but for a premature response whose status is
// 408, which a server sends to close a kept-alive connection. Part of a
// head and then the connection's end counts nothing: the codec client
// hands the codec no end of input when no request is active
// (CodecClient::onEvent).
type IdleBytes uint8

const (
	// IdlePartial: no verdict yet, the bytes are part of a head (or
	// none); the connection's end now counts nothing.
	IdlePartial IdleBytes = iota
	// IdleProtocolError: counted in upstream_cx_protocol_error.
	IdleProtocolError
	// IdleRequestTimeout: a whole 408 head, not counted.
	IdleRequestTimeout
)

// ReadIdleBytes tells what b, the bytes an HTTP/1.1 upstream sent on an
// idle connection (from the first), are. It parses only as much as tells
// a whole 408 head from anything else: the status line, and that each
// header line up to the empty line has a name and a colon.
func ReadIdleBytes(b []byte) IdleBytes {
	if len(b) == 0 {
		return IdlePartial
	}
	if b[0] != 'H' {
		return IdleProtocolError
	}
	end := headEnd(b)
	if end < 0 {
		if len(b) > MaxHeadBytes {
			return IdleProtocolError
		}
		return IdlePartial
	}
	if end > MaxHeadBytes {
		return IdleProtocolError
	}
	head := b[:end]
	eol := bytes.IndexByte(head, '\n')
	status, ok := statusOf(bytes.TrimSuffix(head[:eol], []byte("\r")))
	if !ok {
		return IdleProtocolError
	}
	for rest := head[eol+1:]; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := bytes.TrimSuffix(rest[:i], []byte("\r"))
		rest = rest[i+1:]
		if len(line) == 0 {
			break // the empty line that ends the head
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || !httpguts.ValidHeaderFieldName(string(line[:c])) {
			return IdleProtocolError
		}
	}
	if status == 408 {
		return IdleRequestTimeout
	}
	return IdleProtocolError
}

// headEnd returns the length of the head at b's start, its empty line
// included (CRLF or LF line ends), or -1 if it has not ended. b's first
// line is not empty (it starts with 'H').
func headEnd(b []byte) int {
	for p := 0; p < len(b); {
		i := bytes.IndexByte(b[p:], '\n')
		if i < 0 {
			return -1
		}
		line := b[p : p+i]
		p += i + 1
		if len(line) == 0 || string(line) == "\r" {
			return p
		}
	}
	return -1
}

// statusOf parses a status line, "HTTP/1.x NNN" and an optional reason.
func statusOf(line []byte) (int, bool) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] != '0' && line[7] != '1' || line[8] != ' ' ||
		len(line) > 12 && line[12] != ' ' {
		return 0, false
	}
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false
		}
		st = st*10 + int(c-'0')
	}
	return st, st >= 100
}
