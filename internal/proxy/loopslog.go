package proxy

import (
	"bytes"
	"net/http"

	"github.com/weftmesh/weft/internal/proxy/accesslog"
	"github.com/weftmesh/weft/internal/proxy/evloop"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// loggedRouter is the loopRouter of a connection manager with access
// logs: it turns the loops' records into the entries the goroutine path
// writes (httpconn's finish). The request is read from what the loop
// parsed (loopHead), the response headers from the head it sent
// (respHead): no head is parsed a second time, and each lookup gives
// what net/http's Request and Response, read from the same bytes on the
// goroutine path, would (TestEvloopAccessLogSameLines compares lines).
type loggedRouter struct{ *loopRouter }

func (r loggedRouter) Log(rec *evloop.LogRecord) {
	h := loopHead{rec}
	e := accesslog.Entry{Start: rec.Start, Duration: rec.Duration, RequestDuration: -1, ResponseDuration: rec.ResponseDuration,
		Head: h, Protocol: h.proto(), ResponseCode: rec.Code, Flags: rec.Flags, CodeDetails: rec.Details, RouteName: rec.Route,
		BytesReceived: rec.BytesReceived, BytesSent: rec.BytesSent, Attempts: rec.Attempts, UpstreamCluster: rec.Cluster,
		DownstreamRemote: rec.RemoteText, DownstreamLocal: rec.LocalText, DownstreamDirectPeer: rec.RemoteText,
		ConnectionID: rec.ConnectionID, UpstreamFailure: rec.UpstreamFailure, Scheme: rec.Scheme}
	if rec.HTTP2 {
		e.Protocol = "HTTP/2" // as the goroutine path names it
	}
	if rec.Host.IsValid() {
		e.UpstreamHost = rec.Host.String()
	}
	if rec.ResponseHead != nil {
		rh := respHead(rec.ResponseHead)
		e.ResponseHeader, e.ResponseTrailer = rh, rh // as the goroutine path's, which gives the writer's headers for both
	}
	r.hcm.Log(&e)
}

// loopHead is an evloop.LogRecord's request as an accesslog.RequestHead.
// The loops accept origin-form targets only, with whole percent-escapes
// in the path, header values without surrounding whitespace and one Host
// header (evloop's parseRequest), which keeps the rules below short.
type loopHead struct{ r *evloop.LogRecord }

func (h loopHead) Method() string { return string(h.r.Method) }

// proto is HTTP/1.0 or HTTP/1.1, the head's request line's.
func (h loopHead) proto() string {
	line := h.r.Head
	if i := bytes.IndexByte(line, '\r'); i >= 0 {
		line = line[:i]
	}
	if bytes.HasSuffix(line, []byte("HTTP/1.0")) {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// RequestURI is the target as the loops sent it upstream: as received,
// or with the path they sent (normalised or rewritten: rewritePath) and
// the request's query, as Envoy logs :path.
func (h loopHead) RequestURI() string {
	t := h.r.Target
	if h.r.Path != "" {
		if i := bytes.IndexByte(t, '?'); i >= 0 {
			return h.r.Path + string(t[i:])
		}
		return h.r.Path
	}
	return string(t)
}

func (h loopHead) Host() string { return h.Header("host") }

func (h loopHead) Header(name string) string {
	// The route's rewrites, as Envoy's router makes them before it logs.
	if h.r.Authority != "" && route.EqualFoldASCII(name, "host") {
		return h.r.Authority
	}
	if h.r.OriginalPath != "" && route.EqualFoldASCII(name, "x-envoy-original-path") {
		return h.r.OriginalPath
	}
	if h.r.RequestID != nil && route.EqualFoldASCII(name, "x-request-id") {
		return string(h.r.RequestID) // the ID the proxy added
	}
	if h.r.HeaderOps != nil && route.Named(h.r.HeaderOps, name) >= 0 {
		return h.mutated(name)
	}
	if !h.r.HTTP2 {
		switch h.seen(name) {
		case route.Gone:
			return ""
		case route.Trailers:
			return "trailers"
		}
	}
	var hl headerLookup
	rid := route.EqualFoldASCII(name, "x-request-id")
	for _, f := range h.r.Headers {
		if rid && !route.KeepsRequestID(f.Value) {
			continue // not forwarded, nor logged by the goroutine path
		}
		if hl.line(name, f.Name, f.Value) {
			break
		}
	}
	return hl.value(name)
}

// mutated is the value of the request header name (one the route's
// header mutations name) as the goroutine path's log reads it: the
// request's lines of that name (none when Envoy has taken it out by the
// time it logs, seen), mutated (route.Levels.Request), the first value.
func (h loopHead) mutated(name string) string {
	k := http.CanonicalHeaderKey(name)
	hd := http.Header{}
	if h.r.HTTP2 || h.seen(name) != route.Gone {
		for _, f := range h.r.Headers {
			if route.EqualFoldASCII(f.Name, name) {
				hd[k] = append(hd[k], string(f.Value))
			}
		}
	}
	h.r.HeaderOps.Levels.Request(hd)
	if v := hd[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// seen is how Envoy has the header name of the request by the time it
// logs it (route.SeenIn), as the goroutine path logs it.
func (h loopHead) seen(name string) route.HeaderSeen {
	var conn, upgrade, te [][]byte
	for _, f := range h.r.Headers {
		switch {
		case route.EqualFoldASCII(f.Name, "connection"):
			conn = append(conn, f.Value)
		case route.EqualFoldASCII(f.Name, "upgrade"):
			upgrade = append(upgrade, f.Value)
		case route.EqualFoldASCII(f.Name, "te"):
			te = append(te, f.Value)
		}
	}
	return route.SeenIn(name, conn, upgrade, te, h.r.Details == route.DetailsMissingHost)
}

// headerLookup is Header.Get of the http.Header net/http reads from a
// head, fed the head's lines (name, value without the whitespace around
// it) in order: the first value, none for Transfer-Encoding (net/http
// takes it out of the map), and "no-cache" for a Cache-Control that a
// Pragma: no-cache stands in for (net/http adds it).
type headerLookup struct{ found, pragma []byte }

// line looks at one line; true when the value is found.
func (hl *headerLookup) line(name string, n, v []byte) bool {
	if route.EqualFoldASCII(n, name) {
		hl.found = v
		return true
	}
	if hl.pragma == nil && route.EqualFoldASCII(n, "pragma") {
		hl.pragma = v
	}
	return false
}

func (hl *headerLookup) value(name string) string {
	switch {
	case route.EqualFoldASCII(name, "transfer-encoding"):
		return ""
	case hl.found != nil:
		return string(hl.found)
	case string(hl.pragma) == "no-cache" && route.EqualFoldASCII(name, "cache-control"):
		return "no-cache"
	}
	return ""
}

// respHead is the response head the loops sent, as an accesslog.Header.
type respHead []byte

func (h respHead) Get(name string) string {
	var hl headerLookup
	b := []byte(h)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:] // past the status line
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		line := bytes.TrimRight(b[:i], "\r")
		b = b[min(i+1, len(b)):]
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue // the blank line ending the head
		}
		if hl.line(name, line[:c], bytes.Trim(line[c+1:], " \t")) {
			break
		}
	}
	return hl.value(name)
}
