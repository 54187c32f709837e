package proxy

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// proxyPath is one way weft proxy serves a listener's connections.
type proxyPath struct {
	name                     string
	goroutines, h2Goroutines bool
}

// proxyPaths are the paths a test compares: the goroutine path with the
// loops off (--evloop=false), the loops with h2c handed to the goroutine
// path (--h2loops=false), and the loops serving both (the default).
func proxyPaths() []proxyPath {
	paths := []proxyPath{{"goroutines", true, true}}
	if runtime.GOOS == "linux" {
		paths = append(paths, proxyPath{"h2c handed off", false, true}, proxyPath{"loops", false, false})
	}
	return paths
}

// on serves the harness's listeners on this path.
func (p proxyPath) on(c *Config) { c.Goroutines, c.H2Goroutines = p.goroutines, p.h2Goroutines }

// logged serves them on this path with access logs flushed every
// millisecond, so that awaitLog finds each request's line soon.
func (p proxyPath) logged(c *Config) {
	p.on(c)
	c.AccessLogBuffering.FlushInterval = time.Millisecond
}

// wireHead is a response as a client sees it: status, every header
// (sorted, x-envoy-upstream-service-time by name only, date by name only
// unless keepDate) and body.
func wireHead(resp *http.Response, body []byte, keepDate bool) string {
	var hs []string
	for k, vv := range resp.Header {
		switch {
		case k == "X-Envoy-Upstream-Service-Time", k == "Date" && !keepDate:
			hs = append(hs, k)
		default:
			hs = append(hs, k+": "+strings.Join(vv, ", "))
		}
	}
	slices.Sort(hs)
	return fmt.Sprintf("%d [%s] %q", resp.StatusCode, strings.Join(hs, "; "), body)
}

// TestResponseHeadersSamePaths: the answers of every path carry the same
// headers, over HTTP/2 (h2c) and HTTP/1.1: local replies (cluster not
// found with no body, no healthy upstream, connection failure; gRPC
// requests answered headers only, over HTTP/1.1 too, where the loops
// answered 503 text/plain) and proxied responses, with and
// without the upstream's date. As Envoy: a date on every response (the
// upstream's kept), a content-type only with a body, no content-length on
// an HTTP/2 gRPC local reply (Envoy drops it; its HTTP/1.1 codec writes
// "0"), no content-type on a proxied response that had none.
func TestResponseHeadersSamePaths(t *testing.T) {
	const upstreamDate = "Mon, 01 Jan 2001 00:00:00 GMT"
	noDate := rawHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	withDate := rawHTTP1Upstream(t, "HTTP/1.1 200 OK\r\nDate: "+upstreamDate+"\r\nContent-Length: 2\r\n\r\nok")
	h2NoDate, _ := xnetH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// x/net's server adds a date and a sniffed type unless the keys
		// are there.
		w.Header()["Date"], w.Header()["Content-Type"] = nil, nil
		_, _ = io.WriteString(w, "h2")
	}))
	deadAddr := deadAddr(t)
	b := newBackend(t, "c")
	type request struct {
		name       string
		h2, grpc   bool
		path       string
		keepDate   bool
		unique     bool     // the answer differs on every run: not compared
		wantDate   string   // "": any date
		wantHeader string   // a header the answer must have ("Name: value"), or lack ("-Name")
		types      []string // the request's content-type fields, when not one
	}
	var requests []request
	for _, h2 := range []bool{false, true} {
		proto := "HTTP/1.1"
		if h2 {
			proto = "HTTP/2"
		}
		requests = append(requests,
			request{name: proto + " no date upstream", h2: h2, path: "/nodate", wantHeader: "-Content-Type"},
			request{name: proto + " HTTP/2 upstream without date", h2: h2, path: "/h2nodate", wantHeader: "-Content-Type"},
			request{name: proto + " date upstream", h2: h2, path: "/withdate", keepDate: true, wantDate: upstreamDate},
			request{name: proto + " connection failure", h2: h2, path: "/dead", wantHeader: "Content-Type: text/plain"},
		)
	}
	requests = append(requests,
		request{name: "HTTP/2 gRPC connection failure", h2: true, grpc: true, path: "/dead", wantHeader: "-Content-Length"},
		request{name: "HTTP/1.1 gRPC connection failure", grpc: true, path: "/dead", wantHeader: "Content-Length: 0"},
		// Two content types: the first decides, as Header.Get reads it
		// (the loops' HTTP/2 streams took the last).
		request{name: "HTTP/2 gRPC first of two types", h2: true, grpc: true, path: "/dead", wantHeader: "Grpc-Status: 14",
			types: []string{"application/grpc", "text/plain"}},
		request{name: "HTTP/2 gRPC second of two types", h2: true, path: "/dead", wantHeader: "-Grpc-Status",
			types: []string{"text/plain", "application/grpc"}},
		request{name: "HTTP/1.1 gRPC first of two types", grpc: true, path: "/dead", wantHeader: "Grpc-Status: 14",
			types: []string{"application/grpc", "text/plain"}})
	// After the update that removes cluster c (the loops keep serving an
	// h2c connection opened before it) and then its endpoints.
	gone := []request{
		{name: "HTTP/2 cluster not found", h2: true, path: "/c", wantHeader: "-Content-Type"},
		{name: "HTTP/2 gRPC cluster not found", h2: true, grpc: true, path: "/c", wantHeader: "-Content-Length"},
		{name: "HTTP/1.1 cluster not found", path: "/c", wantHeader: "-Content-Type"},
	}
	noHosts := []request{
		{name: "HTTP/2 no healthy upstream", h2: true, path: "/c", wantHeader: "Content-Type: text/plain"},
		{name: "HTTP/2 gRPC no healthy upstream", h2: true, grpc: true, path: "/c", wantHeader: "-Content-Length"},
	}
	got := map[string]map[string]string{} // request -> path -> answer
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		keep := []types.Resource{httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, routeTo("/nodate", "nodate"), routeTo("/h2nodate", "h2nodate"),
				routeTo("/withdate", "withdate"), routeTo("/dead", "dead"), routeTo("/c", "c"))),
			edsCluster("nodate"), cla("nodate", noDate), edsCluster("withdate"), cla("withdate", withDate),
			edsCluster("h2nodate", h2Upstream), cla("h2nodate", h2NoDate), edsCluster("dead"), cla("dead", deadAddr)}
		h.push(slices.Concat(keep, []types.Resource{edsCluster("c"), cla("c", b.addr())})...)
		h2c, h1 := h2cClient(t), newClient(t)
		base := "http://" + h.addr("egress")
		do := func(r request) {
			t.Helper()
			c := h1
			if r.h2 {
				c = h2c
			}
			req, _ := http.NewRequest(http.MethodGet, base+r.path, nil)
			if r.grpc {
				req.Method = http.MethodPost
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("Te", "trailers")
			}
			if r.types != nil {
				req.Method = http.MethodPost
				req.Header["Content-Type"] = r.types
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s, %s: %v", p.name, r.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if got[r.name] == nil && !r.unique {
				got[r.name] = map[string]string{}
			}
			if !r.unique {
				got[r.name][p.name] = wireHead(resp, body, r.keepDate)
			}
			if d := resp.Header.Get("Date"); d == "" || r.wantDate != "" && d != r.wantDate {
				t.Errorf("%s, %s: date %q, want %q", p.name, r.name, d, cmpOr(r.wantDate, "a date"))
			}
			if name, ok := strings.CutPrefix(r.wantHeader, "-"); ok {
				if _, has := resp.Header[name]; has {
					t.Errorf("%s, %s: has %s: %q", p.name, r.name, name, resp.Header.Get(name))
				}
			} else if name, v, _ := strings.Cut(r.wantHeader, ": "); resp.Header.Get(name) != v {
				t.Errorf("%s, %s: %s %q, want %q", p.name, r.name, name, resp.Header.Get(name), v)
			}
		}
		for _, r := range requests {
			do(r)
		}
		// Open both connections on c before it goes.
		do(request{name: "HTTP/2 before the update", h2: true, path: "/c", unique: true})
		do(request{name: "HTTP/1.1 before the update", path: "/c", unique: true})
		h.push(keep...)
		for _, r := range gone {
			do(r)
		}
		h.push(slices.Concat(keep, []types.Resource{edsCluster("c"), cla("c")})...)
		for _, r := range noHosts {
			do(r)
		}
	}
	for name, byPath := range got {
		want := byPath["goroutines"]
		for path, answer := range byPath {
			if answer != want {
				t.Errorf("%s: %s answered\n%s\nthe goroutine path\n%s", name, path, answer, want)
			}
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
