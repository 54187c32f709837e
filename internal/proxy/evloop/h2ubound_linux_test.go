package evloop

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2BoundTotal is how many bytes the bounded-memory tests offer through
// the proxy to a peer that reads nothing; h2BoundMax is what the proxy's
// memory and the kernel's socket buffers (a few MB on loopback) may hold
// of it before the sender's windows close.
const (
	h2BoundTotal = 48 << 20
	h2BoundMax   = 16 << 20
)

// windows is a sender's two flow-control windows, credited by the
// goroutine reading its peer's WINDOW_UPDATEs and set by its
// SETTINGS_INITIAL_WINDOW_SIZE (init, that goroutine's).
type windows struct {
	conn, stream atomic.Int64
	init         int64
}

func newWindows() *windows {
	w := &windows{init: 65535}
	w.conn.Store(65535)
	w.stream.Store(65535)
	return w
}

// upWindows is newWindows for a sender that is the upstream u, from the
// windows the proxy gave it that u.until read already.
func upWindows(u *rawUp) *windows {
	w := newWindows()
	if u.init > 0 {
		w.init = u.init
		w.stream.Store(u.init)
	}
	w.conn.Add(u.connCredit)
	return w
}

func (w *windows) credit(f *http2.WindowUpdateFrame) {
	if f.StreamID == 0 {
		w.conn.Add(int64(f.Increment))
	} else {
		w.stream.Add(int64(f.Increment))
	}
}

// sendUnderCredit writes DATA on stream id with fr while the windows its
// peer grants let it, until total bytes went or no credit came for
// quiet. It returns the bytes sent.
func sendUnderCredit(fr *http2.Framer, id uint32, w *windows, total int, quiet time.Duration) int {
	chunk := bytes.Repeat([]byte("w"), 16384)
	sent := 0
	last := time.Now()
	for sent < total {
		n := int(min(w.conn.Load(), w.stream.Load(), int64(len(chunk)), int64(total-sent)))
		if n <= 0 {
			if time.Since(last) > quiet {
				break
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err := fr.WriteData(id, false, chunk[:n]); err != nil {
			break
		}
		w.conn.Add(-int64(n))
		w.stream.Add(-int64(n))
		sent += n
		last = time.Now()
	}
	return sent
}

// creditFrom reads fr's frames on a goroutine: WINDOW_UPDATEs credit w,
// HEADERS go to the channel it returns (dropped when it is full).
func creditFrom(fr *http2.Framer, w *windows) <-chan *http2.MetaHeadersFrame {
	heads := make(chan *http2.MetaHeadersFrame, 16)
	go func() { // ends when fr's connection closes (the test's cleanup)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
					w.stream.Add(int64(v) - w.init)
					w.init = int64(v)
				}
			case *http2.WindowUpdateFrame:
				w.credit(f)
			case *http2.MetaHeadersFrame:
				select {
				case heads <- f:
				default:
				}
			}
		}
	}()
	return heads
}

// stalledUpload opens stream 1, a request with a body still to come,
// through the loops to an HTTP/2 upstream that opens its windows wide and
// then reads nothing: the client, the upstream, the upstream's stream ID,
// the client's windows (credited as the proxy sends WINDOW_UPDATEs) and
// the client's response HEADERS.
func stalledUpload(t *testing.T, mod ...func(*Config)) (h *h2Raw, u *rawUp, id uint32, w *windows, heads <-chan *http2.MetaHeadersFrame) {
	t.Helper()
	srv, accept := startH2Up(t, mod...)
	h = dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post")
	u = accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	id = u.request().StreamID // and nothing more is read from the proxy for now
	w = newWindows()
	_ = h.c.SetDeadline(time.Time{})
	return h, u, id, w, creditFrom(h.fr, w)
}

// TestH2UpstreamSlowClientBounded: a client that opens its windows wide
// and reads nothing holds at most the connection's output bound (and the
// socket buffers) of an HTTP/2 upstream's response: the upstream is
// credited only as bytes go out under that bound, so it stops sending.
// Once the client reads, every byte sent arrives.
func TestH2UpstreamSlowClientBounded(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	h.headers(1, true)
	u := accept()
	id := u.request().StreamID
	_ = u.c.SetDeadline(time.Time{})
	u.headers(id, false, ":status", "200")
	w := upWindows(u)
	creditFrom(u.fr, w)
	sent := sendUnderCredit(u.fr, id, w, h2BoundTotal, 500*time.Millisecond)
	t.Logf("the upstream sent %d bytes before its windows closed", sent)
	if sent > h2BoundMax {
		t.Fatalf("the upstream sent %d bytes to a client reading nothing, want at most %d", sent, h2BoundMax)
	}
	_ = u.fr.WriteData(id, true, nil)
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	got := 0
	h.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
			return d.StreamEnded()
		}
		return false
	})
	if got != sent {
		t.Fatalf("client got %d bytes, the upstream sent %d", got, sent)
	}
}

// TestH2UpstreamSlowUpstreamBounded: an HTTP/2 upstream that opens its
// windows wide and reads nothing holds at most the connection's output
// bound (and the socket buffers) of a request body: the client's stream
// is credited only as bytes go out under that bound.
func TestH2UpstreamSlowUpstreamBounded(t *testing.T) {
	h, u, _, w, _ := stalledUpload(t)
	sent := sendUnderCredit(h.fr, 1, w, h2BoundTotal, 500*time.Millisecond)
	t.Logf("the client sent %d bytes before its stream window closed", sent)
	if sent > h2BoundMax {
		t.Fatalf("the client sent %d bytes to an upstream reading nothing, want at most %d", sent, h2BoundMax)
	}
	// The upstream reads now: every byte sent arrives.
	_ = h.fr.WriteData(1, true, nil)
	_ = u.c.SetDeadline(time.Now().Add(10 * time.Second))
	got := 0
	f := u.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok {
			got += len(d.Data())
			return d.StreamEnded()
		}
		return false
	})
	if f == nil || got != sent {
		t.Fatalf("upstream got %d bytes (ended %v), the client sent %d", got, f != nil, sent)
	}
}

// TestH2UpstreamPingFloodBounded: an HTTP/2 upstream that sends PINGs and
// reads nothing holds at most the connection's output bound of their
// ACKs (and the socket buffers): the proxy stops reading it. Once it
// reads, its stream's response comes through.
func TestH2UpstreamPingFloodBounded(t *testing.T) {
	h, u, id := openH2Up(t)
	_ = u.c.SetDeadline(time.Time{})
	var chunk bytes.Buffer
	fr := http2.NewFramer(&chunk, nil)
	for chunk.Len() < 64<<10 {
		_ = fr.WritePing(false, [8]byte{1})
	}
	var written atomic.Int64
	var stop atomic.Bool
	go func() { // ends when h2BoundTotal went, the test stops it or the connection closes (Cleanup)
		for written.Load() < h2BoundTotal && !stop.Load() {
			n, err := u.c.Write(chunk.Bytes())
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	last, since := int64(-1), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if n := written.Load(); n != last {
			if n >= h2BoundTotal {
				t.Fatalf("%d MB of PINGs taken from an upstream that reads nothing", n>>20)
			}
			last, since = n, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("stalled after %d KB of PINGs", last>>10)
	stop.Store(true)
	go func() { // the upstream reads now; ends when its connection closes (Cleanup)
		for {
			if _, err := u.fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	// A write of the flood still under way goes first: net.Conn's writes
	// do not interleave.
	u.headers(id, true, ":status", "200")
	_ = h.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if f := h.until(isHeaders); f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "200" {
		t.Fatalf("after the flood: %v", f)
	}
}
