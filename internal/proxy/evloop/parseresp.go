package evloop

// Parsing an upstream's HTTP/1.1 response head (as scan found it): its
// status, body framing, whether the connection closes after it, and its
// header lines, those the proxy leaves out or writes again marked
// hop-by-hop. A malformed head is answered 502 (up_linux.go).

import (
	"bytes"
	"errors"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// response is a parsed response head.
type response struct {
	status        int
	contentLength int64
	hasLength     bool
	length        span // the first Content-Length's value, as written
	chunked       bool
	closeAfter    bool
	hasDate       bool // the proxy adds one when the upstream sent none
	lines         []headerLine
	statusLine    span // "HTTP/1.1 200 OK" without CRLF
}

var errResponse = errors.New("malformed upstream response head")

// parseResponse parses the complete response head b.
func parseResponse(b []byte, r *response) error {
	*r = response{lines: r.lines[:0]}
	eol := bytes.IndexByte(b, '\n') - 1
	line := b[:eol]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return errResponse
	}
	minor := line[7]
	if minor != '0' && minor != '1' {
		return errResponse
	}
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errResponse
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 || (len(line) > 12 && line[12] != ' ') {
		return errResponse
	}
	r.status, r.statusLine, r.closeAfter = st, span{0, int32(eol)}, minor == '0'
	keepAlive10 := false
	var tokens [maxRespConnTokens]span
	nTok := 0
	for p := eol + 2; p < len(b)-2; {
		e := p + bytes.IndexByte(b[p:], '\n') - 1
		l := b[p:e]
		if len(r.lines) == proxyroute.MaxHeaders {
			return errResponse
		}
		c := bytes.IndexByte(l, ':')
		if c <= 0 {
			return errResponse
		}
		name := l[:c]
		for _, ch := range name {
			if !isTokenChar(ch) {
				return errResponse
			}
		}
		vs, ve := c+1, len(l)
		for vs < ve && (l[vs] == ' ' || l[vs] == '\t') {
			vs++
		}
		for ve > vs && (l[ve-1] == ' ' || l[ve-1] == '\t') {
			ve--
		}
		val := l[vs:ve]
		h := headerLine{name: span{int32(p), int32(p + c)}, value: span{int32(p + vs), int32(p + ve)}, line: span{int32(p), int32(e + 2)}}
		switch {
		case equalFold(name, "content-length"):
			n, ok := parseLength(val)
			if !ok || (r.hasLength && n != r.contentLength) {
				return errResponse
			}
			if !r.hasLength {
				r.length = h.value
			}
			r.hasLength, r.contentLength = true, n
			h.hop = true // written again by the proxy
		case equalFold(name, "transfer-encoding"):
			if !equalFold(val, "chunked") {
				return errResponse
			}
			r.chunked = true
			h.hop = true
		case equalFold(name, "connection"):
			h.hop = true
			for _, tok := range bytes.Split(val, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				switch {
				case equalFold(tok, "close"):
					r.closeAfter = true
				case equalFold(tok, "keep-alive"):
					keepAlive10 = true
				case len(tok) > 0 && nTok < maxRespConnTokens:
					off := int32(cap(b[:0]) - cap(tok[:0]))
					tokens[nTok] = span{off, off + int32(len(tok))}
					nTok++
				}
			}
		case equalFold(name, "keep-alive"), equalFold(name, "proxy-connection"), equalFold(name, "upgrade"),
			equalFold(name, "server"), equalFold(name, "x-envoy-upstream-service-time"):
			h.hop = true
		case equalFold(name, "date"):
			r.hasDate = true
		}
		r.lines = append(r.lines, h)
		p = e + 2
	}
	if minor == '0' && keepAlive10 {
		r.closeAfter = false
	}
	if r.chunked {
		r.hasLength = false
	}
	for i := range r.lines {
		for _, t := range tokens[:nTok] {
			if proxyroute.EqualFoldASCII(r.lines[i].name.of(b), t.of(b)) {
				r.lines[i].hop = true
			}
		}
	}
	return nil
}

// bodyless reports whether a response to this request has no body
// whatever its headers say (RFC 9112 §6.3).
func (r *response) bodyless(head bool) bool {
	return head || r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200)
}
