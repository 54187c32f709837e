package evloop

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestH2UpstreamFlowControl: the upstream's response DATA is credited
// back only as the client's window lets it through, in one WINDOW_UPDATE
// once half the stream's window went (as nghttp2 credits), and a request
// body the upstream never opens its window for is reset after the idle
// timeout (both streams), nothing of it credited to the client.
func TestH2UpstreamFlowControl(t *testing.T) {
	t.Run("response", func(t *testing.T) {
		// The client's window holds the response at first, a stream
		// window of 300,000, under half the window the loops give the
		// upstream (1 MiB); its connection window is wide.
		const first, more = 300000, 240000
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: first})
		_ = h.fr.WriteWindowUpdate(0, 1<<30)
		h.headers(1, true)
		u := accept()
		id := u.request().StreamID
		u.headers(id, false, ":status", "200")
		chunk := bytes.Repeat([]byte("a"), 16384)
		for range (first + more + len(chunk) - 1) / len(chunk) {
			_ = u.fr.WriteData(id, false, chunk)
		}
		got := 0
		take := func(upTo int) {
			t.Helper()
			h.until(func(f http2.Frame) bool {
				if d, ok := f.(*http2.DataFrame); ok {
					got += len(d.Data())
				}
				return got >= upTo
			})
		}
		// credited: the upstream's WINDOW_UPDATEs for the stream in the
		// next 300 ms, each one's increment.
		credited := func() []uint32 {
			var incs []uint32
			for _, w := range windowUpdates(t, u.c, u.fr) {
				if w[0] == id {
					incs = append(incs, w[1])
				}
			}
			return incs
		}
		take(first)
		if c := credited(); got != first || len(c) != 0 {
			t.Fatalf("client got %d bytes, upstream credited %v on its stream; want %d and nothing (under half the window)", got, c, first)
		}
		_ = h.fr.WriteWindowUpdate(1, more)
		take(first + more)
		// Credited once half the window went to the client, in one
		// WINDOW_UPDATE (what went after it waits for the next half).
		if c := credited(); got != first+more || len(c) != 1 || c[0] < wantWindow/2 || c[0] > first+more {
			t.Fatalf("client got %d bytes, upstream credited %v on its stream; want %d and one increment of %d to %[3]d",
				got, c, first+more, wantWindow/2)
		}
	})
	t.Run("request body", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, false, ":path", "/post")
		u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		id := u.request().StreamID
		upGot := 0
		// send sends the client's next quarter window and waits for the
		// upstream to get it.
		send := func() {
			t.Helper()
			sendQuarter(h)
			want := upGot + quarterWindow
			u.until(func(f http2.Frame) bool {
				if d, ok := f.(*http2.DataFrame); ok && d.StreamID == id {
					upGot += len(d.Data())
				}
				return upGot >= want
			})
		}
		creditedAtHalf(t, h, send)
	})
	t.Run("request body stalled", func(t *testing.T) {
		st := stats.NewStore()
		srv, accept := startH2Up(t, func(c *Config) {
			c.IdleTimeout, c.StreamIdleTimeout, c.Stats = 30*time.Second, 300*time.Millisecond, st
		})
		h := dialH2Raw(t, srv, http2.ClientPreface)
		// The upstream stream's idle time runs from its opening, after
		// the HEADERS went: from here, not from the DATA (the upstream's
		// accept may take a while under load).
		start := time.Now()
		h.headers(1, false, ":path", "/post")
		u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		id := u.request().StreamID
		_ = h.fr.WriteData(1, false, bytes.Repeat([]byte("b"), 1000))
		var credited uint32
		f := h.until(func(f http2.Frame) bool {
			if w, ok := f.(*http2.WindowUpdateFrame); ok && w.StreamID == 1 {
				credited += w.Increment
			}
			return isRST(f)
		})
		if f == nil || f.(*http2.RSTStreamFrame).StreamID != 1 || time.Since(start) < 250*time.Millisecond || credited != 0 {
			t.Fatalf("client got %v after %v (credited %d), want RST_STREAM after the idle timeout, nothing credited", f, time.Since(start), credited)
		}
		if f := u.until(isRST); f == nil || f.(*http2.RSTStreamFrame).StreamID != id || f.(*http2.RSTStreamFrame).ErrCode != http2.ErrCodeCancel {
			t.Fatalf("upstream got %v, want RST_STREAM CANCEL", f)
		}
		if v, _ := st.Value("http.ingress.downstream_rq_idle_timeout"); v != 1 {
			t.Errorf("downstream_rq_idle_timeout = %d, want 1 (Envoy's stream idle timeout)", v)
		}
	})
}

// TestH2UpstreamTrailersHeldWhileBlocked: a response's trailers that
// arrive while the client's window holds its body back wait on the
// stream, and reach the client intact once it opens the window, though the
// upstream connection's decoder went on to the next response meanwhile
// (it lends its fields until its next frame, h2Heads).
func TestH2UpstreamTrailersHeldWhileBlocked(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	h.headers(1, true)
	u := accept()
	first := u.request().StreamID
	u.headers(first, false, ":status", "200", "content-type", "application/grpc")
	_ = u.fr.WriteData(first, false, bytes.Repeat([]byte("a"), 1000))
	u.headers(first, true, "grpc-status", "7", "grpc-message", "held back")
	// The next response on the same upstream connection, decoded while the
	// first's trailers wait.
	h.headers(3, true)
	second := u.request().StreamID
	u.headers(second, true, ":status", "204", "x-second", "decoded after")
	body := 0
	got := h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			body += len(d.Data())
		}
		return f.Header().StreamID == 3
	})
	if hf, ok := got.(*http2.MetaHeadersFrame); !ok || hf.PseudoValue("status") != "204" {
		t.Fatalf("stream 3: %v", got)
	}
	_ = h.fr.WriteWindowUpdate(1, 1000)
	f := h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			body += len(d.Data())
		}
		hf, ok := f.(*http2.MetaHeadersFrame)
		return ok && hf.StreamID == 1 && hf.StreamEnded()
	})
	tr, _ := f.(*http2.MetaHeadersFrame)
	if tr == nil || body != 1000 {
		t.Fatalf("stream 1: %d bytes of body, then %v", body, f)
	}
	want := []hpack.HeaderField{{Name: "grpc-status", Value: "7"}, {Name: "grpc-message", Value: "held back"}}
	if fmt.Sprint(tr.Fields) != fmt.Sprint(want) {
		t.Fatalf("trailers %v, want %v", tr.Fields, want)
	}
}
