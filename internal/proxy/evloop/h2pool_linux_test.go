package evloop

import (
	"os"
	"reflect"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestMain runs this package's tests with ended HTTP/2 streams poisoned
// instead of reused (recycleDead): a stream used after its loop freed it
// faults on a nil connection or request, where a reused one would serve
// another request's bytes in silence. The proxy package's tests run the
// loops as they ship, with streams reused.
func TestMain(m *testing.M) {
	recycleStreams = false
	os.Exit(m.Run())
}

// TestH2UpstreamStreamFreedWhileBlocked: an upstream stream whose request
// body waits for room on a connection the upstream does not read stays in
// the connection's blocked list after the client resets it; once the
// upstream reads, the resumed list finds it ended, and the connection
// serves the next stream. Freed at its end (poisoned here), the stream
// would fault there.
func TestH2UpstreamStreamFreedWhileBlocked(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post")
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	id := u.request().StreamID // and nothing more is read from the proxy for now
	w := newWindows()
	_ = h.c.SetDeadline(time.Time{})
	frames := make(chan http2.Frame, 64)
	go func() { // ends when the client connection closes (the test's cleanup)
		defer close(frames)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				w.credit(f)
			case *http2.MetaHeadersFrame:
				frames <- f
			}
		}
	}()
	if sent := sendUnderCredit(h.fr, 1, w, h2BoundTotal, 300*time.Millisecond); sent >= h2BoundTotal {
		t.Fatalf("the client sent all %d bytes: nothing was held", sent)
	}
	_ = h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	time.Sleep(100 * time.Millisecond) // the reset is read while the upstream reads nothing
	// The upstream reads what was held: the ended stream's bytes, its
	// reset, and nothing of it after that.
	_ = u.c.SetDeadline(time.Now().Add(10 * time.Second))
	if f := u.until(func(f http2.Frame) bool { return isRST(f) && f.Header().StreamID == id }); f == nil {
		t.Fatal("upstream: closed before the reset")
	}
	h.headers(3, true, ":path", "/after")
	f := u.until(func(f http2.Frame) bool {
		if f.Header().StreamID == id {
			t.Fatalf("upstream got %v on stream %d after its reset", f, id)
		}
		return isHeaders(f)
	})
	if f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("path") != "/after" {
		t.Fatalf("upstream got %v, want the next request", f)
	}
	u.headers(f.Header().StreamID, true, ":status", "204")
	select {
	case r := <-frames:
		if r == nil || r.Header().StreamID != 3 || r.(*http2.MetaHeadersFrame).PseudoValue("status") != "204" {
			t.Fatalf("client got %v, want 204 on stream 3", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client: no response within 10 s")
	}
}

// TestRecycleDead: an ended stream comes back zeroed for the next one
// unless something may still point to it; the free lists stay bounded.
func TestRecycleDead(t *testing.T) {
	recycleStreams = true
	defer func() { recycleStreams = false }()
	l := &loop{}
	ended := func(set func(st *h2stream)) *h2stream {
		st := l.newH2Stream()
		st.sd, st.id, st.gone = &st.req, 7, true
		st.req.h2, st.req.closed = st, true
		set(st)
		l.deadST = append(l.deadST, st)
		return st
	}
	free := ended(func(*h2stream) {})
	blocked := ended(func(st *h2stream) { st.blocked = true })
	timed := ended(func(st *h2stream) { st.req.tm.idx = 1 })
	linked := ended(func(st *h2stream) { st.us = &h2ustream{} })
	exchange := ended(func(st *h2stream) { st.req.u = &up{} })
	us := l.newH2UStream()
	us.id, us.done = 9, true
	usBlocked := l.newH2UStream()
	usBlocked.blocked, usBlocked.done = true, true
	l.deadUS = append(l.deadUS, us, usBlocked)
	l.recycleDead()
	if len(l.deadST) != 0 || len(l.deadUS) != 0 {
		t.Fatalf("dead lists hold %d and %d after recycling", len(l.deadST), len(l.deadUS))
	}
	if len(l.freeST) != 1 || l.freeST[0] != free || len(l.freeUS) != 1 || l.freeUS[0] != us {
		t.Fatalf("free lists %v %v, want only the unlinked streams", l.freeST, l.freeUS)
	}
	if st := l.newH2Stream(); st != free || !reflect.ValueOf(*st).IsZero() {
		t.Fatalf("reused stream %p not zeroed: %+v", st, st)
	}
	if s := l.newH2UStream(); s != us || !reflect.ValueOf(*s).IsZero() {
		t.Fatalf("reused upstream stream %p not zeroed: %+v", s, s)
	}
	for _, st := range []*h2stream{blocked, timed, linked, exchange} {
		if l.newH2Stream() == st {
			t.Fatalf("a stream still linked (%+v) was reused", st)
		}
	}
	if l.newH2UStream() == usBlocked {
		t.Fatal("an upstream stream still in its connection's blocked list was reused")
	}
	for range 2 * maxFreeStreams {
		ended(func(*h2stream) {})
	}
	l.recycleDead()
	if len(l.freeST) != maxFreeStreams {
		t.Fatalf("%d free streams kept, want the bound %d", len(l.freeST), maxFreeStreams)
	}
}
