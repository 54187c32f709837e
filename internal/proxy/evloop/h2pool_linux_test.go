package evloop

import (
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/internal/proxy/stats"
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
	st := stats.NewStore()
	h, u, id, w, heads := stalledUpload(t, func(c *Config) { c.Stats = st })
	if sent := sendUnderCredit(h.fr, 1, w, h2BoundTotal, 300*time.Millisecond); sent >= h2BoundTotal {
		t.Fatalf("the client sent all %d bytes: nothing was held", sent)
	}
	_ = h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	// The reset is read while the upstream reads nothing: the stream ends
	// in its connection's blocked list.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if v, _ := st.Value("http.ingress.downstream_rq_rx_reset"); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not count the client's reset within 10 s")
		}
	}
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
	case r := <-heads:
		if r.StreamID != 3 || r.PseudoValue("status") != "204" {
			t.Fatalf("client got %v, want 204 on stream 3", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client: no response within 10 s")
	}
}

// TestRecycleDead: an ended stream comes back zeroed for the next one
// unless something may still point to it; the free lists stay bounded.
func TestRecycleDead(t *testing.T) {
	l := &loop{} // recycled with reuse, as the loops run outside this package's tests
	ended := func(set func(st *h2stream)) *h2stream {
		st := l.streams.get()
		st.sd, st.id, st.gone = &st.req, 7, true
		st.req.h2, st.req.closed = st, true
		set(st)
		l.streams.ended(st)
		return st
	}
	free := ended(func(*h2stream) {})
	blocked := ended(func(st *h2stream) { st.blocked = true })
	timed := ended(func(st *h2stream) { st.req.tm.idx = 1 })
	linked := ended(func(st *h2stream) { st.us = &h2ustream{} })
	exchange := ended(func(st *h2stream) { st.req.u = &up{} })
	us := l.ustreams.get()
	us.id, us.done = 9, true
	usBlocked := l.ustreams.get()
	usBlocked.blocked, usBlocked.done = true, true
	l.ustreams.ended(us)
	l.ustreams.ended(usBlocked)
	l.recycleDead(true)
	if len(l.streams.dead) != 0 || len(l.ustreams.dead) != 0 {
		t.Fatalf("dead lists hold %d and %d after recycling", len(l.streams.dead), len(l.ustreams.dead))
	}
	if len(l.streams.free) != 1 || l.streams.free[0] != free || len(l.ustreams.free) != 1 || l.ustreams.free[0] != us {
		t.Fatalf("free lists %v %v, want only the unlinked streams", l.streams.free, l.ustreams.free)
	}
	if st := l.streams.get(); st != free || !reflect.ValueOf(*st).IsZero() {
		t.Fatalf("reused stream %p not zeroed: %+v", st, st)
	}
	if s := l.ustreams.get(); s != us || !reflect.ValueOf(*s).IsZero() {
		t.Fatalf("reused upstream stream %p not zeroed: %+v", s, s)
	}
	for _, st := range []*h2stream{blocked, timed, linked, exchange} {
		if l.streams.get() == st {
			t.Fatalf("a stream still linked (%+v) was reused", st)
		}
	}
	if l.ustreams.get() == usBlocked {
		t.Fatal("an upstream stream still in its connection's blocked list was reused")
	}
	for range 2 * maxFreeStreams {
		ended(func(*h2stream) {})
	}
	l.recycleDead(true)
	if len(l.streams.free) != maxFreeStreams {
		t.Fatalf("%d free streams kept, want the bound %d", len(l.streams.free), maxFreeStreams)
	}
}

// TestH2StreamKeepsHeadInItsRoom: a client stream keeps a request's
// HEADERS (h2stream.keepHead) as a copy of the fields the connection's
// decoder lent it, which the decoder's next block does not change, in a
// room that a recycled stream keeps, cleared: once a loop's streams have
// held a request, keeping one allocates nothing (round 36 allocated a
// copy of each block's fields).
func TestH2StreamKeepsHeadInItsRoom(t *testing.T) {
	l := &loop{} // recycled with reuse, as the loops run outside this package's tests
	lent := []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "a.example"}, {Name: ":path", Value: "/"}, {Name: "user-agent", Value: "h2load"},
		{Name: "accept", Value: "*/*"}, {Name: "accept-encoding", Value: "gzip"}}
	want := slices.Clone(lent)
	f := &http2.MetaHeadersFrame{HeadersFrame: &http2.HeadersFrame{}, Fields: lent}
	var st *h2stream
	request := func() {
		st = l.streams.get()
		st.keepHead(f)
		st.hf, st.sd, st.gone = &st.head, &st.req, true
		l.streams.ended(st)
	}
	request()
	clear(lent) // the decoder's next block
	if !reflect.DeepEqual(st.hf.Fields, want) {
		t.Fatalf("kept fields %v after the decoder's next block, want %v", st.hf.Fields, want)
	}
	copy(lent, want)
	l.recycleDead(true)
	if room := l.streams.free[len(l.streams.free)-1].room; cap(room) == 0 || slices.ContainsFunc(room[:cap(room)], func(f hpack.HeaderField) bool { return f != hpack.HeaderField{} }) {
		t.Fatalf("a recycled stream's room %v (capacity %d), want the request's, empty and cleared", room[:cap(room)], cap(room))
	}
	allocs := testing.AllocsPerRun(100, func() {
		request()
		l.recycleDead(true)
	})
	if allocs != 0 {
		t.Fatalf("keeping a request's HEADERS in a recycled stream allocates %v times, want 0", allocs)
	}
}
