package evloop

import (
	"runtime"
	"testing"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestH2UpstreamReplayDroppedAtResponse: a stream under a retry policy
// keeps its body for a retry only until the response begins (Envoy's
// Filter::onUpstreamHeaders ends its retry state): the body a long
// stream (gRPC's) sends after the upstream's HEADERS is passed on and not
// kept, so the loop holds none of it however long the stream lasts.
func TestH2UpstreamReplayDroppedAtResponse(t *testing.T) {
	policy := &proxyroute.RetryPolicy{On: proxyroute.OnReset | proxyroute.On5xx, NumRetries: 2}
	srv, accept := startH2UpRetry(t, policy)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/stream", "content-type", "application/grpc")
	_ = h.fr.WriteData(1, false, []byte("first"))
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	_ = u.fr.WriteWindowUpdate(0, 1<<20)
	id := u.request().StreamID
	u.headers(id, false, ":status", "200") // the response begins; the stream stays open both ways
	if f := h.until(func(f http2.Frame) bool { return isHeaders(f) || isRST(f) }); !isHeaders(f) {
		t.Fatalf("client got %v, want the response's HEADERS", f)
	}

	const sent = 768 << 10
	chunk := make([]byte, 16<<10)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	got := 0
	for i := 0; i < sent/len(chunk); i++ {
		_ = h.fr.WriteData(1, false, chunk)
	}
	for got < sent+len("first") {
		f := u.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
		if f == nil {
			t.Fatalf("upstream closed after %d bytes", got)
		}
		got += len(f.(*http2.DataFrame).Data())
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// Kept, the body would be live in the loop's stream (768 KiB);
	// dropped, what is live is the loop's and the framers' buffers.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > sent/2 {
		t.Errorf("the live heap grew by %d bytes while %d bytes of body passed after the response began; want them not kept (at most %d)", grew, sent, sent/2)
	}
}
