package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The timings of TestRouteTimeoutFromRequestEndSamePaths: a body of
// slowPieces pieces, slowGap apart (900 ms in all), takes three times
// the route timeout (and the per-try timeout) to send, each gap well
// under the stream idle timeout.
const (
	rtsRouteTimeout = 300 * time.Millisecond
	rtsStreamIdle   = 600 * time.Millisecond
	slowGap         = 150 * time.Millisecond
	slowPieces      = 7
)

// TestRouteTimeoutFromRequestEndSamePaths: the route timeout, and the
// per-try timeout, run from the request's end, as Envoy's router arms
// them in Filter::onRequestComplete (and UpstreamRequest::onPoolReady
// once the request is complete), on every path, from HTTP/1.1 clients
// (a body with a length, a chunked one) and h2c ones, to an HTTP/1.1
// upstream and an HTTP/2 one: a body that takes three times the route
// timeout to send is answered by the upstream (/ok); one the upstream
// never answers gets 504 UT upstream_response_timeout no sooner than
// the route timeout after the body's end (/never); a body that stalls
// is ended by the stream idle timeout, 408 stream timeout, SI
// stream_idle_timeout, counted in downstream_rq_idle_timeout, as
// Envoy's ActiveStream::onIdleTimeout answers before a response
// (stall); the per-try timeout likewise (/try: 200, and 504
// upstream_per_try_timeout after the body's end). Every path cut such
// bodies at the route timeout from the request's start (504 UT), and
// the per-try timeout from the attempt's.
func TestRouteTimeoutFromRequestEndSamePaths(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/never") {
			select { // the proxy's timeout ends the exchange
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		_, _ = fmt.Fprintf(w, "got %d", n)
	})
	clusters := twoUpstreams(t, handler)
	// A per-try timeout that no retry follows (retry_on names no
	// timeout), under a long route timeout.
	try := retryRoute("h1", "retriable-status-codes", 1, 599)
	try.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/try/"}
	try.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(rtsRouteTimeout)
	try.GetRoute().Timeout = durationpb.New(10 * time.Second)

	type exchange struct {
		client, path string // client: h1, chunked or h2
		stall        bool   // the body stops after its first piece
		want, log    string // the answer; the end of its access log line
		fromEnd      bool   // answered no sooner than the timeout after the body's end
	}
	var exchanges []exchange
	ok := fmt.Sprintf("200 got %d", 2*slowPieces)
	for _, client := range []string{"h1", "chunked", "h2"} {
		for _, up := range []string{"h1", "h2"} {
			exchanges = append(exchanges,
				exchange{client: client, path: "/" + up + "/ok", want: ok, log: "200 - via_upstream"},
				exchange{client: client, path: "/" + up + "/never", want: "504 upstream request timeout", log: "504 UT upstream_response_timeout", fromEnd: true},
				exchange{client: client, path: "/" + up + "/ok", stall: true, want: "408 stream timeout", log: "408 SI stream_idle_timeout"})
		}
		exchanges = append(exchanges,
			exchange{client: client, path: "/try/ok", want: ok, log: "200 - via_upstream"},
			exchange{client: client, path: "/try/never", want: "504 upstream request timeout", log: "504 UT upstream_per_try_timeout", fromEnd: true})
	}
	var names []string
	for _, e := range exchanges {
		name := e.client + " " + e.path
		if e.stall {
			name += " stall"
		}
		names = append(names, name)
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(rtsStreamIdle)},
			[]*routev3.Route{timedRoute("/h1/", "h1", rtsRouteTimeout), timedRoute("/h2/", "h2", rtsRouteTimeout), try}, clusters...)
		res := pathResult{answers: map[string]string{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, e := range exchanges {
			wg.Add(1)
			go func() { // ends with the exchange (each read is bounded by 10 s)
				defer wg.Done()
				got, after := slowPost(t, h.addr("egress"), e.client, e.path, e.stall)
				mu.Lock()
				defer mu.Unlock()
				res.answers[names[i]] = got
				if got != e.want {
					t.Errorf("%s, %s: answered %q; want %q", p.name, names[i], got, e.want)
				}
				// Generous: the timeout is 300 ms (the stream idle
				// timeout 600 ms after the stall's piece).
				switch {
				case e.fromEnd && after < rtsRouteTimeout*2/3:
					t.Errorf("%s, %s: answered %v after the body's end; want no sooner than about %v", p.name, names[i], after, rtsRouteTimeout)
				case e.stall && after < rtsStreamIdle*2/3:
					t.Errorf("%s, %s: answered %v after the body stalled; want no sooner than about %v", p.name, names[i], after, rtsStreamIdle)
				}
			}()
		}
		wg.Wait()
		log := awaitLog(t, logFile, len(exchanges))
		for i, e := range exchanges {
			proto := "HTTP/1.1"
			if e.client == "h2" {
				proto = "HTTP/2"
			}
			if want := proto + " " + e.path + " " + e.log; !strings.Contains(log, want) {
				t.Errorf("%s, %s: access log\n%s\nwant a line %q", p.name, names[i], log, want)
			}
		}
		res.log = log
		waitStats(t, h, map[string]int64{"http.egress.downstream_rq_active": 0})
		res.stats = h.counts("http.egress.", []string{"downstream_rq_idle_timeout", "downstream_rq_completed"}) + "\n" +
			h.countsBy("cluster", []string{"h1", "h2"}, []string{"upstream_rq_timeout", "upstream_rq_per_try_timeout"})
		if want := "downstream_rq_idle_timeout 6\ndownstream_rq_completed 24\n" +
			"h1.upstream_rq_timeout 3\nh1.upstream_rq_per_try_timeout 3\nh2.upstream_rq_timeout 3\nh2.upstream_rq_per_try_timeout 0"; res.stats != want {
			t.Errorf("%s: counters\n%s\nwant\n%s", p.name, res.stats, want)
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// slowPost sends a POST of path to addr from client (h1: a body with a
// length, chunked: a chunked one, h2: over h2c) whose body comes in
// slowPieces pieces of 2 bytes, slowGap apart, or, stall, its first
// piece alone. It returns the answer ("<status> <body>", or how the
// exchange ended) and how long after the body's end (or its first
// piece, stall) it came.
func slowPost(t *testing.T, addr, client, path string, stall bool) (answer string, after time.Duration) {
	pieces := slowPieces
	if stall {
		pieces = 1
	}
	c, err := dialFor10s(addr)
	if err != nil {
		return "dial: " + err.Error(), 0
	}
	defer c.Close()
	if client == "h2" {
		cl := h2PostHead(c, path)
		for i := range pieces {
			if i > 0 {
				time.Sleep(slowGap)
			}
			_ = cl.fr.WriteData(1, i == slowPieces-1, []byte("ab"))
			if err := cl.bw.Flush(); err != nil {
				return "write: " + err.Error(), 0
			}
		}
		end := time.Now()
		got := h2StreamEnd(cl, 1)
		return strings.TrimSpace(got), time.Since(end)
	}
	head := "POST " + path + " HTTP/1.1\r\nHost: x\r\n"
	if client == "chunked" {
		head += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		head += "Content-Length: " + strconv.Itoa(2*slowPieces) + "\r\n\r\n"
	}
	if _, err := io.WriteString(c, head); err != nil {
		return "write: " + err.Error(), 0
	}
	for i := range pieces {
		if i > 0 {
			time.Sleep(slowGap)
		}
		piece := "ab"
		if client == "chunked" {
			piece = "2\r\nab\r\n"
			if i == slowPieces-1 {
				piece += "0\r\n\r\n"
			}
		}
		if _, err := io.WriteString(c, piece); err != nil {
			return "write: " + err.Error(), 0
		}
	}
	end := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "read: " + err.Error(), time.Since(end)
	}
	body, _ := io.ReadAll(resp.Body)
	return strconv.Itoa(resp.StatusCode) + " " + string(body), time.Since(end)
}
