package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
)

// partWait is how long a two-part upstream waits for the client to see
// the first part before it writes the second anyway: only a proxy that
// holds the first part back makes it wait that long.
const partWait = 3 * time.Second

// twoParts is what two-part upstreams tell the test: the client closes
// each request's seen once the first part reached it, and the upstream
// says on verdicts whether that came before it wrote the second part.
type twoParts struct {
	seen     chan chan struct{} // one per request, sent by the client before it asks
	verdicts chan string
}

func newTwoParts() *twoParts {
	return &twoParts{seen: make(chan chan struct{}, 1), verdicts: make(chan string, 1)}
}

// wait waits for the client to see the first part, then tells the test
// how long that took.
func (p *twoParts) wait() {
	var seen chan struct{}
	select {
	case seen = <-p.seen:
	case <-time.After(partWait):
		p.verdicts <- "no client waiting"
		return
	}
	select {
	case <-seen:
		p.verdicts <- "the first part reached the client before the second was written"
	case <-time.After(partWait):
		p.verdicts <- "the second part written before the first reached the client"
	}
}

// verdict is the upstream's, once the exchange is over.
func (p *twoParts) verdict() string {
	select {
	case v := <-p.verdicts:
		return v
	case <-time.After(2 * partWait):
		return "no verdict"
	}
}

// flushHTTP1Upstream answers over HTTP/1.1 with a body of known length
// (10 bytes): /two in two parts, the second once the client saw the
// first (parts); /headfirst the head alone until the client saw it, then
// the body; /stall the first part only, then nothing until the proxy
// closes the connection.
func flushHTTP1Upstream(t *testing.T, parts *twoParts) string {
	t.Helper()
	return h1UpstreamWithin(t, 20*time.Second, func(c net.Conn, req *http.Request, _ []byte) bool {
		const head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
		switch path.Base(req.URL.Path) {
		case "two":
			_, _ = io.WriteString(c, head+"first")
			parts.wait()
			_, _ = io.WriteString(c, "secnd")
		case "headfirst":
			_, _ = io.WriteString(c, head)
			parts.wait()
			_, _ = io.WriteString(c, "firstsecnd")
		default: // stall until the proxy closes the connection
			_, _ = io.WriteString(c, head+"first")
			_, _ = io.Copy(io.Discard, c)
			return false
		}
		return true
	})
}

// flushH2Upstream is flushHTTP1Upstream over h2c (x/net's server, each
// part flushed in a DATA frame of its own); its /stall waits for the
// stream's reset.
func flushH2Upstream(t *testing.T, parts *twoParts) string {
	t.Helper()
	addr, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		switch path.Base(r.URL.Path) {
		case "two":
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			parts.wait()
			_, _ = io.WriteString(w, "secnd")
		case "headfirst":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			parts.wait()
			_, _ = io.WriteString(w, "firstsecnd")
		default: // stall
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	return addr
}

// h1Parts asks for path over HTTP/1.1 and tells what came: the status,
// the body and how it ended. It closes seen once the head and the
// body's first bytes (first of them) are there.
func h1Parts(t *testing.T, addr, path string, first int, seen chan struct{}) string {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error()
	}
	part := make([]byte, first)
	n, err := io.ReadFull(resp.Body, part)
	close(seen)
	if err != nil {
		return fmt.Sprintf("%d %q, cut: %v", resp.StatusCode, part[:n], err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%d %q then %q, cut: %v", resp.StatusCode, part, rest, err)
	}
	return fmt.Sprintf("%d %q then %q", resp.StatusCode, part, rest)
}

// h2Parts is h1Parts over h2c: the stream's frames as they came (the
// DATA frames' payloads joined).
func h2Parts(t *testing.T, addr, path string, first int, seen chan struct{}) string {
	t.Helper()
	cl := dialH2(t, addr)
	defer cl.c.Close()
	_ = cl.headers(1, path)
	_ = cl.bw.Flush()
	saw := sync.OnceFunc(func() { close(seen) })
	var got []string
	var body string
	done := func(end string) string {
		if body != "" {
			got = append(got, fmt.Sprintf("DATA %q", body))
		}
		return strings.Join(append(got, end), ", ")
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-cl.frames:
			switch {
			case !ok:
				return done("the connection ended")
			case f.stream != 1:
			case f.typ == http2.FrameHeaders:
				got = append(got, "HEADERS "+f.status)
				if first == 0 {
					saw()
				}
				if f.end {
					return done("END_STREAM")
				}
			case f.typ == http2.FrameData:
				before := len(body)
				body += string(f.data)
				if first > 0 && before < first && len(body) >= first {
					saw()
				}
				if f.end {
					return done("END_STREAM")
				}
			case f.typ == http2.FrameRSTStream:
				return done("RST_STREAM " + f.code.String())
			}
		case <-timeout:
			return done("no end")
		}
	}
}

// TestBodySentOnAsItComesSamePaths: each read of an upstream's response
// body goes on to the client as it comes, a body of known length too,
// as Envoy encodes each upstream read at once: a body written in two
// parts reaches the client's first part before the upstream writes the
// second, and when the route timeout cuts a body in the middle the
// client has the head and what came, then the stream's reset (HTTP/2)
// or the connection's close (HTTP/1.1). From an HTTP/1.1 upstream and
// from an HTTP/2 one, to HTTP/1.1 and HTTP/2 clients, alike on every
// path, with their access log: a cut one is logged with the status its
// head went down with and UT alone, as Envoy logs the response code it
// encoded and its router's onResponseTimeout resets the upstream request
// without its reset counting as the upstream's (the loops logged UT,UR
// from an HTTP/1.1 upstream, and 0 for an HTTP/2 client's stream from an
// HTTP/2 upstream). The head goes ahead of a
// body that has not begun to come (/headfirst), but from an HTTP/2
// upstream to an HTTP/1.1 client, which the goroutine path sends with
// the body's first bytes (docs/proxy.md, known differences). The
// goroutine path flushed a body of known length only when its buffer
// filled or the body ended: the two parts came together after the
// upstream's wait, and over HTTP/2 the timeout's reset came without the
// head.
func TestBodySentOnAsItComesSamePaths(t *testing.T) {
	h1parts, h2parts := newTwoParts(), newTwoParts()
	h1up := flushHTTP1Upstream(t, h1parts)
	h2up := flushH2Upstream(t, h2parts)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% " +
		"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}
	timeout := func(r *routev3.Route) *routev3.Route {
		r.GetRoute().Timeout = durationpb.New(300 * time.Millisecond)
		return r
	}
	type ask struct {
		name, path string
		parts      *twoParts // nil: no upstream waits on the client
		h2only     bool      // asked by an HTTP/2 client only
	}
	asks := []ask{
		{"HTTP/1.1 upstream, two parts", "/h1/two", h1parts, false},
		{"HTTP/1.1 upstream, head first", "/h1/headfirst", h1parts, false},
		{"HTTP/1.1 upstream, cut by the route timeout", "/h1/stall", nil, false},
		{"HTTP/2 upstream, two parts", "/h2/two", h2parts, false},
		{"HTTP/2 upstream, head first", "/h2/headfirst", h2parts, true},
		{"HTTP/2 upstream, cut by the route timeout", "/h2/stall", nil, false},
	}
	var names []string
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h, logFile := loggedEgress(t, p, format,
			routeConfig("rds", vhost("v", []string{"*"}, timeout(routeTo("/h1/stall", "h1")), timeout(routeTo("/h2/stall", "h2")),
				routeTo("/h1/", "h1"), routeTo("/h2/", "h2"))),
			edsCluster("h1"), cla("h1", h1up), edsCluster("h2", h2Upstream), cla("h2", h2up))
		res := pathResult{answers: map[string]string{}}
		names = names[:0]
		for _, client := range []string{"HTTP/1.1", "HTTP/2"} {
			for _, a := range asks {
				if a.h2only && client != "HTTP/2" {
					continue
				}
				name := client + " client, " + a.name
				names = append(names, name)
				seen := make(chan struct{})
				if a.parts != nil {
					select {
					case <-a.parts.seen: // left by an exchange that never reached the upstream
					default:
					}
					a.parts.seen <- seen
				}
				// The head alone is /headfirst's first part.
				first := 5
				if strings.HasSuffix(a.path, "/headfirst") {
					first = 0
				}
				if client == "HTTP/1.1" {
					res.answers[name] = h1Parts(t, h.addr("egress"), a.path, first, seen)
				} else {
					res.answers[name] = h2Parts(t, h.addr("egress"), a.path, first, seen)
				}
				if a.parts != nil {
					res.answers[name] += "; " + a.parts.verdict()
				}
			}
		}
		res.log = awaitLog(t, logFile, len(names))
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
	const before = "; the first part reached the client before the second was written"
	want := map[string]string{
		"HTTP/1.1 client, HTTP/1.1 upstream, two parts":                `200 "first" then "secnd"` + before,
		"HTTP/1.1 client, HTTP/1.1 upstream, head first":               `200 "" then "firstsecnd"` + before,
		"HTTP/1.1 client, HTTP/1.1 upstream, cut by the route timeout": `200 "first" then "", cut: unexpected EOF`,
		"HTTP/1.1 client, HTTP/2 upstream, two parts":                  `200 "first" then "secnd"` + before,
		"HTTP/1.1 client, HTTP/2 upstream, cut by the route timeout":   `200 "first" then "", cut: unexpected EOF`,
		"HTTP/2 client, HTTP/1.1 upstream, two parts":                  `HEADERS 200, DATA "firstsecnd", END_STREAM` + before,
		"HTTP/2 client, HTTP/1.1 upstream, head first":                 `HEADERS 200, DATA "firstsecnd", END_STREAM` + before,
		"HTTP/2 client, HTTP/1.1 upstream, cut by the route timeout":   `HEADERS 200, DATA "first", RST_STREAM INTERNAL_ERROR`,
		"HTTP/2 client, HTTP/2 upstream, two parts":                    `HEADERS 200, DATA "firstsecnd", END_STREAM` + before,
		"HTTP/2 client, HTTP/2 upstream, head first":                   `HEADERS 200, DATA "firstsecnd", END_STREAM` + before,
		"HTTP/2 client, HTTP/2 upstream, cut by the route timeout":     `HEADERS 200, DATA "first", RST_STREAM INTERNAL_ERROR`,
	}
	for _, name := range names {
		if got := results["goroutines"].answers[name]; got != want[name] {
			t.Errorf("goroutines, %s: %s\nwant %s", name, got, want[name])
		}
	}
	const wantLog = `
HTTP/1.1 /h1/headfirst 200 - h1
HTTP/1.1 /h1/stall 200 UT h1
HTTP/1.1 /h1/two 200 - h1
HTTP/1.1 /h2/stall 200 UT h2
HTTP/1.1 /h2/two 200 - h2
HTTP/2 /h1/headfirst 200 - h1
HTTP/2 /h1/stall 200 UT h1
HTTP/2 /h1/two 200 - h1
HTTP/2 /h2/headfirst 200 - h2
HTTP/2 /h2/stall 200 UT h2
HTTP/2 /h2/two 200 - h2`
	if got := results["goroutines"].log; got != wantLog {
		t.Errorf("goroutines: access log\n%s\nwant%s", got, wantLog)
	}
}
