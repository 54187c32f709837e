package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
)

// TestRetryBodyDroppedAtResponseSamePaths: a request under a retry
// policy keeps its body for a retry only until the response begins
// (Envoy's Filter::onUpstreamHeaders ends its retry state, and
// decodeData buffers no more), on every path: the body a long stream
// sends after the upstream's response head is passed on and not kept,
// so the proxy holds none of it however long the stream lasts, from
// HTTP/1.1 (chunked) and h2c clients to HTTP/1.1 and HTTP/2 clusters.
// The goroutine path kept it, up to 1 MiB, to the request's end.
func TestRetryBodyDroppedAtResponseSamePaths(t *testing.T) {
	const sent = 768 << 10
	got := make(chan int, 1) // what the upstream read of the body, sent once it read it all
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		_ = http.NewResponseController(w).Flush()
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, sent+int64(len("first"))))
		got <- int(n)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	h1 := httptest.NewServer(handler)
	t.Cleanup(h1.Close)
	// The HTTP/2 upstream takes frames of 16 KiB, as Envoy's and gRPC's
	// do: x/net's default of 1 MiB lets the proxy's transport write, and
	// the upstream read, frames of up to 512 KiB when an h2c client's body
	// comes in large reads, and x/net's Framer keeps a buffer the size of
	// the largest frame for its connection's life (the heap grew by 0.7 to
	// 1.1 MB for it, on the goroutine path as on the loops' x/net
	// upstream), which is no body kept.
	h2, _ := xnetH2CUpstreamWith(t, &http2.Server{MaxReadFrameSize: 16 << 10}, handler)
	clusters := []types.Resource{edsCluster("h1"), cla("h1", h1.Listener.Addr().String()), edsCluster("h2", h2Upstream), cla("h2", h2)}
	for _, p := range proxyPaths() {
		h := newHarness(t, p.on)
		h.push(append([]types.Resource{httpListener("egress", httpManager("egress", "rds")),
			routeConfig("rds", vhost("v", []string{"*"}, retryPrefixRoute("/h1/", "h1"), retryPrefixRoute("/h2/", "h2")))},
			clusters...)...)
		for _, client := range []string{"h1", "h2c"} {
			for _, up := range []string{"h1", "h2"} {
				name := p.name + ", " + client + " client, /" + up + "/"
				c := &http.Client{Timeout: 10 * time.Second}
				if client == "h2c" {
					c.Transport = h2cClient(t).Transport
				}
				if grew := bodyHeldAfterHead(t, c, "http://"+h.addr("egress")+"/"+up+"/stream", sent, got); grew > sent/2 {
					t.Errorf("%s: the live heap grew by %d bytes while %d bytes of body passed after the response began; want them not kept (at most %d)", name, grew, sent, sent/2)
				}
			}
		}
	}
}

// retryPrefixRoute is a route of prefix to cluster under a retry policy.
func retryPrefixRoute(prefix, cluster string) *routev3.Route {
	r := routeTo(prefix, cluster)
	r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,reset,connect-failure", NumRetries: u32(2)}
	return r
}

// bodyHeldAfterHead POSTs url with c, the body's first bytes before the
// response head and sent more after it, and returns how much the live
// heap grew while those passed (read from got, the upstream's count).
func bodyHeldAfterHead(t *testing.T, c *http.Client, url string, sent int, got <-chan int) int64 {
	t.Helper()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, "first") }() // ends once the transport reads it, or at pw.Close
	resp, err := c.Post(url, "application/grpc", pr)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	defer resp.Body.Close()
	chunk := []byte(strings.Repeat("x", 16<<10))
	liveHeap()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range sent / len(chunk) {
		if _, err := pw.Write(chunk); err != nil {
			t.Fatalf("%s: writing the body: %v", url, err)
		}
	}
	select {
	case n := <-got:
		if n != sent+len("first") {
			t.Fatalf("%s: the upstream read %d bytes, want %d", url, n, sent+len("first"))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the upstream did not read the body within 10 s", url)
	}
	liveHeap()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	_ = pw.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// liveHeap collects twice, so that what sync.Pools hold (kept as victims
// through one collection) is not counted as live.
func liveHeap() {
	runtime.GC()
	runtime.GC()
}
