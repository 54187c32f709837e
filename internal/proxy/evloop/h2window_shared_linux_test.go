package evloop

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2WindowSlowClientSharedUpstream: an HTTP/2 upstream connection
// carries streams of many clients; one client that reads nothing holds
// at most its stream's window of the connection's, never all of it, so
// another client's response on the same upstream connection still
// comes. With the upstream connection's window as small as a stream's
// (1 MiB each), credited only as bytes are passed on, the stalled stream
// took the whole connection window and the other client got nothing.
func TestH2WindowSlowClientSharedUpstream(t *testing.T) {
	const quiet = 500 * time.Millisecond
	srv, accept := startH2Up(t)
	slow := dialH2Raw(t, srv, http2.ClientPreface)
	_ = slow.c.SetDeadline(time.Time{})
	_ = slow.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	slow.headers(1, true)
	u := accept()
	w := newCreditView()
	heads := func() uint32 {
		f := u.until(func(f http2.Frame) bool { w.note(f); return isHeaders(f) })
		if f == nil {
			t.Fatal("upstream: closed before a request")
		}
		return f.(*http2.MetaHeadersFrame).StreamID
	}
	slowID := heads()
	other := dialH2Raw(t, srv, http2.ClientPreface)
	other.headers(1, true)
	otherID := heads() // on the same upstream connection (Loops: 1, one pool)
	_ = u.c.SetDeadline(time.Time{})
	u.headers(slowID, false, ":status", "200")
	u.headers(otherID, false, ":status", "200")
	w.follow(u.fr)
	sent := sendWhileCredited(u.fr, w, []uint32{slowID}, quiet)
	t.Logf("the upstream sent %d bytes to a client reading nothing", sent[0])
	if n := w.take(otherID, 1000); n != 1000 {
		t.Fatalf("after %d bytes to a client reading nothing, the upstream connection's window has %d bytes for another client's stream; want 1000",
			sent[0], n)
	}
	_ = u.fr.WriteData(otherID, true, make([]byte, 1000))
	got := 0
	other.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			got += len(d.Data())
			return d.StreamEnded()
		}
		return false
	})
	if got != 1000 {
		t.Fatalf("the other client got %d bytes, want 1000", got)
	}
}
