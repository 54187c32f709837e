package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// TestBodyComingResponseStreamsSamePaths: while a request's body is
// still coming (a bidirectional stream whose client has not half-closed),
// a response that streams keeps the stream alive, as Envoy's stream idle
// timer restarts on every frame either way (FilterManager's encodeData
// and decodeData reset it), on every path: the upstream answers at once
// and sends a piece every slowGap for twice the stream idle timeout
// while the client, its body open, sends nothing after its first piece;
// the whole response arrives. The loops bounded such a stream by the
// body's last read alone and cut it at the stream idle timeout.
func TestBodyComingResponseStreamsSamePaths(t *testing.T) {
	checkStreamsWhileBodyComes(t, 2*int(rtsStreamIdle/slowGap), func(prefix, cluster string) *routev3.Route {
		return timedRoute(prefix, cluster, rtsRouteTimeout)
	}, "")
}

// checkStreamsWhileBodyComes runs, on every path, a POST from an
// HTTP/1.1 (chunked) and an h2c client to an HTTP/1.1 and an HTTP/2
// upstream (the routes route makes for /h1/ and /h2/) whose body stays
// open after its first piece, while the upstream answers at once and
// sends pieces pieces slowGap apart: each client must get the whole
// response. why ends each failure's message.
func checkStreamsWhileBodyComes(t *testing.T, pieces int, route func(prefix, cluster string) *routev3.Route, why string) {
	t.Helper()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		for i := range pieces {
			if i > 0 {
				time.Sleep(slowGap)
			}
			_, _ = io.WriteString(w, "x")
			_ = http.NewResponseController(w).Flush()
		}
	})
	clusters := twoUpstreams(t, handler)
	want := "200 " + strings.Repeat("x", pieces)
	var names []string
	for _, client := range []string{"chunked", "h2"} {
		for _, up := range []string{"h1", "h2"} {
			names = append(names, client+" /"+up+"/push")
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds", withStreamIdle(rtsStreamIdle))),
			routeConfig("rds", vhost("v", []string{"*"}, route("/h1/", "h1"), route("/h2/", "h2")))},
			clusters...)...)
		res := pathResult{answers: map[string]string{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, name := range names {
			wg.Add(1)
			go func() { // ends with the exchange (each read is bounded by 10 s)
				defer wg.Done()
				client, path, _ := strings.Cut(name, " ")
				got := openPost(h.addr("egress"), client, path)
				mu.Lock()
				defer mu.Unlock()
				res.answers[name] = got
				if got != want {
					t.Errorf("%s, %s: answered %q; want %q%s", p.name, name, got, want, why)
				}
			}()
		}
		wg.Wait()
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// openPost sends a POST of path to addr from client (chunked: HTTP/1.1
// with a chunked body, h2: over h2c) with the first piece of its body,
// never its end, and returns the answer ("<status> <body>", or how the
// exchange ended).
func openPost(addr, client, path string) string {
	c, err := dialFor10s(addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	if client == "h2" {
		cl := h2PostHead(c, path)
		_ = cl.fr.WriteData(1, false, []byte("ab"))
		if err := cl.bw.Flush(); err != nil {
			return "write: " + err.Error()
		}
		return strings.TrimSpace(h2StreamEnd(cl, 1))
	}
	if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"); err != nil {
		return "write: " + err.Error()
	}
	return readH1Answer(c)
}
