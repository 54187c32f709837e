package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// levelOps are request header mutations of every kind, their names
// prefixed by the level's letter l: each append action on a header the
// request has and on one it lacks, an empty value kept and one dropped,
// the legacy append: false, a removal.
func levelOps(l string) ([]*corev3.HeaderValueOption, []string) {
	add := func(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-" + l + "-" + name, Value: value}, AppendAction: action}
	}
	v := strings.ToLower(l)
	var adds []*corev3.HeaderValueOption
	for _, had := range []string{"had", "new"} {
		adds = append(adds,
			add("append-"+had, v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
			add("absent-"+had, v, corev3.HeaderValueOption_ADD_IF_ABSENT),
			add("over-"+had, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			add("ifexists-"+had, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS))
	}
	empty := add("empty", "", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	empty.KeepEmptyValue = true
	legacy := add("legacy-had", v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	legacy.Append = wrapperspb.Bool(false)
	adds = append(adds, empty, add("dropped-had", "", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD), legacy,
		// Every level appends to x-shared; the route configuration's
		// (applied last) adds it only when absent.
		add("shared", v, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD))
	adds[len(adds)-1].Header.Key = "x-shared"
	if l == "C" {
		adds[len(adds)-1].AppendAction = corev3.HeaderValueOption_ADD_IF_ABSENT
	}
	// The route adds x-undone, the virtual host removes it.
	if l == "R" {
		adds = append(adds, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-undone", Value: "r"}})
	}
	removes := []string{"x-" + l + "-gone-had", "X-" + l + "-GONE-new"}
	if l == "V" {
		removes = append(removes, "x-undone")
	}
	return adds, removes
}

// headerOpsRoutes are routes under /1/ (cluster h1) and /2/ (h2) in a
// virtual host and route configuration that each mutate request headers
// (levelOps R, V, C), and /w/, a weighted route whose one cluster (h1)
// mutates them too (W).
func headerOpsRoutes() *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, n := range []string{"1", "2"} {
		r := routeTo("/"+n+"/", "h"+n)
		r.RequestHeadersToAdd, r.RequestHeadersToRemove = levelOps("R")
		routes = append(routes, r)
	}
	w := routeTo("/w/", "h1")
	wc := &routev3.WeightedCluster_ClusterWeight{Name: "h1", Weight: wrapperspb.UInt32(1)}
	wc.RequestHeadersToAdd, wc.RequestHeadersToRemove = levelOps("W")
	w.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{wc}}}
	routes = append(routes, w)
	vh := vhost("v", []string{"*"}, routes...)
	vh.RequestHeadersToAdd, vh.RequestHeadersToRemove = levelOps("V")
	rc := routeConfig("rds", vh)
	rc.RequestHeadersToAdd, rc.RequestHeadersToRemove = levelOps("C")
	return rc
}

// headerOpsRequest is the client's header lines for the level ops:
// every "-had" header of each level, two lines of the append ones.
func headerOpsRequest() [][2]string {
	var hs [][2]string
	for _, l := range []string{"R", "V", "C", "W"} {
		for _, name := range []string{"append", "append", "absent", "over", "ifexists", "dropped", "legacy", "gone"} {
			hs = append(hs, [2]string{"X-" + l + "-" + name + "-had", "client"})
		}
	}
	return append(hs, [2]string{"X-Shared", "client"}, [2]string{"X-Undone", "client"}, [2]string{"X-Kept", "client"})
}

// TestRequestHeaderOpsSamePaths: a route's, its virtual host's, its
// route configuration's and its weighted cluster's request header
// mutations (each append action, on a header the client sent and on one
// it did not, keep_empty_value, the legacy append, removals, in any case)
// reach the upstream alike on every path, over HTTP/1.1 and h2c, to
// HTTP/1.1 and HTTP/2 upstreams, in Envoy's order (most specific level
// first, each removing then adding, the later level winning). The loops
// serve these routes: no connection is handed off but the h2c one on the
// path that hands h2c off, and there the HTTP/1.1 requests to the
// HTTP/2 cluster (the loops handed off every request on such a route, and
// refused h2c on a listener with one).
func TestRequestHeaderOpsSamePaths(t *testing.T) {
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	headers := headerOpsRequest()
	paths := []string{"/1/a?q=1", "/2/b", "/w/c"}
	// What the goroutine path sends, as Envoy does (the rest compared
	// with it): the route's R then the virtual host's V then the route
	// configuration's C.
	var want []string
	for _, l := range []string{"C", "R", "V"} {
		v := strings.ToLower(l)
		want = append(want, "X-"+l+"-Absent-Had: client", "X-"+l+"-Absent-New: "+v, "X-"+l+"-Append-Had: client, client, "+v,
			"X-"+l+"-Append-New: "+v, "X-"+l+"-Dropped-Had: client", "X-"+l+"-Empty: ", "X-"+l+"-Ifexists-Had: "+v,
			"X-"+l+"-Legacy-Had: "+v, "X-"+l+"-Over-Had: "+v, "X-"+l+"-Over-New: "+v)
	}
	want = append(want, "User-Agent: weft-test", "X-Forwarded-Proto: http", "X-Kept: client", "X-Request-Id",
		"X-Shared: client, r, v", "X-W-Absent-Had: client", "X-W-Append-Had: client, client", "X-W-Dropped-Had: client",
		"X-W-Gone-Had: client", "X-W-Ifexists-Had: client", "X-W-Legacy-Had: client", "X-W-Over-Had: client", "host: x")
	slices.Sort(want)
	wantH1 := "200 HTTP/1.1 GET /1/a?q=1 [" + strings.Join(want, "; ") + "]"
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(append(clusters, httpListener("egress", httpManager("egress", "rds")), headerOpsRoutes())...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			for _, path := range paths {
				var extra []string
				for _, kv := range headers {
					extra = append(extra, kv[0]+": "+kv[1])
				}
				res.answers["h1 "+path] = getRewritten(t, h.addr("egress"), path, strings.Join(extra, "\r\n"))
				hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				hr.Header.Set("User-Agent", "weft-test")
				for _, kv := range headers {
					hr.Header.Add(kv[0], kv[1])
				}
				resp, err := h2c.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers["h2c "+path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			if p.goroutines {
				if g := res.answers["h1 /1/a?q=1"]; g != wantH1 {
					t.Errorf("h1 /1/a?q=1: the upstream got\n%s\nwant\n%s", g, wantH1)
				}
			} else {
				want := int64(0)
				if p.h2Goroutines {
					want = 2 // the h2c connection, the HTTP/1.1 request to the HTTP/2 cluster
				}
				if l := h.listener("egress"); !l.OnLoops() || l.HandedOff() != want {
					t.Errorf("on the loops %v, %d connections handed off; want true, %d", l.OnLoops(), l.HandedOff(), want)
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestRequestHeaderOpsOwnHeadersSamePaths: request header mutations that
// name a header the loops treat themselves (the body's framing,
// hop-by-hop fields, cookie, user-agent, x-forwarded-proto: each one the
// goroutine path's Transport writes its own way) reach the upstream as
// the goroutine path sends them on every path, over HTTP/1.1 and h2c, to
// HTTP/1.1 and HTTP/2 upstreams: the loops hand such a route's requests
// off (h2c at the preface).
func TestRequestHeaderOpsOwnHeadersSamePaths(t *testing.T) {
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	var routes []*routev3.Route
	for _, n := range []string{"1", "2"} {
		r := routeTo("/"+n+"/", "h"+n)
		r.RequestHeadersToRemove = []string{"content-length", "transfer-encoding", "te", "connection", "cookie"}
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "user-agent", Value: "ops"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			{Header: &corev3.HeaderValue{Key: "x-forwarded-proto", Value: "ops"}}}
		routes = append(routes, r)
	}
	rc := routeConfig("rds", vhost("v", []string{"*"}, routes...))
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(append(clusters, httpListener("egress", httpManager("egress", "rds")), rc)...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			for _, path := range []string{"/1/a", "/2/b"} {
				c, err := dialFor10s(h.addr("egress"))
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nUser-Agent: weft-test\r\nCookie: a=1\r\n"+
					"Te: trailers\r\nContent-Length: 5\r\n\r\nhello")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				c.Close()
				res.answers["h1 "+path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
				hr, err := http.NewRequest("POST", "http://"+h.addr("egress")+path, strings.NewReader("hello"))
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				hr.Header.Set("User-Agent", "weft-test")
				hr.Header.Set("Cookie", "a=1")
				resp, err = h2c.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				b, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers["h2c "+path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			if !p.goroutines {
				if l := h.listener("egress"); l.HandedOff() != 3 {
					t.Errorf("%d connections handed off, want 3 (each HTTP/1.1 one, the h2c one at its preface)", l.HandedOff())
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// TestRequestHeaderOpsGoroutineOnlySamePaths: request header mutations
// the loops cannot write as the goroutine path's Transport does reach the
// upstream as the goroutine path sends them, on every path, to HTTP/1.1
// and HTTP/2 upstreams: a cache-control added when absent to a request
// with "Pragma: no-cache" (net/http's server adds "Cache-Control:
// no-cache" to it), a value with a control character, a name that is no
// token (Envoy's validation accepts both; Go's Transport leaves the name
// out or refuses the request). The loops hand each request off.
func TestRequestHeaderOpsGoroutineOnlySamePaths(t *testing.T) {
	clusters := twoUpstreams(t, http.HandlerFunc(headEcho))
	ops := []struct {
		name string
		op   *corev3.HeaderValueOption
	}{
		{"cc", &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "cache-control", Value: "max-age=1"},
			AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}},
		{"ctl", &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-ctl", Value: "a\x01b"}}},
		{"name", &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x y", Value: "a"}}},
	}
	var routes []*routev3.Route
	var paths []string
	for _, n := range []string{"1", "2"} {
		for _, o := range ops {
			r := routeTo("/"+n+"/"+o.name+"/", "h"+n)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{o.op}
			routes = append(routes, r)
			paths = append(paths, "/"+n+"/"+o.name+"/")
		}
	}
	rc := routeConfig("rds", vhost("v", []string{"*"}, routes...))
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(append(clusters, httpListener("egress", httpManager("egress", "rds")), rc)...)
			res := pathResult{answers: map[string]string{}}
			for _, path := range paths {
				res.answers[path] = getRewritten(t, h.addr("egress"), path, "Pragma: no-cache")
			}
			if !p.goroutines {
				if l := h.listener("egress"); l.HandedOff() != int64(len(paths)) {
					t.Errorf("%d connections handed off, want %d (each one)", l.HandedOff(), len(paths))
				}
			}
			results[p.name] = res
		})
	}
	sameAsGoroutinePath(t, results, paths)
}

// TestRequestHeaderOpsRetriedSamePaths: a retried request's upstream
// attempts each carry the request header mutations once, as Envoy's
// router makes them once on the request it sends again
// (finalizeRequestHeaders before the first attempt), on every path, over
// HTTP/1.1 and h2c, to HTTP/1.1 and HTTP/2 upstreams: an appended value
// is not appended again by the retry.
func TestRequestHeaderOpsRetriedSamePaths(t *testing.T) {
	var attempts atomic.Int64
	flaky := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // each request's first attempt
			return
		}
		headEcho(w, r)
	})
	clusters := twoUpstreams(t, flaky)
	var routes []*routev3.Route
	for _, n := range []string{"1", "2"} {
		r := retryRoute("h"+n, "5xx", 2)
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/" + n + "/"}
		r.GetRoute().RetryPolicy.RetryHostPredicate = nil // one host
		r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-app", Value: "r"}}}
		r.RequestHeadersToRemove = []string{"x-gone"}
		routes = append(routes, r)
	}
	rc := routeConfig("rds", vhost("v", []string{"*"}, routes...))
	paths := []string{"/1/a", "/2/b"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			h.push(append(clusters, httpListener("egress", httpManager("egress", "rds")), rc)...)
			res := pathResult{answers: map[string]string{}}
			h2c := h2cClient(t)
			attempts.Store(0)
			for _, path := range paths {
				res.answers["h1 "+path] = getRewritten(t, h.addr("egress"), path, "X-App: client\r\nX-Gone: client")
				hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				hr.Host = "x"
				hr.Header.Set("User-Agent", "weft-test")
				hr.Header.Set("X-App", "client")
				hr.Header.Set("X-Gone", "client")
				resp, err := h2c.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.answers["h2c "+path] = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			if n := attempts.Load(); n != 8 {
				t.Errorf("%d attempts, want 8 (each of 4 requests retried once)", n)
			}
			if p.goroutines {
				want := "200 HTTP/1.1 GET /1/a [User-Agent: weft-test; X-App: client, r; X-Forwarded-Proto: http; X-Request-Id; host: x]"
				if g := res.answers["h1 /1/a"]; g != want {
					t.Errorf("h1 /1/a: the upstream got\n%s\nwant\n%s", g, want)
				}
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
