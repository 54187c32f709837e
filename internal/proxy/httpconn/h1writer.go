package httpconn

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/internal/proxy/route"
)

// h1Writer is the fast path's http.ResponseWriter. The head is written
// when the first body byte, a flush or the end of the handler needs it:
// framed by the response's Content-Length, else chunked (HTTP/1.1) or
// ended by closing the connection (HTTP/1.0). A response that declares
// trailers is chunked. Writes go to the connection's buffer; a flush or
// the end of the response sends them.
type h1Writer struct {
	hc         *h1Conn
	req        *http.Request
	header     http.Header
	status     int  // final status; 0 until WriteHeader
	wroteHead  bool // head is in the buffer
	chunked    bool
	noBody     bool  // HEAD, 204, 304
	length     int64 // declared Content-Length; -1 when none
	written    int64 // body bytes written
	closeAfter bool  // the connection ends after this response
	hijacked   bool
	err        error // first write error: the client is gone
}

// Header implements http.ResponseWriter.
func (w *h1Writer) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. 1xx statuses other than
// 101 are sent at once as informational responses.
func (w *h1Writer) WriteHeader(code int) {
	if w.status != 0 || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeStatusLine(code)
		_ = w.header.Write(w.hc.bw)
		_, _ = io.WriteString(w.hc.bw, "\r\n")
		w.flush()
		return
	}
	w.status = code
}

func (w *h1Writer) writeStatusLine(code int) {
	b := w.hc.scratch[:0]
	if w.req.ProtoAtLeast(1, 1) {
		b = append(b, "HTTP/1.1 "...)
	} else {
		b = append(b, "HTTP/1.0 "...)
	}
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	_, _ = w.hc.bw.Write(b)
}

// writeHead puts the status line and headers in the buffer, choosing the
// body's framing.
func (w *h1Writer) writeHead() {
	w.hc.stopGone() // the response begins: no more waiting
	w.wroteHead = true
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.header
	code := w.status
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified ||
		code == http.StatusSwitchingProtocols
	delete(h, "Transfer-Encoding") // the framing is this writer's
	if code == http.StatusNoContent {
		delete(h, "Content-Length")
	}
	if v := h["Content-Length"]; len(v) > 0 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 && len(v) == 1 {
			w.length = n
		} else {
			delete(h, "Content-Length")
		}
	}
	if _, ok := h["Trailer"]; ok && !w.noBody {
		w.length = -1
		delete(h, "Content-Length")
	}
	announce := false // "Transfer-Encoding: chunked" without a chunked body
	if w.length < 0 {
		switch {
		case !w.req.ProtoAtLeast(1, 1):
			// HTTP/1.0 has no chunks: a response without a length ends
			// the connection, a bodyless one too, as Envoy's connection
			// manager closes an HTTP/1.0 connection after any response
			// without content-length (encodeHeaders, saw_connection_close_).
			w.closeAfter = true
		case !w.noBody:
			w.chunked = true
		case route.HeadChunked(w.req.Method == http.MethodHead, code):
			// Envoy's HTTP/1.1 encoder announces a HEAD answer without
			// content-length as chunked, and writes no body
			// (StreamEncoderImpl::encodeHeadersBase).
			announce = true
		}
	}
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") || w.hc.state.Load() == connClosing {
		// Draining: this response is the connection's last.
		w.closeAfter = true
	}
	if w.closeAfter {
		h.Set("Connection", "close")
	} else if !w.req.ProtoAtLeast(1, 1) {
		h.Set("Connection", "keep-alive") // HTTP/1.0 closes unless told otherwise
	}
	bw := w.hc.bw
	w.writeStatusLine(code)
	if _, ok := h["Date"]; !ok {
		b := append(w.hc.scratch[:0], "Date: "...)
		b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
		_, _ = bw.Write(b)
	}
	_ = h.Write(bw)
	if w.chunked || announce {
		_, _ = io.WriteString(bw, "Transfer-Encoding: chunked\r\n")
	}
	_, _ = io.WriteString(bw, "\r\n")
}

// Write implements http.ResponseWriter.
func (w *h1Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHead {
		w.writeHead()
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	var short error
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p = p[:w.length-w.written]
		short = http.ErrContentLength
	}
	bw := w.hc.bw
	if w.chunked {
		b := strconv.AppendInt(w.hc.scratch[:0], int64(len(p)), 16)
		b = append(b, "\r\n"...)
		_, _ = bw.Write(b)
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = io.WriteString(bw, "\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.err = err
		return n, err
	}
	return n, short
}

// Flush implements http.Flusher.
func (w *h1Writer) Flush() {
	if w.hijacked {
		return
	}
	if !w.wroteHead {
		w.writeHead()
	}
	w.flush()
}

func (w *h1Writer) flush() {
	if w.err == nil {
		w.err = w.hc.bw.Flush()
	}
}

// SetWriteDeadline is http.ResponseController's: a stream's timeout sets
// one to end a write the client does not read (stream.abortWrites), from
// the timer's goroutine, before the handler returns. A write it cut
// leaves the connection to close (w.err); else serveOne clears it
// before the next request.
func (w *h1Writer) SetWriteDeadline(t time.Time) error {
	w.hc.writeDeadline.Store(true)
	return w.hc.c.SetWriteDeadline(t)
}

// Hijack implements http.Hijacker, for upgrades. Bytes the client sent
// after the request are read first from the returned connection.
func (w *h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked || w.wroteHead {
		return nil, nil, http.ErrHijacked
	}
	w.hc.stopGone() // the hijacker reads the connection
	w.hijacked = true
	c := w.hc.c
	_ = c.SetDeadline(time.Time{})
	conn := net.Conn(c)
	if w.hc.br.Buffered() > 0 {
		conn = &replayConn{Conn: c, br: w.hc.br}
	}
	return conn, bufio.NewReadWriter(bufio.NewReader(conn), w.hc.bw), nil
}

// finish ends the response: the head if no body was written (with
// Content-Length: 0 when nothing declared another length, but to a HEAD
// request, as Envoy's HTTP/1.1 encoder frames a response without a body:
// StreamEncoderImpl::encodeHeadersBase), the last chunk and trailers, and
// a flush.
func (w *h1Writer) finish() {
	if w.err != nil {
		return
	}
	if !w.wroteHead {
		h := w.header
		_, declared := h["Content-Length"]
		_, trailers := h["Trailer"]
		if !declared && !trailers && w.req.Method != http.MethodHead && w.status != http.StatusNoContent &&
			w.status != http.StatusNotModified && (w.status == 0 || w.status >= 200) {
			h["Content-Length"] = []string{"0"}
		}
		w.writeHead()
	}
	bw := w.hc.bw
	switch {
	case w.chunked:
		_, _ = io.WriteString(bw, "0\r\n")
		w.writeTrailers()
		_, _ = io.WriteString(bw, "\r\n")
	case w.length >= 0 && w.written < w.length && !w.noBody:
		// Shorter than declared: the client can only tell by the close.
		w.closeAfter = true
	}
	w.flush()
}

// writeTrailers writes the trailers a handler set: values of keys the
// Trailer header declared, and keys prefixed with http.TrailerPrefix.
func (w *h1Writer) writeTrailers() {
	var t http.Header
	for _, decl := range w.header["Trailer"] {
		for _, k := range strings.Split(decl, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if vv, ok := w.header[k]; ok && k != "" {
				if t == nil {
					t = http.Header{}
				}
				t[k] = vv
			}
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if t == nil {
				t = http.Header{}
			}
			t[strings.TrimPrefix(k, http.TrailerPrefix)] = vv
		}
	}
	if t != nil {
		_ = t.Write(w.hc.bw)
	}
}
