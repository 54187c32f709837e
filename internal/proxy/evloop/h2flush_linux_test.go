package evloop

import (
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// unreached is a timeout a test cannot reach: set on the timeouts a case
// must not see fire, so that the one it expects is the only one that can
// (the connection's 10 s deadline fails the test first).
const unreached = time.Hour

// streamTimeoutCounts are the counters of the three timeouts that end an
// HTTP/2 stream held by the client's window, or its connection:
// downstream_rq_idle_timeout (stream idle), http2.tx_flush_timeout
// (flush), downstream_cx_idle_timeout (connection idle).
func streamTimeoutCounts(st *stats.Store) [3]int64 {
	var n [3]int64
	for i, name := range []string{"http.ingress.downstream_rq_idle_timeout", "http2.tx_flush_timeout",
		"http.ingress.downstream_cx_idle_timeout"} {
		n[i], _ = st.Value(name)
	}
	return n
}

// wantReset reads h until stream 1's RST_STREAM, which must be
// INTERNAL_ERROR (as x/net's server resets one on the goroutine path),
// and then checks the three counters.
func wantReset(t *testing.T, h *h2Raw, st *stats.Store, want [3]int64) {
	t.Helper()
	f := h.until(func(f http2.Frame) bool { return isRST(f) || isGoAway(f) })
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeInternal {
		t.Fatalf("stream held by a closed window: %v, want its RST_STREAM INTERNAL_ERROR", f)
	}
	if got := streamTimeoutCounts(st); got != want {
		t.Errorf("at the reset: downstream_rq_idle_timeout, http2.tx_flush_timeout, downstream_cx_idle_timeout = %v, want %v", got, want)
	}
}

func isGoAway(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }

// TestH2LoopStreamIdleTimeout: the three timeouts that end a stream the
// client gives no window, or its connection, told apart. Each case sets
// one to 300 ms and the others to an hour, so that no other can fire in
// the test's time, and checks the counter each one increments.
func TestH2LoopStreamIdleTimeout(t *testing.T) {
	t.Run("stream idle: the response's end has not come", func(t *testing.T) {
		// An HTTP/2 upstream sends the head and part of the body, never
		// its end: no flush timeout, the stream idle timeout resets it.
		st := stats.NewStore()
		srv, accept := startH2Up(t, func(c *Config) {
			c.Stats, c.IdleTimeout, c.StreamIdleTimeout, c.StreamFlushTimeout = st, unreached, 300*time.Millisecond, unreached
		})
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		h.headers(1, true, ":path", "/x")
		u := accept()
		id := u.request().StreamID
		u.headers(id, false, ":status", "200")
		_ = u.fr.WriteData(id, false, []byte("first part"))
		wantReset(t, h, st, [3]int64{1, 0, 0})
	})
	t.Run("flush: the response's end is buffered", func(t *testing.T) {
		// 10 bytes from the HTTP/1.1 backend, all buffered behind the
		// closed window with the end: the flush timeout resets it.
		st := stats.NewStore()
		srv := startH2(t, func(c *Config) {
			c.Stats, c.IdleTimeout, c.StreamIdleTimeout, c.StreamFlushTimeout = st, unreached, unreached, 300*time.Millisecond
		})
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		h.headers(1, true, ":path", "/big/10")
		wantReset(t, h, st, [3]int64{0, 1, 0})
	})
	t.Run("connection idle: no stream left", func(t *testing.T) {
		// The client resets its stream blocked behind the closed window:
		// the connection, without a stream, goes away after its idle
		// timeout, the stream timeouts not counted.
		st := stats.NewStore()
		srv := startH2(t, func(c *Config) {
			c.Stats, c.IdleTimeout, c.StreamIdleTimeout, c.StreamFlushTimeout = st, 300*time.Millisecond, unreached, unreached
		})
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		h.headers(1, true, ":path", "/big/10")
		if f := h.until(isHeaders); f == nil || f.Header().StreamID != 1 {
			t.Fatalf("stream 1's response head: %v", f)
		}
		_ = h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		if code := h.goAway(); code != http2.ErrCodeNo {
			t.Errorf("GOAWAY %v, want NO_ERROR", code)
		}
		if got := streamTimeoutCounts(st); got != [3]int64{0, 0, 1} {
			t.Errorf("downstream_rq_idle_timeout, http2.tx_flush_timeout, downstream_cx_idle_timeout = %v, want [0 0 1]", got)
		}
	})
}

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
