package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// slotUpstream answers each attempt of a path by the path's script, one
// step an attempt: "503"; "200" (body "ok"); "hold": the attempt is held
// before any response until the test lets it go (let), then its 200
// head goes and it is held again until the next let, then its body
// "ok". An attempt that reached a hold is told on reached.
type slotUpstream struct {
	mu      sync.Mutex
	scripts map[string][]string
	seen    map[string]int
	gates   map[string]chan struct{} // by path: a let's token, unbuffered
	reached chan string
}

func newSlotUpstream() *slotUpstream {
	return &slotUpstream{scripts: map[string][]string{}, seen: map[string]int{}, gates: map[string]chan struct{}{},
		reached: make(chan string, 16)}
}

// script sets path's steps.
func (u *slotUpstream) script(path string, steps ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.scripts[path], u.gates[path] = steps, make(chan struct{})
}

// times is how many attempts of path came.
func (u *slotUpstream) times(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[path]
}

func (u *slotUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	n := u.seen[r.URL.Path]
	u.seen[r.URL.Path]++
	steps, gate := u.scripts[r.URL.Path], u.gates[r.URL.Path]
	u.mu.Unlock()
	step := "none"
	if n < len(steps) {
		step = steps[n]
	}
	hold := func() {
		u.reached <- r.URL.Path
		select {
		case <-gate:
		case <-time.After(10 * time.Second): // the test failed; the server's Close waits for this handler
		}
	}
	switch step {
	case "503":
		w.WriteHeader(http.StatusServiceUnavailable)
	case "200":
		_, _ = io.WriteString(w, "ok")
	case "hold":
		hold()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		hold()
		_, _ = io.WriteString(w, "ok")
	default:
		http.Error(w, "unexpected attempt", http.StatusTeapot)
	}
}

// await waits until an attempt of path reached a hold.
func (u *slotUpstream) await(t *testing.T, path string) {
	t.Helper()
	select {
	case got := <-u.reached:
		if got != path {
			t.Fatalf("an attempt of %s reached a hold; want one of %s", got, path)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no attempt of %s reached its hold", path)
	}
}

// let ends the hold an attempt of path is in.
func (u *slotUpstream) let(t *testing.T, path string) {
	t.Helper()
	u.mu.Lock()
	gate := u.gates[path]
	u.mu.Unlock()
	select {
	case gate <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatalf("no attempt of %s is held", path)
	}
}

// settles polls cond until it holds, else fails the test (and goes on)
// after 5 s; for a gauge, visible only through polling.
func settles(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("%s: not so after 5s", what)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// slotEgress starts a harness on path p with an egress listener logging
// attemptLog to a new file, and a quiet one logging nothing, both routing
// /<name>/backoff/ and /<name>/ to each of clusters (max_retries 1) under
// retry_on 5xx, num_retries 2, the first with a back-off of up to 1000 h
// (base interval), the second of up to 1 ms; it returns the log's path.
func slotEgress(t *testing.T, p proxyPath, clusters []retryCluster) (*harness, string) {
	t.Helper()
	var routes []*routev3.Route
	var res []types.Resource
	for _, c := range clusters {
		mods := []func(*clusterv3.Cluster){func(cl *clusterv3.Cluster) {
			cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: u32(1)}}}
		}}
		if c.h2 {
			mods = append(mods, h2Upstream)
		}
		res = append(res, edsCluster(c.name, mods...), cla(c.name, c.hosts...))
		for _, r := range []struct {
			prefix string
			base   time.Duration
		}{{"/" + c.name + "/backoff/", 1000 * time.Hour}, {"/" + c.name + "/", time.Millisecond}} {
			rt := routeTo(r.prefix, c.name)
			rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(2),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(r.base)}}
			routes = append(routes, rt)
		}
	}
	res = append(res, routeConfig("rds", vhost("v", []string{"*"}, routes...)), httpListener("quiet", httpManager("quiet", "rds")))
	return loggedEgress(t, p, attemptLog(), res...)
}

// TestRetryReservationSamePaths: how long a retry holds one of its
// cluster's max_retries (1 here), the same on every path, for HTTP/1.1
// and HTTP/2 clusters and clients, as Envoy's RetryStateImpl holds
// retries(): taken by shouldRetry when it schedules the retry, given
// back by the next shouldRetry (shouldRetryHeaders at the retried
// attempt's response head, shouldRetryReset at its failure: first, before
// it looks at the budget) or when the router ends the retry state
// (Filter::onUpstreamHeaders, onUpstream1xxHeaders, cleanup). The
// cluster's circuit_breakers.default.rq_retry_open shows it.
//
// (backoff) Held during the back-off; given back when the client
// leaves then (its requests go to the quiet listener, not logged).
//
// (first, second) Held while the retried attempt is in flight: another
// request's retry then overflows (upstream_rq_retry_overflow, 503 UO).
//
// (first, third) Given back when the retried attempt's response head
// came, its body still to come: another request's retry then goes.
// Every path held it until the response's end.
//
// (twice) A request that retries twice (num_retries 2) takes the one
// reservation again at its second retry, given back by the decision
// before. The goroutine path, retrying a status, took the second before
// it gave back the first, which overflowed.
func TestRetryReservationSamePaths(t *testing.T) {
	counters := []string{"upstream_rq_total", "upstream_rq_retry", "upstream_rq_retry_overflow", "upstream_rq_retry_success"}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			up := newSlotUpstream()
			clusters := h1h2RetryClusters(t, up)
			h, logFile := slotEgress(t, p, clusters)
			answers := map[string]string{}
			var wantLog []string
			for _, c := range clusters {
				open := "cluster." + c.name + ".circuit_breakers.default.rq_retry_open"
				overflow := "cluster." + c.name + ".upstream_rq_retry_overflow"
				eachClient(t, func(proto string, cl *http.Client) {
					client := "h1"
					if proto == "HTTP/2" {
						client = "h2c"
					}
					base := "/" + c.name + "/" + client

					// (backoff)
					path := "/" + c.name + "/backoff/" + client
					up.script(path, "503")
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan struct{})
					go func() { // ends when cancel ends the request
						defer close(done)
						req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr("quiet")+path, nil)
						if resp, err := cl.Do(req); err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
						}
					}()
					settles(t, path+": max_retries taken in the back-off", func() bool { return h.stat(open) == 1 })
					if n := up.times(path); n != 1 {
						t.Errorf("%s: %d attempts before the back-off ended; want 1", path, n)
					}
					cancel()
					<-done
					settles(t, path+": max_retries given back when the client left", func() bool { return h.stat(open) == 0 })

					// (first, second): first's retried attempt is held
					// before its response.
					first := base + "/first"
					up.script(first, "503", "hold")
					type result struct {
						resp *http.Response
						err  error
					}
					head := make(chan result, 1)
					go func() { // ends when the response's head came, or the request failed
						resp, err := cl.Get("http://" + h.addr("egress") + first)
						head <- result{resp, err}
					}()
					up.await(t, first)
					if got := h.stat(open); got != 1 {
						t.Errorf("%s: rq_retry_open %d while the retried attempt is in flight; want 1", first, got)
					}
					before := h.stat(overflow)
					second := base + "/second"
					up.script(second, "503")
					checkAnswer(t, answers, second, getAnswer(t, cl, "http://"+h.addr("egress")+second), "503 ")
					if got := h.stat(overflow); got != before+1 {
						t.Errorf("%s: upstream_rq_retry_overflow %d; want %d", second, got, before+1)
					}

					// (first, third): first's head came, its body not.
					up.let(t, first)
					up.await(t, first)
					var r result
					select {
					case r = <-head:
					case <-time.After(10 * time.Second):
						t.Fatalf("%s: no response head", first)
					}
					if r.err != nil {
						t.Fatalf("%s: %v", first, r.err)
					}
					settles(t, first+": max_retries given back at the retried attempt's head", func() bool { return h.stat(open) == 0 })
					third := base + "/third"
					up.script(third, "503", "200")
					checkAnswer(t, answers, third, getAnswer(t, cl, "http://"+h.addr("egress")+third), "200 ok")
					up.let(t, first)
					checkAnswer(t, answers, first, answerOf(r.resp), "200 ok")

					// (twice)
					twice := base + "/twice"
					up.script(twice, "503", "503", "200")
					checkAnswer(t, answers, twice, getAnswer(t, cl, "http://"+h.addr("egress")+twice), "200 ok")
					settles(t, twice+": max_retries given back", func() bool { return h.stat(open) == 0 })

					for _, l := range []string{first + " 200 - 2", second + " 503 UO 1", third + " 200 - 2", twice + " 200 - 3"} {
						wantLog = append(wantLog, proto+" GET "+l)
					}
				})
			}
			log := awaitWantLog(t, logFile, wantLog)
			stats := checkClusterCounts(t, h, clusters, counters, func(retryCluster) string {
				// Each client's: backoff 1 attempt, 1 retry; first 2, 1;
				// second 1, overflowed; third 2, 1; twice 3, 2.
				return fmt.Sprintf("upstream_rq_total %d\nupstream_rq_retry %d\nupstream_rq_retry_overflow %d\nupstream_rq_retry_success %d",
					2*9, 2*5, 2*1, 2*3)
			})
			results[p.name] = pathResult{answers: answers, log: log, stats: stats}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}

// outgrowUpstream is the upstream of TestRetryReservationBodyOutgrownSamePaths:
// a path's first attempt reads the body's first part, opens its gate
// (the client sends on) and answers 503; the second reads the whole
// body, by which the proxy saw it outgrow its retry buffer, records the
// cluster's rq_retry_open then (open; polled up to 5 s for 0), and
// answers 503.
type outgrowUpstream struct {
	*gatedUpstream
	open func(path string) int64 // set before any request
	mu   sync.Mutex
	seen map[string]int64 // by path: rq_retry_open once the body was read
}

func (ou *outgrowUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ou.attempt(r.URL.Path) == 1 {
		if ou.openGate(w, r) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	v := ou.open(r.URL.Path)
	for deadline := time.Now().Add(5 * time.Second); v != 0 && time.Now().Before(deadline); v = ou.open(r.URL.Path) {
		time.Sleep(2 * time.Millisecond)
	}
	ou.mu.Lock()
	ou.seen[r.URL.Path] = v
	ou.mu.Unlock()
	w.WriteHeader(http.StatusServiceUnavailable)
}

// TestRetryReservationBodyOutgrownSamePaths: a retried attempt whose
// request body outgrows the retry buffer (route.MaxRetryBuffer) while it
// is in flight gives back its retry's reservation of the cluster's
// max_retries then, not at its outcome, on every path, as Envoy's
// Filter::decodeData ends its retry state there (RetryStateImpl's
// destructor gives retries() back). The first attempt fails (503) after
// the body's first 1,000 bytes and is retried; the client sends 1,000
// more, then, once the second attempt began, 1 MiB and 64 KiB more; the
// second attempt reads it all and sees rq_retry_open 0 before it
// answers 503, which is not retried (nor flagged: the retry state is
// gone). Until round 39 every path held it until that 503.
func TestRetryReservationBodyOutgrownSamePaths(t *testing.T) {
	parts := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), bytes.Repeat([]byte("C"), proxyroute.MaxRetryBuffer+64<<10)}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			ou := &outgrowUpstream{gatedUpstream: newGatedUpstream(), seen: map[string]int64{}}
			clusters := h1h2RetryClusters(t, ou)
			h, logFile := slotEgress(t, p, clusters)
			ou.open = func(path string) int64 {
				return h.stat("cluster." + strings.Split(path, "/")[1] + ".circuit_breakers.default.rq_retry_open")
			}
			h2c := h2cClient(t)
			answers := map[string]string{}
			var wantLog []string
			for _, c := range clusters {
				for _, client := range []string{"length", "h2c"} {
					if !c.h2 && client != "length" {
						// The goroutine path starts the retry of a body of no
						// length to an HTTP/1.1 cluster only when the client
						// sends more (docs/proxy.md, Known differences).
						continue
					}
					path := "/" + c.name + "/outgrow/" + client
					gate, retried := ou.expect(path, len(parts[0]))
					before := pacedParts(t, path, gate, retried) // as TestRetryBufferOutgrownSamePaths sends them
					checkAnswer(t, answers, path, postPartsAs(t, h2c, h.addr("egress"), path, client, parts, before), "503 ")
					ou.mu.Lock()
					open := ou.seen[path]
					ou.mu.Unlock()
					answers[path+" rq_retry_open"] = fmt.Sprint(open)
					if open != 0 {
						t.Errorf("%s: rq_retry_open %d once the body outgrew the buffer; want 0", path, open)
					}
					wantLog = append(wantLog, fmt.Sprintf("%s POST %s 503 - 2", clientProto(client == "h2c"), path))
				}
			}
			results[p.name] = pathResult{answers: answers, log: awaitWantLog(t, logFile, wantLog)}
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
