package httpconn

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/route"
)

// The forwarder: what sends a routed request upstream and its response
// downstream. It keeps the message semantics of net/http/httputil's
// ReverseProxy (hop-by-hop headers, Te: trailers, upgrades, trailers,
// streaming flushes; but 1xx responses are dropped, as Envoy drops
// them, and the query is sent as received, as Envoy sends it) without
// what ReverseProxy adds for its general use and weft proxy does not need: the
// ProxyRequest and request copies for its hooks, the CloseNotifier watch,
// a media-type parse per response and a flush timer per streamed
// response. forward_test.go sends the same requests through both and
// compares what the client receives.

// hopHeaders are removed from both directions (RFC 9110 section 7.6.1,
// and the RFC 2616 list ReverseProxy keeps for compatibility).
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// forward proxies the stream's request to its cluster and the response
// back to w. It runs on the handler's goroutine; s.ctx is the stream's
// context.
func (m *HCM) forward(w http.ResponseWriter, s *stream) {
	in := s.in
	// An upstream's 1xx responses but 101 are dropped (the transports
	// read past them; roundTrip only notes one came, to end retries), as
	// Envoy drops them
	// without proxy_100_continue: the router's 100, 102, 103 and 104 in
	// the filter manager (ActiveStreamDecoderFilter::encode1xxHeaders),
	// the others as the upstream request reads them
	// (UpstreamRequest::decodeHeaders). The proxy answers a client's
	// Expect: 100-continue itself (serveOne; x/net's server over HTTP/2).
	ctx := s.ctx
	if in.ProtoMajor == 1 && s.bodyComing() {
		// The upstream may answer before the client's body arrives whole:
		// the transport that reads the response meanwhile takes it.
		ctx = cluster.WithBodyComing(ctx)
	}
	out := in.Clone(ctx)
	if in.ContentLength == 0 {
		out.Body = nil // nothing to send, and retries need no replay
	}
	if out.Body != nil {
		// The transport may close the body it was given (a failed
		// connect); the client's body must stay readable for the drain
		// after the response.
		nc := &noCloseBody{r: out.Body}
		if _, http1 := s.cl.Transport(in.ProtoMajor); http1 && !s.receivedWhole() {
			// Read ahead while an attempt waits for a connect of the
			// HTTP/1.1 cluster's fallback Transport, whatever the
			// client's protocol (readahead.go);
			// given back before the drain. Not to an HTTP/2 cluster,
			// whose transport tells no connect (see Known differences).
			ab := &aheadBody{src: out.Body, s: s}
			nc.r = ab
			defer ab.release()
		}
		out.Body = nc
		defer nc.Close()
	}
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Close = false
	upType := upgradeType(out.Header)
	if !printable(upType) {
		m.errorHandler(w, s, fmt.Errorf("client tried to switch to invalid protocol %q", upType))
		return
	}
	removeRequestHopHeaders(out.Header)
	for _, v := range in.Header["Te"] {
		if route.TETrailers(v) {
			out.Header.Set("Te", "trailers")
			break
		}
	}
	if upType != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upType)
	}
	m.rewrite(s, out)
	if _, ok := out.Header["User-Agent"]; !ok {
		// No User-Agent from the client: none upstream either, rather
		// than Go's default.
		out.Header.Set("User-Agent", "")
	}

	res, err := s.roundTrip(out)
	if err != nil {
		m.errorHandler(w, s, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		m.modifyResponse(s, res)
		m.switchProtocols(w, s, out, res)
		return
	}
	removeHopHeaders(res.Header)
	m.modifyResponse(s, res)
	dh := w.Header()
	addHeaders(dh, res.Header)
	if _, ok := dh["Content-Type"]; !ok && s.in.ProtoMajor == 2 {
		// A response without a type goes down without one, as Envoy
		// (and the loops, and the HTTP/1.1 writer) relay it; the key
		// without a value keeps x/net's server from sniffing one.
		dh["Content-Type"] = nil
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dh.Add("Trailer", strings.Join(keys, ", "))
	}
	if s.in.ProtoMajor == 1 && s.bodyComing() {
		// The upstream answered before the client's body arrived whole:
		// the rest of it cannot be told from a next request. Envoy's
		// connection manager says connection: close when it encodes a
		// response head before the request is complete, and closes the
		// connection after the response (encodeHeaders, doEndStream).
		dh.Set("Connection", "close")
	}
	s.details = route.DetailsViaUpstream
	w.WriteHeader(res.StatusCode)
	if err := copyBody(w, res, s.in.ProtoMajor == 2); err != nil {
		_ = res.Body.Close()
		if s.bodyBroke.Load() {
			// What was received goes out, then the stream is reset (over
			// HTTP/1.1 the connection closed: a chunked response must
			// not end with its last chunk and look complete), as Envoy
			// resets it after sending on what came as it came. copyBody
			// sent all but a head still waiting for a body's first
			// bytes (and what a read brought with its error).
			flush(w)
		}
		if ub, ok := res.Body.(*upstreamBody); ok {
			ub.writeCut()
		}
		panic(http.ErrAbortHandler)
	}
	_ = res.Body.Close() // now: this fills res.Trailer
	if len(res.Trailer) > 0 {
		// Chunked, so that the trailers have somewhere to go.
		_ = http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		addHeaders(dh, res.Trailer)
		return
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			dh.Add(http.TrailerPrefix+k, v)
		}
	}
}

// streaming says whether a response is a stream whose head goes out at
// once even when the transport cannot tell whether its body has begun
// to come (copyBody): server-sent events, and bodies of unknown length.
func streaming(res *http.Response) bool {
	if res.ContentLength == -1 {
		return true
	}
	ct, _, _ := strings.Cut(res.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// copyBody copies the response body to w as it comes, as Envoy sends
// each read of the upstream on at once (and the loops do): what a read
// brought is flushed before the next read can wait, unless it completed
// the body (its length known, or its end read with it), whose end the
// handler's return then sends with it.
//
// The head goes ahead at once over HTTP/2 (h2) when a body may follow:
// x/net's server writes a response's HEADERS on their own anyway (its
// handler waits for them to be written before it sends DATA), so this
// costs no write. Over HTTP/1.1 it goes ahead of a body that has not
// begun to come, which the HTTP/1.1 client's body tells
// (upstreamBody.arrived); when the transport cannot tell (x/net's,
// net/http's fallback), ahead of a stream (streaming), else with the
// body's first bytes: sending the head of every small response on its
// own would cost a write each.
//
// Measured as write syscalls per request on the goroutine path (strace
// -f -c -e trace=write,writev,sendmsg on the package's test binary,
// client and backend in the same process, slope between 2,000 and
// 12,000 requests, -test.cpu 1): a small response of known length from
// an HTTP/1.1 backend (BenchmarkHTTPOneHop) 4.00 before and after; over
// h2c both ways (BenchmarkH2COneHop) 7.00 before and after, and with the
// head sent ahead; to an h2c client from an HTTP/1.1 backend 6.05 before
// and after; a small chunked one from an HTTP/1.1 backend 6.00 before
// (head, body and end were three writes), 4.00 after; one of known
// length from an h2c backend to an HTTP/1.1 client 4.00 before and
// after, 5.00 had its head gone ahead.
func copyBody(w http.ResponseWriter, res *http.Response, h2 bool) error {
	left := res.ContentLength // body bytes still to come; -1 when unknown
	// A body known empty (a trailers-only gRPC answer among them, whose
	// HEADERS must carry END_STREAM) has nothing to go ahead of.
	ahead := h2 && left != 0
	if !h2 {
		ahead = streaming(res)
		if ub, ok := res.Body.(*upstreamBody); ok {
			if arrived, known := ub.arrived(); known {
				ahead = !arrived
			}
		}
	}
	if ahead {
		flush(w)
	}
	buf := bufPool.Get()
	defer bufPool.Put(buf)
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if wn != n {
				return io.ErrShortWrite
			}
			if left > 0 {
				left = max(left-int64(n), 0)
			}
			if rerr == nil && left != 0 {
				// More is to come: what came goes out before the next
				// read waits for it.
				flush(w)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// flush sends what w holds on to the client; a failure is the next
// write's (the client is gone).
func flush(w http.ResponseWriter) {
	if f, ok := w.(interface{ FlushError() error }); ok {
		_ = f.FlushError() // respWriter's: no controller to allocate
		return
	}
	_ = http.NewResponseController(w).Flush()
}

// upgradeType is the protocol a message asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// removeHopHeaders removes the headers the Connection header names and
// the hop-by-hop ones.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k) // canonical already
	}
}

// removeRequestHopHeaders removes a request's hop-by-hop headers: those
// removeHopHeaders removes, but of the headers its Connection header
// names only those Envoy's codec removes (route.ConnectionToken:
// HTTP2-Settings, for one, is forwarded). The event loops apply the same
// rule (evloop's request.connection): a named Forwarded header is removed
// as any other, since sanitizeConnectionHeader treats only X-Forwarded-For,
// X-Forwarded-Host and X-Forwarded-Proto apart (a request naming them is
// refused, route.ConnRefused, so they always reach the upstream).
func removeRequestHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for tok, rest, ok := route.CutConnectionToken(v); ok; tok, rest, ok = route.CutConnectionToken(rest) {
			if route.ConnectionToken(tok) == route.ConnNames {
				h.Del(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k) // canonical already
	}
}

// addHeaders appends src's values to dst.
func addHeaders(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k], vv...)
	}
}

// noCloseBody is the downstream request body as the transport sees it:
// closing it stops reads through it but leaves the client's body open.
type noCloseBody struct {
	r      io.Reader
	closed atomic.Bool
}

var errBodyClosed = errors.New("request body read after the forwarder closed it")

func (b *noCloseBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	return b.r.Read(p)
}

func (b *noCloseBody) Close() error {
	b.closed.Store(true)
	return nil
}
