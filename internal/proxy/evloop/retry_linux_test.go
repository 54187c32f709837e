package evloop

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestRetryBackoffOnTimer: a retry waits its policy's jittered back-off
// (uniform up to 1 s here), on the loop's timers: while eight requests
// wait for theirs, the only loop answers another request, before the
// last retry arrives.
func TestRetryBackoffOnTimer(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	first := map[string]time.Time{}
	var gaps []time.Duration
	var retried atomic.Int32
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		id := r.Header.Get("X-Id")
		mu.Lock()
		if t0, ok := first[id]; ok {
			gaps = append(gaps, time.Since(t0))
			retried.Add(1)
		} else {
			first[id] = time.Now()
		}
		mu.Unlock()
		w.WriteHeader(503)
	}))
	t.Cleanup(b.Close)
	host := netip.MustParseAddrPort(hostOf(b))
	policy := &proxyroute.RetryPolicy{On: proxyroute.OnGatewayError, NumRetries: 1, BackoffBase: time.Second, BackoffMax: time.Second}
	srv, _ := start(t, Config{Loops: 1, Router: routerFunc(func(h proxyroute.Head) Target {
		if strings.HasPrefix(string(h.Target()), "/fail") {
			return Target{Cluster: "c", Host: host, Retry: policy}
		}
		return Target{Cluster: "c", Host: host}
	})})
	c := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() { // ends when its request is answered (the client's timeout at the latest)
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+srv.Addr()+"/fail", nil)
			req.Header.Set("X-Id", strconv.Itoa(i))
			resp, err := c.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		k := len(first)
		mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d first attempts arrived", k, n)
		}
		time.Sleep(time.Millisecond)
	}
	resp, err := c.Get("http://" + srv.Addr() + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if k := retried.Load(); resp.StatusCode != 200 || k >= n {
		t.Errorf("/ok: %d, answered after %d of %d retries: the back-offs held the loop", resp.StatusCode, k, n)
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 503 {
			t.Errorf("a failing request answered %d, want the last 503", code)
		}
	}
	// Uniform in [0, 1 s]: eight waits all below 100 ms has a chance of
	// 1e-8; retried at once (no back-off), every gap is below it.
	longest := time.Duration(0)
	for _, g := range gaps {
		longest = max(longest, g)
	}
	if len(gaps) != n || longest < 100*time.Millisecond {
		t.Errorf("%d retries, the longest %v after its first attempt; want %d, one at least 100 ms after (a back-off)", len(gaps), longest, n)
	}
}

// TestPerTryTimeout: an attempt that outlives the per-try timeout is
// retried when the policy retries timeouts, else answered 504; a
// request's attempts never outlive the route timeout.
func TestPerTryTimeout(t *testing.T) {
	var hits atomic.Int32
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%2 == 1 {
			select { // the first of each pair hangs
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	host := netip.MustParseAddrPort(hostOf(b))
	retried := &proxyroute.RetryPolicy{On: proxyroute.On5xx, NumRetries: 1, PerTryTimeout: 100 * time.Millisecond}
	notRetried := &proxyroute.RetryPolicy{On: proxyroute.OnRetriable4xx, NumRetries: 1, PerTryTimeout: 100 * time.Millisecond}
	srv, _ := start(t, Config{Loops: 1, Router: routerFunc(func(h proxyroute.Head) Target {
		if strings.HasPrefix(string(h.Target()), "/retried") {
			return Target{Cluster: "c", Host: host, Retry: retried}
		}
		return Target{Cluster: "c", Host: host, Retry: notRetried}
	})})
	c := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		path   string
		status int
		body   string
		hits   int32
	}{
		{"/retried", 200, "ok", 2},
		{"/not", 504, "upstream request timeout", 1},
	} {
		hits.Store(0)
		resp, err := c.Get("http://" + srv.Addr() + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || string(body) != tc.body || hits.Load() != tc.hits {
			t.Errorf("%s: %d %q after %d attempts, want %d %q after %d", tc.path, resp.StatusCode, body, hits.Load(), tc.status, tc.body, tc.hits)
		}
	}
}
