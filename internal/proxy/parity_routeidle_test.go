package proxy

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// riIdle is the routes' idle_timeout in TestRouteIdleTimeoutSamePaths;
// the connection manager's stream_idle_timeout (riHCMIdle) and the
// route timeout (10 s) are both past the test's reads.
const (
	riIdle    = time.Second
	riHCMIdle = 20 * time.Second
)

// idleRoute is routeTo(prefix, cluster) with the route timeout timeout
// (0: none) and the idle_timeout idle.
func idleRoute(prefix, cluster string, timeout, idle time.Duration) *routev3.Route {
	r := routeTo(prefix, cluster)
	r.GetRoute().Timeout = durationpb.New(timeout)
	r.GetRoute().IdleTimeout = durationpb.New(idle)
	return r
}

// TestRouteIdleTimeoutSamePaths: a route's idle_timeout bounds every
// state of the stream, as Envoy's stream idle timer (the router's
// per-route override of the connection manager's stream_idle_timeout,
// ActiveStream::onIdleTimeout) does, on every path, from HTTP/1.1 and
// h2c clients, to an HTTP/1.1 upstream and an HTTP/2 one, under a route
// timeout longer than it (/rt/) and none (/none/): an upstream silent
// before its head is answered 504 stream timeout, SI
// stream_idle_timeout, no sooner than about the idle timeout (/silent);
// a response body that stops mid-way is cut (the HTTP/1.1 connection
// closed, the h2 stream reset) and logged with its status, SI (/stops);
// a response that streams a piece more often than the idle timeout,
// for twice it, arrives whole (/streams); a route with neither a
// timeout nor an idle timeout (/off/) serves it too. Each stream idle
// timeout is counted in downstream_rq_idle_timeout, none as the
// cluster's upstream_rq_timeout. The loops serve such routes (nothing
// handed off); they kept no stream idle timeout for a silent upstream
// and left such routes, and connection managers whose
// stream_idle_timeout was not 5 minutes, to the goroutine path.
func TestRouteIdleTimeoutSamePaths(t *testing.T) {
	const pieces = 2*int(riIdle/slowGap) + 1
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hold := func() {
			select { // the proxy's timeout ends the exchange
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/silent"):
			hold()
		case strings.HasSuffix(r.URL.Path, "/stops"):
			_, _ = io.WriteString(w, "x")
			_ = http.NewResponseController(w).Flush()
			hold()
		default: // streams
			for i := range pieces {
				if i > 0 {
					time.Sleep(slowGap)
				}
				_, _ = io.WriteString(w, "x")
				_ = http.NewResponseController(w).Flush()
			}
		}
	})
	clusters := twoUpstreams(t, handler)
	type exchange struct {
		client, path string // client: h1 or h2
		want, log    string // the answer; the end of its access log line
		idle         bool   // answered no sooner than about the idle timeout
	}
	var exchanges []exchange
	streamed := "200 " + strings.Repeat("x", pieces)
	for _, client := range []string{"h1", "h2"} {
		cut := "200 x (unexpected EOF)"
		if client == "h2" {
			cut = "200 x reset"
		}
		for _, up := range []string{"h1", "h2"} {
			for _, rt := range []string{"rt", "none"} {
				prefix := "/" + rt + "/" + up
				exchanges = append(exchanges,
					exchange{client: client, path: prefix + "/silent", want: "504 stream timeout", log: "504 SI stream_idle_timeout", idle: true},
					exchange{client: client, path: prefix + "/stops", want: cut, log: "200 SI stream_idle_timeout", idle: true},
					exchange{client: client, path: prefix + "/streams", want: streamed, log: "200 - via_upstream"})
			}
			exchanges = append(exchanges, exchange{client: client, path: "/off/" + up + "/streams", want: streamed, log: "200 - via_upstream"})
		}
	}
	var names []string
	for _, e := range exchanges {
		names = append(names, e.client+" "+e.path)
	}
	var routes []*routev3.Route
	for _, up := range []string{"h1", "h2"} {
		routes = append(routes, idleRoute("/rt/"+up+"/", up, 10*time.Second, riIdle), idleRoute("/none/"+up+"/", up, 0, riIdle),
			idleRoute("/off/"+up+"/", up, 0, 0))
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(riHCMIdle)}, routes, clusters...)
		if l := h.listener("egress"); !p.goroutines && !l.OnLoops() {
			t.Fatalf("%s: the listener is not on the loops", p.name)
		}
		res := pathResult{answers: map[string]string{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, e := range exchanges {
			wg.Add(1)
			go func() { // ends with the exchange (each read is bounded by 10 s)
				defer wg.Done()
				start := time.Now()
				var got string
				if e.client == "h2" {
					got = strings.TrimSpace(h2Body(dialH2(t, h.addr("egress")), 1, e.path))
				} else {
					got = idleGet(h.addr("egress"), e.path)
				}
				took := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				res.answers[names[i]] = got
				if got != e.want {
					t.Errorf("%s, %s: answered %q; want %q", p.name, names[i], got, e.want)
				}
				if e.idle && took < riIdle*2/3 {
					t.Errorf("%s, %s: answered after %v; want no sooner than about %v", p.name, names[i], took, riIdle)
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
			if want := proto + " " + e.path + " " + e.log; !slices.Contains(strings.Split(log, "\n"), want) {
				t.Errorf("%s, %s: access log\n%s\nwant a line %q", p.name, names[i], log, want)
			}
		}
		res.log = log
		waitStats(t, h, map[string]int64{"http.egress.downstream_rq_active": 0})
		res.stats = h.counts("http.egress.", []string{"downstream_rq_idle_timeout", "downstream_rq_completed"}) + "\n" +
			h.countsBy("cluster", []string{"h1", "h2"}, []string{"upstream_rq_timeout"})
		if want := "downstream_rq_idle_timeout 16\ndownstream_rq_completed 28\nh1.upstream_rq_timeout 0\nh2.upstream_rq_timeout 0"; res.stats != want {
			t.Errorf("%s: counters\n%s\nwant\n%s", p.name, res.stats, want)
		}
		if l := h.listener("egress"); p.name == "loops" && (l.HandedOff() != 0 || l.LoopH2Conns() == 0) {
			t.Errorf("loops: %d connections handed off, %d h2c connections on the loops; want 0 and the h2 clients'", l.HandedOff(), l.LoopH2Conns())
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// idleGet sends a GET of path to addr over HTTP/1.1 and returns the
// answer ("<status> <body>", and how the body's read ended if not at its
// end).
func idleGet(addr, path string) string {
	c, err := dialFor10s(addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "write: " + err.Error()
	}
	return readH1Answer(c)
}

// TestStreamIdleNoRouteTimeoutSamePaths: the connection manager's
// stream_idle_timeout (no route idle_timeout) bounds a request on a
// route without a timeout, on every path, from HTTP/1.1 and h2c
// clients, to an HTTP/1.1 upstream and an HTTP/2 one: an upstream
// silent before its head is answered 504 stream timeout, logged SI
// stream_idle_timeout. The loops left such routes, and connection
// managers whose stream_idle_timeout was not 5 minutes, to the
// goroutine path, and kept no stream idle timeout for a silent upstream.
func TestStreamIdleNoRouteTimeoutSamePaths(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // the proxy's timeout ends the exchange
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	clusters := twoUpstreams(t, handler)
	var names []string
	for _, client := range []string{"h1", "h2"} {
		for _, up := range []string{"h1", "h2"} {
			names = append(names, client+" /"+up+"/silent")
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(riIdle)},
			[]*routev3.Route{timedRoute("/h1/", "h1", 0), timedRoute("/h2/", "h2", 0)}, clusters...)
		res := exchangeAll(t, p, h, names, func(string) string { return "504 stream timeout" })
		res.log = awaitLog(t, logFile, len(names))
		if want := "HTTP/1.1 /h1/silent 504 SI stream_idle_timeout\nHTTP/1.1 /h2/silent 504 SI stream_idle_timeout\n" +
			"HTTP/2 /h1/silent 504 SI stream_idle_timeout\nHTTP/2 /h2/silent 504 SI stream_idle_timeout"; strings.TrimSpace(res.log) != want {
			t.Errorf("%s: access log\n%s\nwant\n%s", p.name, res.log, want)
		}
		waitStats(t, h, map[string]int64{"http.egress.downstream_rq_active": 0})
		res.stats = h.counts("http.egress.", []string{"downstream_rq_idle_timeout"})
		if l := h.listener("egress"); p.name == "loops" && l.HandedOff() != 0 {
			t.Errorf("loops: %d connections handed off; want 0", l.HandedOff())
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// TestRouteIdleOverridesSamePaths: a route's idle_timeout replaces the
// connection manager's stream_idle_timeout (riIdle here), as Envoy's
// router overrides it, on every path, from HTTP/1.1 and h2c clients, to
// an HTTP/1.1 upstream and an HTTP/2 one: an upstream silent for twice
// riIdle before its head is served on a route whose idle_timeout is 0
// (off, without a route timeout: /off/, and with one: /offrt/) or longer
// (/long/, and 1,000 years: /faridle/; a route timeout of 1,000 years,
// /far/, the idle timeout off: a deadline of a loop time plus a
// saturated time.Duration must not wrap), and answered 504 stream
// timeout on a route without one (/hcm/, the connection manager's).
func TestRouteIdleOverridesSamePaths(t *testing.T) {
	// 1,000 years: past time.Duration's range (AsDuration saturates).
	centuries := func(r *routev3.Route, d **durationpb.Duration) *routev3.Route {
		*d = &durationpb.Duration{Seconds: 1000 * 365 * 24 * 3600}
		return r
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * riIdle):
			_, _ = io.WriteString(w, "ok")
		}
	})
	clusters := twoUpstreams(t, handler)
	var routes []*routev3.Route
	var names []string
	want := map[string]string{}
	for _, up := range []string{"h1", "h2"} {
		routes = append(routes, idleRoute("/off/"+up+"/", up, 0, 0), idleRoute("/offrt/"+up+"/", up, 10*time.Second, 0),
			idleRoute("/long/"+up+"/", up, 0, 10*time.Second), timedRoute("/hcm/"+up+"/", up, 0),
			func() *routev3.Route {
				r := idleRoute("/far/"+up+"/", up, 0, 0)
				return centuries(r, &r.GetRoute().Timeout)
			}(),
			func() *routev3.Route {
				r := idleRoute("/faridle/"+up+"/", up, 0, 0)
				return centuries(r, &r.GetRoute().IdleTimeout)
			}())
		for _, client := range []string{"h1", "h2"} {
			for _, r := range []string{"off", "offrt", "long", "hcm", "far", "faridle"} {
				name := client + " /" + r + "/" + up + "/slow"
				names = append(names, name)
				want[name] = "200 ok"
				if r == "hcm" {
					want[name] = "504 stream timeout"
				}
			}
		}
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		h := newHarness(t, func(c *Config) { p.logged(c) })
		logFile := pushCutLog(t, h, []func(*hcmv3.HttpConnectionManager){withStreamIdle(riIdle)}, routes, clusters...)
		res := exchangeAll(t, p, h, names, func(name string) string { return want[name] })
		res.log = awaitLog(t, logFile, len(names))
		waitStats(t, h, map[string]int64{"http.egress.downstream_rq_active": 0})
		res.stats = h.counts("http.egress.", []string{"downstream_rq_idle_timeout"})
		if want := "downstream_rq_idle_timeout 4"; res.stats != want {
			t.Errorf("%s: counters\n%s\nwant\n%s", p.name, res.stats, want)
		}
		if l := h.listener("egress"); p.name == "loops" && l.HandedOff() != 0 {
			t.Errorf("loops: %d connections handed off; want 0", l.HandedOff())
		}
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}

// exchangeAll makes each of names ("h1 /path" or "h2 /path") a request to
// h's egress listener at once, each on a connection of its own, and
// returns their answers; an answer other than want's is an error.
func exchangeAll(t *testing.T, p proxyPath, h *harness, names []string, want func(name string) string) pathResult {
	res := pathResult{answers: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() { // ends with the exchange (each read is bounded by 10 s)
			defer wg.Done()
			client, path, _ := strings.Cut(name, " ")
			var got string
			if client == "h2" {
				got = strings.TrimSpace(h2Body(dialH2(t, h.addr("egress")), 1, path))
			} else {
				got = idleGet(h.addr("egress"), path)
			}
			mu.Lock()
			defer mu.Unlock()
			res.answers[name] = got
			if w := want(name); got != w {
				t.Errorf("%s, %s: answered %q; want %q", p.name, name, got, w)
			}
		}()
	}
	wg.Wait()
	return res
}
