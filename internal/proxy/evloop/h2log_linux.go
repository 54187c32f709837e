package evloop

// Access logs of HTTP/2 streams on the loops: a stream's record is made
// as an HTTP/1.1 request's (logStart, from the head the loop builds from
// its HEADERS for routing), with its connection's addresses and ID, and
// HTTP2 set so that %PROTOCOL% reads HTTP/2 as on the goroutine path.
// Its response head is written into the record as an HTTP/1.1 head would
// be, a line per field sent: the log reads headers from it as from an
// HTTP/1.1 response's, and the stream's HPACK block is not decoded again.

import (
	"bytes"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2LogState is the log state of an h2 stream's request: its
// connection's addresses and ID, read once per connection.
func (l *loop) h2LogState(d *down) *logState {
	cg := l.logConn(d.h2.c.d)
	g := &logState{}
	g.rec.Remote, g.rec.Local = cg.rec.Remote, cg.rec.Local
	g.rec.RemoteText, g.rec.LocalText = cg.rec.RemoteText, cg.rec.LocalText
	g.rec.ConnectionID = cg.rec.ConnectionID
	return g
}

// logH2Status starts the record's response head of a stream: "HTTP/2"
// and the status.
func (l *loop) logH2Status(d *down, status int) {
	g := d.lg
	g.resp = append(g.resp[:0], "HTTP/2 "...)
	g.resp = strconv.AppendInt(g.resp, int64(status), 10)
	g.resp = append(g.resp, "\r\n"...)
	g.respAt = l.now
}

// logH2Field adds a field sent to the record's response head.
func (d *down) logH2Field(name, value string) {
	g := d.lg
	g.resp = append(g.resp, name...)
	g.resp = append(g.resp, ": "...)
	g.resp = append(g.resp, value...)
	g.resp = append(g.resp, "\r\n"...)
}

// logH2Head records the response head sent to a logged stream: the
// status, fields (skipping those skip names), server: envoy, and
// x-envoy-upstream-service-time from started, as h2uHeaders and
// h2ResponseHead encode them.
func (l *loop) logH2Head(d *down, status int, fields []hpack.HeaderField, started int64) {
	l.logH2Status(d, status)
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
			"server", "x-envoy-upstream-service-time":
			continue
		}
		d.logH2Field(hf.Name, hf.Value)
	}
	d.logH2Field("server", "envoy")
	d.logH2Field("x-envoy-upstream-service-time", strconv.FormatInt((l.now-started)/int64(time.Millisecond), 10))
}

// logH2FromH1 records the response head h2ResponseHead sent for an
// HTTP/1.1 upstream's (b, parsed into l.resp) on u.
func (l *loop) logH2FromH1(d *down, u *up, b []byte) {
	rs := &l.resp
	l.logH2Status(d, rs.status)
	for i := range rs.lines {
		if h := &rs.lines[i]; !h.hop {
			d.logH2Field(string(h.name.of(b)), string(h.value.of(b)))
		}
	}
	if rs.hasLength && (u.rstate == rsLength || u.rstate == rsHead) {
		d.logH2Field("content-length", strconv.FormatInt(rs.contentLength, 10))
	}
	d.logH2Field("server", "envoy")
	d.logH2Field("x-envoy-upstream-service-time", strconv.FormatInt((l.now-u.started)/int64(time.Millisecond), 10))
}

// logH2Reply records the head of a local reply to a stream, as h2Reply
// sends it and the goroutine path logs it.
func (l *loop) logH2Reply(d *down, status int, body string) {
	if d.h2.grpc {
		l.logH2Status(d, 200)
		d.logH2Field("content-type", "application/grpc")
		d.logH2Field("grpc-status", strconv.Itoa(proxyroute.GRPCStatusFor(status)))
		if body != "" {
			d.logH2Field("grpc-message", body)
		}
	} else {
		l.logH2Status(d, status)
		if body != "" {
			// Without a body, the goroutine path's header map (which
			// its log reads) has neither.
			d.logH2Field("content-length", strconv.Itoa(len(body)))
			d.logH2Field("content-type", "text/plain")
		}
	}
	d.logH2Field("server", "envoy")
}

// logH2Trailers adds the response's trailers to the record's head when
// the head declared each of them (its trailer field), as the goroutine
// path adds them to the header map its log reads; undeclared trailers
// go there under net/http's TrailerPrefix, which no format reads.
func (d *down) logH2Trailers(fields []hpack.HeaderField) {
	var declared []string
	for b := d.lg.resp; len(b) > 0; {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if name, value, ok := bytes.Cut(bytes.TrimRight(line, "\r"), []byte(": ")); ok && equalFold(name, "trailer") {
			declared = append(declared, string(value))
		}
	}
	for _, hf := range fields {
		if !httpguts.HeaderValuesContainsToken(declared, hf.Name) {
			return
		}
	}
	for _, hf := range fields {
		d.logH2Field(hf.Name, hf.Value)
	}
}
