package evloop

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2WindowCreditedAfterClientReset: request bodies a client's
// connection window holds for an upstream that reads nothing are
// credited back once the client resets their streams (RST_STREAM, which
// the proxy answers with nothing): the client's connection window opens
// again and a new stream's body goes through. Else the connection,
// every byte of its window held by streams that are gone, could send no
// DATA on any stream again.
func TestH2WindowCreditedAfterClientReset(t *testing.T) {
	const quiet = 500 * time.Millisecond
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	_ = h.c.SetDeadline(time.Time{})
	w := newCreditView()
	w.follow(h.fr)
	h.headers(1, false, ":path", "/post")
	h.headers(3, false, ":path", "/post")
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	n := 0
	u.until(func(f http2.Frame) bool {
		if isHeaders(f) {
			n++
		}
		return n == 2
	})
	_ = u.c.SetDeadline(time.Time{})
	sent := sendWhileCredited(h.fr, w, []uint32{1, 3}, quiet)
	t.Logf("the client sent %v before its windows closed", sent)
	_ = h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = h.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	start := time.Now()
	for w.take(5, 1000) != 1000 { // stream 5 not opened: the windows alone
		if time.Since(start) > 10*time.Second {
			t.Fatalf("after %v bytes on two streams the client reset, its connection window stayed closed 10 s", sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
