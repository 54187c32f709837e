package proxy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestRetryChainReusedSamePaths: streamed uploads past one buffer (64
// KiB in 16 KiB writes, chunked) under a retry policy, one after another
// on one client connection, so that each request's retry copy is kept
// as a chain on an upstream connection a request before it kept one on
// too; every other request's first attempt reads the body and answers
// 503, and is retried on another connection of the pool. Each answer
// must carry the whole body, in order, on every path. Round 35's first
// loops chain counted its write offset from 0, not from the chain's
// front, which a released chain moves to its end: the second request
// on the connection made flushUp write empty slices forever (3d1f9fcc).
func TestRetryChainReusedSamePaths(t *testing.T) {
	const size = 64 << 10
	up := httptest.NewServer(digestHandler())
	t.Cleanup(up.Close)
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*7 + i>>10) // bytes out of place change the digest
	}
	want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, p.on)
			rt := routeTo("/", "c")
			rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(2)}
			h.push(
				httpListener("egress", httpManager("egress", "rds")),
				routeConfig("rds", vhost("v", []string{"*"}, rt)),
				edsCluster("c"), cla("c", up.Listener.Addr().String()))
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			// A hang (the loop spinning) fails the request, not the run.
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for i := range 6 {
				url := fmt.Sprintf("http://%s/%s/%d?fail=%d", h.addr("egress"), p.name, i, i%2)
				resp, err := c.Post(url, "application/octet-stream", &writesOf{body: body})
				if err != nil {
					t.Fatalf("upload %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
					t.Fatalf("upload %d: %d %q (%v), want 200 %q", i, resp.StatusCode, got, err, want)
				}
			}
		})
	}
}

// digestHandler reads a request's body whole and answers its length and
// SHA-256 ("%d %x"); a request whose query has fail=1 is answered 503
// instead on its path's first attempt, once its body was read, so that a
// retry policy sends the body again.
func digestHandler() http.Handler {
	var mu sync.Mutex
	attempts := map[string]int{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		attempts[r.URL.Path]++
		n := attempts[r.URL.Path]
		mu.Unlock()
		if r.URL.Query().Get("fail") == "1" && n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
	})
}
