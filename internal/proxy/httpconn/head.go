package httpconn

import "github.com/weftmesh/weft/internal/proxy/route"

// headCheck looks at the raw bytes of an HTTP/1.1 request head for what
// net/http's reader accepts but a proxy must refuse, because the next hop
// may frame the message differently (request smuggling):
//
//   - Content-Length together with Transfer-Encoding. RFC 9112 section
//     6.3 says to treat it as an error, and an intermediary that forwards
//     it anyway must drop Content-Length, which Go's reader does. Envoy
//     answers 400 (http1.content_length_and_chunked_not_allowed) unless
//     allow_chunked_length is set.
//   - obs-fold, a header line continued on the next line after a space
//     or tab. RFC 9112 section 5.2: reject with 400, or replace each fold
//     with spaces. Go joins the lines; Envoy's parser (Balsa, configured
//     without disallow_header_continuation_lines) strips the CR and LF
//     and keeps the value. weft proxy takes the RFC's first choice and
//     refuses: it cannot know how the next hop would read the fold.
//   - a bare LF as a line ending. RFC 9112 section 2.2 allows a
//     recipient to accept one, which Go and Envoy's parser do; a proxy
//     accepting it forwards a head another parser may cut elsewhere, so
//     weft proxy refuses it with 400.
//
// It counts the header lines too: Go's reader takes any number, Envoy
// refuses more than max_headers_count (100 by default) with 431;
// and Host lines, of which Go's reader keeps the first (its server
// refuses more than one, as the event loops do).
// Transfer-Encoding values other than a single "chunked" are refused by
// Go's reader already; the fast path answers them 501 as Envoy does
// (http1.invalid_transfer_encoding).
//
// The check is a small state machine fed the head's bytes as they arrive,
// so that it needs no copy of the head and stops at its end.
type headCheck struct {
	lines    int // complete lines seen
	lineLen  int // bytes of the current line, not counting CR
	prevCR   bool
	inName   bool // in a header field name
	nameLen  int
	name     [len("transfer-encoding")]byte
	nameLong bool
	done     bool // the empty line ending the head was seen

	contentLength, transferEncoding, host int // header lines of each
	fold, bareLF                          bool
}

func (h *headCheck) reset() { *h = headCheck{} }

// scan feeds b, the next bytes of the stream; it reports whether the
// head ended within them (bytes after the end are ignored).
func (h *headCheck) scan(b []byte) bool {
	if h.done {
		return true
	}
	for _, c := range b {
		switch c {
		case '\n':
			if !h.prevCR {
				h.bareLF = true
			}
			h.prevCR = false
			if h.lineLen == 0 && h.lines > 0 {
				h.done = true
				return true
			}
			h.endName()
			h.lines++
			h.lineLen = 0
			h.inName, h.nameLen, h.nameLong = true, 0, false
			continue
		case '\r':
			if !h.prevCR {
				h.prevCR = true
				continue
			}
			// CR CR: the first is part of the line; net/http refuses it.
		}
		h.prevCR = false
		if h.lines > 0 && h.lineLen == 0 && (c == ' ' || c == '\t') {
			h.fold = true
		}
		h.lineLen++
		if h.lines == 0 || !h.inName {
			continue
		}
		if c == ':' {
			h.endName()
			continue
		}
		if h.nameLen < len(h.name) {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			h.name[h.nameLen] = c
			h.nameLen++
		} else {
			h.nameLong = true
		}
	}
	return false
}

// endName counts the header line whose name just ended.
func (h *headCheck) endName() {
	if !h.inName || h.lines == 0 || h.nameLong {
		h.inName = false
		return
	}
	h.inName = false
	switch string(h.name[:h.nameLen]) {
	case "content-length":
		h.contentLength++
	case "transfer-encoding":
		h.transferEncoding++
	case "host":
		h.host++
	}
}

// problem is the refusal the head's raw bytes call for, with at most
// maxLines header lines, or 0; in the order the event loops' parser finds
// them (evloop's parseRequest: Content-Length with Transfer-Encoding once
// the whole head is read).
func (h *headCheck) problem(maxLines int) route.Refusal {
	switch {
	case h.bareLF:
		return route.RefuseMalformed
	case h.lines-1 > maxLines: // the request line is one
		return route.RefuseTooManyHeaders
	case h.fold, h.host > 1:
		return route.RefuseMalformed
	case h.contentLength > 0 && h.transferEncoding > 0:
		return route.RefuseChunkedLength
	}
	return 0
}
