package evloop

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// wantWindow and wantConnWindow are the windows the loops give each
// stream and each connection, toward clients and upstreams, unless
// configured (route.DefaultH2Windows): x/net's server's 1 MiB a stream,
// four of them the connection.
const (
	wantWindow     = 1 << 20
	wantConnWindow = 4 << 20
)

// creditView is a sender's view of the windows its peer (the proxy)
// gives it: RFC 9113's initial 65,535, then the peer's
// SETTINGS_INITIAL_WINDOW_SIZE and WINDOW_UPDATEs; and the DATA it got
// from the peer, per stream.
type creditView struct {
	mu       sync.Mutex
	init     int64
	conn     int64
	credited map[uint32]int64 // a stream's WINDOW_UPDATEs, less what was sent on it
	got      map[uint32]int
}

func newCreditView() *creditView {
	return &creditView{init: 65535, conn: 65535, credited: map[uint32]int64{}, got: map[uint32]int{}}
}

// note takes a frame read from the peer.
func (w *creditView) note(f http2.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
			w.init = int64(v)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			w.conn += int64(f.Increment)
		} else {
			w.credited[f.StreamID] += int64(f.Increment)
		}
	case *http2.DataFrame:
		w.got[f.StreamID] += len(f.Data())
	}
}

// take reserves up to n bytes of stream id's and the connection's
// windows, and returns how many.
func (w *creditView) take(id uint32, n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n = int(min(int64(n), w.conn, w.init+w.credited[id]))
	if n <= 0 {
		return 0
	}
	w.conn -= int64(n)
	w.credited[id] -= int64(n)
	return n
}

// received is the DATA bytes the peer sent on id.
func (w *creditView) received(id uint32) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got[id]
}

// follow notes every frame read from fr on a goroutine.
func (w *creditView) follow(fr *http2.Framer) {
	go func() { // ends when fr's connection closes (the test's cleanup)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			w.note(f)
		}
	}()
}

// sendWhileCredited sends DATA on the streams ids, in turn, under w's
// windows, until no credit came for quiet; it returns what went on each.
func sendWhileCredited(fr *http2.Framer, w *creditView, ids []uint32, quiet time.Duration) []int {
	chunk := bytes.Repeat([]byte("w"), 16384)
	sent := make([]int, len(ids))
	last := time.Now()
	for time.Since(last) < quiet {
		moved := false
		for i, id := range ids {
			if n := w.take(id, len(chunk)); n > 0 {
				if err := fr.WriteData(id, false, chunk[:n]); err != nil {
					return sent
				}
				sent[i] += n
				moved = true
			}
		}
		if moved {
			last = time.Now()
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return sent
}

// waitReceived waits until w saw want bytes of DATA on each stream of
// ids, failing when nothing more came for 10 s.
func waitReceived(t *testing.T, w *creditView, ids []uint32, want []int) {
	t.Helper()
	total := func() (n int) {
		for _, id := range ids {
			n += w.received(id)
		}
		return n
	}
	last, since := -1, time.Now()
	for {
		done := true
		for i, id := range ids {
			done = done && w.received(id) >= want[i]
		}
		if done {
			break
		}
		if n := total(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 10*time.Second {
			t.Fatalf("stuck at %d bytes received, want %v on streams %v", n, want, ids)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, id := range ids {
		if got := w.received(id); got != want[i] {
			t.Fatalf("stream %d: %d bytes received, %d sent", id, got, want[i])
		}
	}
}

// firstWindows reads frames with read until a SETTINGS (not an ACK) and
// a WINDOW_UPDATE on the connection came, or four frames were read, and
// returns the SETTINGS_INITIAL_WINDOW_SIZE of the first (-1 when it had
// none, -2 when none came) and the increment of the second (0 when none
// came).
func firstWindows(t *testing.T, read func() (http2.Frame, error)) (initial int64, conn uint32) {
	t.Helper()
	initial = -2
	for range 4 {
		f, err := read()
		if err != nil {
			t.Fatalf("reading the proxy's first frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && initial == -2 {
				initial = -1
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					initial = int64(v)
				}
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 && conn == 0 {
				conn = f.Increment
			}
		}
		if initial != -2 && conn != 0 {
			break
		}
	}
	return initial, conn
}

// TestH2WindowSettings: the loops give a client, and an HTTP/2
// upstream, a window of 1 MiB on each stream (SETTINGS_INITIAL_WINDOW_SIZE
// in their first SETTINGS), as x/net's server does, and of 4 MiB on the
// connection (a WINDOW_UPDATE of 4 MiB - 65,535 right after those
// SETTINGS).
func TestH2WindowSettings(t *testing.T) {
	check := func(t *testing.T, initial int64, conn uint32) {
		t.Helper()
		if initial != wantWindow {
			t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d (-1: not sent), want %d", initial, wantWindow)
		}
		if conn != wantConnWindow-65535 {
			t.Errorf("connection WINDOW_UPDATE of %d (0: none), want %d", conn, wantConnWindow-65535)
		}
	}
	t.Run("to clients", func(t *testing.T) {
		h := dialH2Raw(t, startH2(t), http2.ClientPreface)
		initial, conn := firstWindows(t, h.fr.ReadFrame)
		check(t, initial, conn)
	})
	t.Run("to upstreams", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, true)
		u := accept()
		initial, conn := firstWindows(t, u.fr.ReadFrame)
		check(t, initial, conn)
	})
}

// TestH2WindowWholeBody: a peer that sends a whole window's worth of
// body (1 MiB, over RFC 9113's initial 65,535) before any WINDOW_UPDATE,
// as the loops' SETTINGS and connection WINDOW_UPDATE allow, while its
// receiver gives no window yet (so the proxy holds it all), gets it
// through once the receiver opens its window: a request body from a
// client to an HTTP/2 upstream, and a response body from the upstream
// to the client. A PING answered after the body says the proxy read it
// all before the receiver opens. While the loops gave 65,535 the stream
// was reset for flow control.
func TestH2WindowWholeBody(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 16384)
	isPingAck := func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }
	t.Run("request", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		h.headers(1, false, ":path", "/post")
		u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		id := u.request().StreamID
		for range wantWindow / len(body) {
			_ = h.fr.WriteData(1, false, body)
		}
		_ = h.fr.WriteData(1, true, nil)
		_ = h.fr.WritePing(false, [8]byte{1})
		if f := h.until(func(f http2.Frame) bool { return isPingAck(f) || isRST(f) }); !isPingAck(f) {
			t.Fatalf("client: %v, want the PING's ACK", f)
		}
		_ = u.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		got := 0
		f := u.until(func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok && d.StreamID == id {
				got += len(d.Data())
				return d.StreamEnded()
			}
			return isRST(f)
		})
		if _, ok := f.(*http2.DataFrame); !ok || got != wantWindow {
			t.Fatalf("upstream got %d of %d bytes, then %v", got, wantWindow, f)
		}
	})
	t.Run("response", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		h.headers(1, true)
		u := accept()
		id := u.request().StreamID
		u.headers(id, false, ":status", "200")
		for range wantWindow / len(body) {
			_ = u.fr.WriteData(id, false, body)
		}
		_ = u.fr.WriteData(id, true, nil)
		_ = u.fr.WritePing(false, [8]byte{1})
		if f := u.until(func(f http2.Frame) bool { return isPingAck(f) || isRST(f) }); !isPingAck(f) {
			t.Fatalf("upstream: %v, want the PING's ACK", f)
		}
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		got := 0
		f := h.until(func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok {
				got += len(d.Data())
				return d.StreamEnded()
			}
			return isRST(f)
		})
		if _, ok := f.(*http2.DataFrame); !ok || got != wantWindow {
			t.Fatalf("client got %d of %d bytes, then %v", got, wantWindow, f)
		}
	})
}

// TestH2WindowBounded: what the loops hold of bodies their receivers do
// not take is at most the windows they gave the senders. A client
// connection's window is credited as bytes are passed on, not as they
// arrive (as Envoy's codec consumes a stream's bytes, and x/net's server
// credits them, once passed on): a client sending two request bodies to
// an upstream that reads nothing gets at most a stream's window in on
// each (1 MiB), and at most the connection's in all: with a connection
// window of 1.5 MiB, 1.5 MiB, where the streams' alone would be 2 MiB
// (crediting the connection on receipt let 2 MiB in). An upstream connection carries many clients' streams and
// is credited on receipt (TestH2WindowSlowClientSharedUpstream): a
// client that reads nothing (its windows closed) on two streams gets
// its upstream at most a stream's window, 1 MiB, into the proxy on each.
// Once the receiver reads, every byte sent arrives.
func TestH2WindowBounded(t *testing.T) {
	const quiet = 500 * time.Millisecond
	t.Run("responses to a client reading nothing", func(t *testing.T) {
		srv, accept := startH2Up(t)
		h := dialH2Raw(t, srv, http2.ClientPreface)
		_ = h.c.SetDeadline(time.Time{})
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		h.headers(1, true)
		h.headers(3, true)
		u := accept()
		w := newCreditView()
		var ids []uint32
		u.until(func(f http2.Frame) bool {
			w.note(f)
			if hf, ok := f.(*http2.MetaHeadersFrame); ok {
				ids = append(ids, hf.StreamID)
			}
			return len(ids) == 2
		})
		_ = u.c.SetDeadline(time.Time{})
		for _, id := range ids {
			u.headers(id, false, ":status", "200")
		}
		w.follow(u.fr)
		sent := sendWhileCredited(u.fr, w, ids, quiet)
		t.Logf("the upstream sent %v before its windows closed", sent)
		if max(sent[0], sent[1]) > wantWindow {
			t.Fatalf("the upstream sent %v to a client reading nothing; want at most a stream's window, %d, on each",
				sent, wantWindow)
		}
		for _, id := range ids {
			_ = u.fr.WriteData(id, true, nil)
		}
		cw := newCreditView()
		cw.follow(h.fr)
		_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		waitReceived(t, cw, []uint32{1, 3}, sent)
	})
	// Two streams to an upstream reading nothing, by default (each at
	// most its window, 1 MiB; the connection's 4 MiB is more than both)
	// and with a connection window under both streams' (then at most it).
	for _, c := range []struct {
		name string
		win  proxyroute.H2Windows // zero: the default
	}{
		{"request bodies to an upstream reading nothing", proxyroute.H2Windows{}},
		{"request bodies to an upstream reading nothing, a connection window of 1.5 streams'",
			proxyroute.H2Windows{Stream: wantWindow, Conn: wantWindow * 3 / 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, accept := startH2Up(t, func(cfg *Config) { cfg.Router = windowsRouter{cfg.Router.(h2UpRouter), c.win} })
			h := dialH2Raw(t, srv, http2.ClientPreface)
			_ = h.c.SetDeadline(time.Time{})
			w := newCreditView()
			w.follow(h.fr)
			h.headers(1, false, ":path", "/post")
			h.headers(3, false, ":path", "/post")
			u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			var ids []uint32
			u.until(func(f http2.Frame) bool {
				if hf, ok := f.(*http2.MetaHeadersFrame); ok {
					ids = append(ids, hf.StreamID)
				}
				return len(ids) == 2
			})
			_ = u.c.SetDeadline(time.Time{})
			sent := sendWhileCredited(h.fr, w, []uint32{1, 3}, quiet)
			t.Logf("the client sent %v before its windows closed", sent)
			conn := wantConnWindow
			if c.win.Conn != 0 {
				conn = int(c.win.Conn)
			}
			if max(sent[0], sent[1]) > wantWindow || sent[0]+sent[1] > conn {
				t.Fatalf("the client sent %v, %d bytes, to an upstream reading nothing; want at most a stream's window, %d, on each, and the connection's, %d, in all",
					sent, sent[0]+sent[1], wantWindow, conn)
			}
			uw := newCreditView()
			uw.follow(u.fr)
			_ = u.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
			waitReceived(t, uw, ids, sent)
		})
	}
}

// windowsRouter is an h2UpRouter whose client connections get win (zero:
// the default).
type windowsRouter struct {
	h2UpRouter
	win proxyroute.H2Windows
}

func (r windowsRouter) H2() (H2Settings, bool) {
	s, ok := r.h2UpRouter.H2()
	s.Windows = r.win
	return s, ok
}
