package httpconn

// The headers of the upstream request and of the response as the stream
// rewrites them: path and host rewrites, the route configuration's header
// mutations, Envoy's own request and response headers.

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// rewrite builds the upstream request: path and host rewrites, header
// mutations, Envoy's request headers.
func (m *HCM) rewrite(s *stream, out *http.Request) {
	in := s.in
	// An HTTP/1.1 upstream's transport reads the URL's scheme as its own
	// (https would be its TLS); an HTTP/2 upstream's sends it as :scheme
	// and dials as the cluster says (cluster.h2RT), so it gets the
	// downstream's, as Envoy sends it.
	out.URL.Scheme = "http"
	if _, http1 := s.cl.Transport(in.ProtoMajor); !http1 {
		out.URL.Scheme = in.URL.Scheme // the request's :scheme (serve: requestScheme)
	}
	out.URL.Host = "upstream" // replaced by the chosen host on each attempt
	if s.changed {
		setPath(out.URL, s.upPath)
	}
	if s.rewrote {
		out.Header.Set("X-Envoy-Original-Path", originalPath(s))
	}
	out.Host = in.Host
	if s.rt.HostRewrite != "" {
		out.Host = s.rt.HostRewrite
	}
	if m.useRemoteAddress {
		ip := s.conn.Src.Addr().String()
		if prior := out.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + "," + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if m.useRemoteAddress || len(out.Header["X-Forwarded-Proto"]) == 0 {
		// With use_remote_address the client's is not trusted (Envoy's
		// xff_num_trusted_hops 0): replaced, as mutateRequestHeaders does.
		// Else only a request without one gets one: an empty line is
		// one (Envoy's ForwardedProto() is set; the loops' hasXFP).
		out.Header.Set("X-Forwarded-Proto", s.conn.Scheme())
	}
	levels := route.Levels{s.wops, &s.rt.Headers, &s.vh.Headers, &s.rc.Headers}
	levels.Request(out.Header)
}

// requestScheme is the :scheme of a request r on c as Envoy's connection
// manager gives it before it routes (mutateRequestHeaders), what an
// HTTP/2 upstream gets: an HTTP/2 client's own (x/net set TLS when it was
// https: h2SchemeConn), an HTTP/1.1 request's from its absolute-form
// target or its x-forwarded-proto, else its connection's
// (route.H1Scheme); with use_remote_address the client's
// x-forwarded-proto is replaced by the connection's scheme first.
func (m *HCM) requestScheme(r *http.Request, c *listener.Conn) string {
	if r.ProtoMajor == 2 {
		if r.TLS != nil {
			return "https"
		}
		return "http"
	}
	xfp := r.Header["X-Forwarded-Proto"]
	if m.useRemoteAddress {
		xfp = nil
	}
	first := ""
	if len(xfp) > 0 {
		first = xfp[0]
	}
	return route.H1Scheme(r.URL.Scheme, first, len(xfp), c.Scheme() == "https")
}

// logRewrites gives the request the access log reads the route's path
// and host rewrites and its request header mutations, as the upstream
// got them: Envoy's router rewrites the request's headers in place
// (finalizeRequestHeaders), so that its access log's %REQ(:PATH)% is the
// rewritten path, %REQ(:AUTHORITY)% the rewritten host,
// %REQ(X-ENVOY-ORIGINAL-PATH)% the original path and %REQ(X)% header X
// as the mutations left it. The
// handler is done with the request (the upstream got a copy). Only once
// a host was picked: Envoy's router answers no_healthy_upstream (or
// cluster_not_found) before it rewrites.
func (m *HCM) logRewrites(s *stream) {
	if s.host == nil {
		return
	}
	in := s.in
	if s.rewrote {
		in.Header.Set("X-Envoy-Original-Path", originalPath(s))
		setPath(in.URL, s.upPath)
	}
	if s.rt.HostRewrite != "" {
		in.Host = s.rt.HostRewrite
	}
	levels := route.Levels{s.wops, &s.rt.Headers, &s.vh.Headers, &s.rc.Headers}
	levels.Request(in.Header)
}

// originalPath is the x-envoy-original-path of a request whose route
// rewrites its path: the path the routes matched (normalised by
// merge_slashes and normalize_path, which Envoy's connection manager does
// to :path in place before its router reads it) and the query.
// It is read from the request before logRewrites rewrites it: serve
// gave its URL that path (setPath).
func originalPath(s *stream) string { return s.in.URL.RequestURI() }

// requestPath is the path of r's target (before '?') as the client sent
// it: Go's reader keeps the target's bytes in RequestURI (x/net's HTTP/2
// server the :path), where its URL holds them decoded. An absolute-form
// target's is its URL's path.
func requestPath(r *http.Request) string {
	t := r.RequestURI
	if !strings.HasPrefix(t, "/") {
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(t, '?'); i >= 0 {
		t = t[:i]
	}
	return t
}

// setPath makes path (the part before '?') the target every writer of u
// writes (URL.RequestURI: net/http's Transport, weft proxy's HTTP/1.1
// client, x/net's HTTP/2 client) and the access log reads, its bytes as
// they are: an opaque URL. One that begins with "//" would be written as
// an absolute URL so: it is given as an escaped path, which Go writes
// escaped again where it holds bytes a URL path may not (a known
// difference: only without merge_slashes).
func setPath(u *url.URL, path string) {
	if path == "" {
		path = "/" // as URL.RequestURI
	}
	if !strings.HasPrefix(path, "//") {
		u.Opaque = path
		return
	}
	u.Opaque = ""
	if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
	}
}

func (m *HCM) applyResponseHeaders(s *stream, h http.Header) {
	levels := route.Levels{s.wops, routeOps(s.rt), vhOps(s.vh), rcOps(s.rc)}
	levels.Response(h)
	switch m.serverHeader {
	case 0: // OVERWRITE
		h.Set("Server", m.serverName)
	case 1: // APPEND_IF_ABSENT
		if h.Get("Server") == "" {
			h.Set("Server", m.serverName)
		}
	}
}

func routeOps(r *route.Route) *route.HeaderOps {
	if r == nil {
		return nil
	}
	return &r.Headers
}

func vhOps(v *route.VirtualHost) *route.HeaderOps {
	if v == nil {
		return nil
	}
	return &v.Headers
}

func rcOps(c *route.Config) *route.HeaderOps {
	if c == nil {
		return nil
	}
	return &c.Headers
}

// modifyResponse adds Envoy's response headers and the header mutations.
func (m *HCM) modifyResponse(s *stream, resp *http.Response) {
	resp.Header.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(s.svcTime.Milliseconds(), 10))
	m.applyResponseHeaders(s, resp.Header)
}
