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

// TestResponseNotHeldByRetryBodySamePaths: a request under a retry
// policy whose body is still coming (a bidirectional stream whose client
// sends its next message only after the first answer) gets its response
// as the upstream sends it, on every path: keeping the body for a retry
// must not wait on the client's next bytes. Round 33 tried dropping the
// goroutine path's retry copy at the response's start under the lock its
// body reads hold across the client's read, which would have held the
// response head until the client sent more: here, never.
func TestResponseNotHeldByRetryBodySamePaths(t *testing.T) {
	const pieces = 4
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
	retried := func(prefix, cluster string) *routev3.Route {
		r := timedRoute(prefix, cluster, rtsRouteTimeout)
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(2)}
		return r
	}
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
			routeConfig("rds", vhost("v", []string{"*"}, retried("/h1/", "h1"), retried("/h2/", "h2")))},
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
					t.Errorf("%s, %s: answered %q; want %q (the response held behind the request's body)", p.name, name, got, want)
				}
			}()
		}
		wg.Wait()
		results[p.name] = res
	}
	sameAsGoroutinePath(t, results, names)
}
