package evloop

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2FlushTimeoutAfterBlocked: an HTTP/2 upstream keeps sending while
// the client's window is closed, so the stream blocks on its first DATA
// and its END_STREAM is buffered after. The flush timeout (300 ms) runs
// from then, though the stream's deadline was the stream idle timeout's
// (30 s) when it blocked: the stream is reset long before that.
func TestH2FlushTimeoutAfterBlocked(t *testing.T) {
	srv, accept := startH2Up(t, func(c *Config) {
		c.IdleTimeout, c.StreamIdleTimeout, c.StreamFlushTimeout = 30*time.Second, 30*time.Second, 300*time.Millisecond
	})
	h := dialH2Raw(t, srv, http2.ClientPreface)
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	h.headers(1, true, ":path", "/x")
	u := accept()
	id := u.request().StreamID
	u.headers(id, false, ":status", "200")
	_ = u.fr.WriteData(id, false, []byte("first part"))
	time.Sleep(100 * time.Millisecond)
	_ = u.fr.WriteData(id, true, []byte("last part")) // the end, buffered behind the closed window
	ended := time.Now()
	f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeInternal {
		t.Fatalf("the blocked stream whose end is buffered: %v, want RST_STREAM INTERNAL_ERROR", f)
	}
	// Not a speed bound: the flush timeout is 300 ms, the stream idle
	// timeout it must not wait for 30 s.
	if waited := time.Since(ended); waited > 5*time.Second {
		t.Errorf("reset %v after the end was buffered: the flush timeout (300 ms) did not apply", waited)
	}
}
