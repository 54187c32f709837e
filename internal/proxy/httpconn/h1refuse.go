package httpconn

// Request heads the HTTP/1.1 fast path refuses before routing, answered,
// counted and logged as Envoy's connection manager does (route.Refusal),
// and as the event loops do (evloop's badRequest).

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// readRefusal is the refusal for a head net/http's reader failed on with
// err, or 0 when there is no one to answer (the client went away).
func readRefusal(err error) route.Refusal {
	var ne net.Error
	switch {
	case errors.Is(err, errHeadTooLarge):
		return route.RefuseHeadTooLarge
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return 0
	case errors.As(err, &ne):
		if ne.Timeout() {
			return route.RefuseHeaderTimeout
		}
		return 0
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"),
		strings.HasPrefix(err.Error(), "too many transfer encodings"):
		// Go's reader refuses codings other than one "chunked"; Envoy
		// answers those 501 (http1.invalid_transfer_encoding), as RFC
		// 9112 section 6.1 suggests.
		return route.RefuseTransferEncoding
	}
	return route.RefuseMalformed
}

// checkHead is the refusal for a head net/http's reader read, or 0: its
// fields as net/http's server checks them, its raw bytes and framing
// (headCheck), its Connection header (once an h2c upgrade's headers are
// stripped from req), an https:// target (httpsRefused) and its version,
// in the order the event loops' parser finds them (but where two faults
// of one head are in another order on its lines).
func (hc *h1Conn) checkHead(req *http.Request) route.Refusal {
	for i := 0; i < len(req.RequestURI); i++ {
		if !route.H1TargetByte(req.RequestURI[i]) {
			// Raw UTF-8, say: Go's reader takes it, Envoy's codec not.
			return route.RefuseMalformed
		}
	}
	if !fieldsValid(req) {
		return route.RefuseMalformed
	}
	if r := hc.chk.problem(hc.maxLines); r != 0 {
		return r
	}
	// An h2c upgrade is served as HTTP/1.1 without its h2c headers, as
	// Envoy's codec strips them once the head is read, before it
	// sanitizes what is left of Connection (route.StripH2C).
	route.StripH2C(req.Header)
	if cv := req.Header["Connection"]; len(cv) > 0 && connectionHeader(req, cv).Refused() {
		return route.RefuseConnectionHeader
	}
	if hc.httpsRefused && req.URL.Scheme == "https" {
		// Envoy's codec, after the Connection header and before the
		// version (handlePath); net/http's URL has the scheme lower-cased.
		return route.RefuseHTTPSInPlaintext
	}
	switch {
	case req.ProtoMajor == 1 && req.ProtoMinor == 1:
	case req.ProtoMajor == 1 && req.ProtoMinor == 0 && hc.http10:
		if hc.chk.transferEncoding > 0 {
			// Go's reader ignores Transfer-Encoding on HTTP/1.0 and
			// frames the body by its length: the loops refuse the head,
			// which a next hop could frame as chunked.
			return route.RefuseMalformed
		}
	default:
		// Envoy's codec reads any version but HTTP/1.1 as HTTP/1.0.
		return route.RefuseLowVersion
	}
	// A request without Host is read: the connection manager answers it
	// (HCM.serve), as Envoy's does once its codec read the head.
	return 0
}

// connectionHeader is what Envoy's codec weighs of a request's
// Connection header lines cv to refuse it (route.ConnectionHeader).
func connectionHeader(req *http.Request, cv []string) route.ConnectionHeader {
	var h route.ConnectionHeader
	upgrade := false // an upgrade token
	for _, v := range cv {
		for tok, rest, ok := route.CutConnectionToken(v); ok; tok, rest, ok = route.CutConnectionToken(rest) {
			h.Tokens++
			switch route.ConnectionToken(tok) {
			case route.ConnRefused:
				h.NamesRefused = true
			case route.ConnUpgrade:
				upgrade = true
			case route.ConnNames:
				h.NamesTE = h.NamesTE || route.EqualFoldASCII(tok, "te")
			}
		}
	}
	h.Upgrade = req.Method == http.MethodConnect || upgrade && len(req.Header["Upgrade"]) > 0
	for _, v := range req.Header["Te"] {
		h.TEBytes = route.JoinedLen(h.TEBytes, len(v))
	}
	return h
}

// fieldsValid applies the checks net/http's server makes beyond parsing:
// a valid Host, valid header names and values.
func fieldsValid(req *http.Request) bool {
	if !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// refuse answers a request head the connection does not route, as
// Envoy's connection manager answers it (r began at start), has it
// counted and logged (onRefused), and ends the connection. What the
// client still sends is read and dropped for a moment first: closing with
// unread data would reset the connection, and the client might lose the
// answer (net/http's server waits likewise; Envoy's close, FlushWriteAndDelay,
// too).
func (hc *h1Conn) refuse(r route.Refusal, start time.Time) {
	bw, body := hc.bw, r.Body()
	b := append(hc.scratch[:0], "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.Status()), 10)
	b = append(b, ' ')
	_, _ = bw.Write(b)
	_, _ = bw.WriteString(http.StatusText(r.Status()))
	_, _ = bw.WriteString("\r\ncontent-length: ")
	_, _ = bw.Write(strconv.AppendInt(hc.scratch[:0], int64(len(body)), 10))
	_, _ = bw.WriteString("\r\ncontent-type: text/plain\r\n")
	b = append(hc.scratch[:0], "date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	_, _ = bw.Write(append(b, "\r\n"...))
	if hc.server != "" {
		_, _ = bw.WriteString("server: ")
		_, _ = bw.WriteString(hc.server)
		_, _ = bw.WriteString("\r\n")
	}
	_, _ = bw.WriteString("connection: close\r\n\r\n")
	_, _ = bw.WriteString(body)
	err := bw.Flush()
	if hc.onRefused != nil {
		hc.onRefused(r, start)
	}
	if err != nil {
		return
	}
	hc.linger()
}

// localServer is the Server header of the connection manager's own
// answers: its server_name, unless server_header_transformation is
// PASS_THROUGH (a local reply has none to pass).
func (m *HCM) localServer() string {
	if m.serverHeader == hcmv3.HttpConnectionManager_PASS_THROUGH {
		return ""
	}
	return m.serverName
}

// refused counts and logs a request head a connection of the manager's
// refused (h1Conn.refuse), as Envoy counts and logs the stream its codec
// opened at the head's first byte: a request (downstream_rq_total,
// _http1_total, _completed, its status class, the time), reset since its
// head was not complete (downstream_rq_rx_reset), and a protocol error
// (downstream_cx_protocol_error, DPE) when the codec refused it. Its log
// line has no request headers (Envoy's stream never got them): "-" for
// the method, path and the like, HTTP/1.1 for the protocol.
func (m *HCM) refused(c *listener.Conn, r route.Refusal, start time.Time) {
	st := &m.stats
	st.rqTotal.Inc()
	st.rqHTTP1.Inc()
	st.rqRxReset.Inc()
	switch {
	case r.CodecError():
		st.cxProtocolError.Inc()
	case r == route.RefuseHeaderTimeout:
		st.rqHeaderTimeout.Inc()
	}
	st.rqCompleted.Inc()
	st.classes[r.Status()/100].Inc()
	d := time.Since(start)
	st.rqTime.Record(uint64(d.Milliseconds()))
	if len(m.logs) == 0 {
		return
	}
	// The head sent, without the date (as finish logs a response's).
	h := http.Header{"Content-Length": {strconv.Itoa(len(r.Body()))}, "Content-Type": {"text/plain"},
		"Connection": {"close"}}
	if s := m.localServer(); s != "" {
		h["Server"] = []string{s}
	}
	e := accesslog.Entry{Start: start, Duration: d, RequestDuration: -1, ResponseDuration: d,
		Head: noHead{}, Protocol: "HTTP/1.1", ResponseCode: r.Status(), ResponseHeader: h, ResponseTrailer: h,
		CodeDetails: r.Details(), BytesSent: int64(len(r.Body())),
		DownstreamRemote: c.Src.String(), DownstreamLocal: c.Dst.String(),
		DownstreamDirectPeer: c.Src.String(), ServerName: c.ServerName, ConnectionID: c.ID}
	if r.CodecError() {
		e.Flags = accesslog.DownstreamProtocolError
	}
	m.Log(&e)
}

// noHead is the request of a refused head in its log entry: none.
type noHead struct{}

func (noHead) Method() string         { return "" }
func (noHead) RequestURI() string     { return "" }
func (noHead) Host() string           { return "" }
func (noHead) Header(_ string) string { return "" }
