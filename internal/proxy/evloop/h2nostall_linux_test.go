package evloop

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// h2FlowTotal is the body the no-stall tests move through the loops:
// several of every window on the way.
const h2FlowTotal = 300 << 10

// peerCredit is how a test's peer credits the windows it gives the proxy
// as it reads DATA: every frame at once (avail 0), or, as nghttp2 does,
// once half of a window (the stream's, avail; the connection's, 65,535)
// is used.
type peerCredit struct {
	fr            *http2.Framer
	avail         uint32
	conn          uint32
	stream        map[uint32]uint32
	connUnsent    uint32
	streamUnsent  map[uint32]uint32
	every         bool
	receivedTotal int
	err           error // the first WINDOW_UPDATE not written
}

func (p *peerCredit) windowUpdate(id, n uint32) {
	if err := p.fr.WriteWindowUpdate(id, n); err != nil && p.err == nil {
		p.err = err
	}
}

func newPeerCredit(fr *http2.Framer, avail uint32) *peerCredit {
	return &peerCredit{fr: fr, avail: avail, every: avail == 0, stream: map[uint32]uint32{}, streamUnsent: map[uint32]uint32{}}
}

// data notes a DATA frame read and credits what the policy says.
func (p *peerCredit) data(d *http2.DataFrame) {
	n := d.Header().Length
	p.receivedTotal += len(d.Data())
	if n == 0 {
		return
	}
	p.connUnsent += n
	if p.every || p.connUnsent >= 65535/2 {
		p.windowUpdate(0, p.connUnsent)
		p.connUnsent = 0
	}
	if d.StreamEnded() {
		return
	}
	id := d.StreamID
	p.streamUnsent[id] += n
	if p.every || p.streamUnsent[id] >= p.avail/2 {
		p.windowUpdate(id, p.streamUnsent[id])
		p.streamUnsent[id] = 0
	}
}

// readBody reads stream id's request body at the upstream u, crediting
// it as newPeerCredit(avail) does, and sends how many body bytes came
// once the request ends or the connection does.
func readBody(u *rawUp, id uint32, avail uint32) <-chan int {
	got := make(chan int, 1)
	go func() { // ends at the request's end or when the upstream's connection closes (Cleanup)
		p := newPeerCredit(u.fr, avail)
		for {
			f, err := u.fr.ReadFrame()
			if err != nil {
				got <- p.receivedTotal
				return
			}
			if d, ok := f.(*http2.DataFrame); ok && d.StreamID == id {
				p.data(d)
				if d.StreamEnded() {
					got <- p.receivedTotal
					return
				}
			}
		}
	}()
	return got
}

// sendBody sends total bytes of stream id's response body from the
// upstream u under the proxy's credit, then its end, and gives how many
// went: fewer when no credit came for quiet.
func sendBody(u *rawUp, id uint32, total int, quiet time.Duration) <-chan int {
	w := upWindows(u)
	creditFrom(u.fr, w)
	sent := make(chan int, 1)
	go func() { // ends when the body went or no credit came for quiet
		n := sendUnderCredit(u.fr, id, w, total, quiet)
		if n == total {
			_ = u.fr.WriteData(id, true, nil)
		}
		sent <- n
	}()
	return sent
}

// wholeBody checks that readBody's upstream got the whole h2FlowTotal.
func wholeBody(t *testing.T, got <-chan int) {
	t.Helper()
	select {
	case n := <-got:
		if n != h2FlowTotal {
			t.Fatalf("the upstream got %d of %d body bytes", n, h2FlowTotal)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request's end did not reach the upstream in 10 s")
	}
}

// TestH2NoStallRequestBody: a request body of several windows goes
// through the loops whole to an HTTP/2 upstream, whatever stream window
// the upstream gives and however it credits it (every frame, or at half
// the window as nghttp2 does), under the client's credit from the proxy.
func TestH2NoStallRequestBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window uint32 // the upstream's SETTINGS_INITIAL_WINDOW_SIZE
		half   bool   // the upstream credits at half its windows
	}{
		{"window 1000, every frame", 1000, false},
		{"window 1000, at half", 1000, true},
		{"window 20000, at half", 20000, true},
		{"window 65535, at half", 65535, true},
		{"window 100000, at half", 100000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, accept := startH2Up(t)
			h := dialH2Raw(t, srv, http2.ClientPreface)
			h.headers(1, false, ":path", "/post")
			u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: tc.window})
			id := u.request().StreamID
			_ = u.c.SetDeadline(time.Time{})
			_ = h.c.SetDeadline(time.Time{})
			avail := uint32(0)
			if tc.half {
				avail = tc.window
			}
			got := readBody(u, id, avail)
			w := newWindows()
			creditFrom(h.fr, w)
			sent := sendUnderCredit(h.fr, 1, w, h2FlowTotal, 3*time.Second)
			if sent != h2FlowTotal {
				t.Fatalf("the client sent %d of %d body bytes: no credit for 3 s (client windows %d/%d)", sent, h2FlowTotal,
					w.conn.Load(), w.stream.Load())
			}
			_ = h.fr.WriteData(1, true, nil)
			wholeBody(t, got)
		})
	}
}

// TestH2NoStallPaddedRequestBody: a request body sent in padded DATA
// frames goes whole to an HTTP/2 upstream: the padding, which takes the
// client's windows as the data does, is credited back too, though it
// never leaves for the upstream.
func TestH2NoStallPaddedRequestBody(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/post")
	u := accept()
	id := u.request().StreamID
	_ = u.c.SetDeadline(time.Time{})
	_ = h.c.SetDeadline(time.Time{})
	got := readBody(u, id, 0)
	w := newWindows()
	creditFrom(h.fr, w)
	pad := make([]byte, 255)
	chunk := bytes.Repeat([]byte("p"), 1000) // 307 frames: 78,592 bytes of padding, more than a window
	sent := 0
	last := time.Now()
	for sent < h2FlowTotal {
		n := min(len(chunk), h2FlowTotal-sent)
		if need := int64(n + 1 + len(pad)); w.conn.Load() < need || w.stream.Load() < need {
			if time.Since(last) > 3*time.Second {
				t.Fatalf("the client sent %d of %d body bytes (padded): no credit for 3 s (client windows %d/%d)", sent, h2FlowTotal,
					w.conn.Load(), w.stream.Load())
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		_ = h.fr.WriteDataPadded(1, false, chunk[:n], pad)
		w.conn.Add(-int64(n + 1 + len(pad)))
		w.stream.Add(-int64(n + 1 + len(pad)))
		sent += n
		last = time.Now()
	}
	_ = h.fr.WriteData(1, true, nil)
	wholeBody(t, got)
}

// noRouteTimeout is h2UpRouter with routes of no timeout: a test whose
// response may take longer than the default route timeout (15 s) on a
// loaded machine is not cut by it.
type noRouteTimeout struct{ h2UpRouter }

func (r noRouteTimeout) RouteH2(h proxyroute.Head) Target {
	t := r.h2UpRouter.RouteH2(h)
	t.NoTimeout = true
	return t
}

// TestH2NoStallResponse: a response of several windows reaches a client
// whole through the loops from an HTTP/2 upstream sending under the
// proxy's credit, whatever window the client gives and however it
// credits it. The route has no timeout, and the client's writes and the
// upstream's wait for credit none shorter than the test's: a byte a
// frame, 70,000 frames took over 10 s on a loaded machine, the client's
// credit was refused past the connection's first deadline (a write error
// the test did not check), past 15 s the route timeout reset the stream
// (a frame it did not look at), and under the race detector the upstream
// gave up after 10 s without credit: each showed as a stall.
func TestH2NoStallResponse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window uint32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
		half   bool
	}{
		{"window 1, every frame", 1, false},
		{"window 1000, every frame", 1000, false},
		{"window 1000, at half", 1000, true},
		{"window 20000, at half", 20000, true},
		{"window 65535, at half", 65535, true},
		{"window 100000, at half", 100000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := h2FlowTotal
			if tc.window == 1 {
				total = 70000 // a byte a frame, past a window
			}
			srv, accept := startH2Up(t, func(c *Config) { c.Router = noRouteTimeout{c.Router.(h2UpRouter)} })
			h := dialH2Raw(t, srv, http2.ClientPreface)
			_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: tc.window})
			h.headers(1, true)
			u := accept()
			id := u.request().StreamID
			_ = u.c.SetDeadline(time.Time{})
			u.headers(id, false, ":status", "200")
			// (a window of 1 byte: half a window goes one byte a frame
			// before the upstream is credited, over 10 s under the race
			// detector)
			sent := sendBody(u, id, total, time.Minute)
			avail := uint32(0)
			if tc.half {
				avail = tc.window
			}
			p := newPeerCredit(h.fr, avail)
			// dialH2Raw's deadline (10 s) is the writes' too: past it the
			// client's credit failed unseen, and a byte a frame takes that
			// long on a loaded machine (a minute under the race detector).
			_ = h.c.SetDeadline(time.Now().Add(2 * time.Minute))
			for {
				f, err := h.fr.ReadFrame()
				if err != nil {
					t.Fatalf("client: %v after %d of %d bytes (the upstream sent %d)", err, p.receivedTotal, total, <-sent)
				}
				if p.err != nil {
					t.Fatalf("client: crediting the proxy: %v after %d of %d bytes", p.err, p.receivedTotal, total)
				}
				switch f := f.(type) {
				case *http2.RSTStreamFrame, *http2.GoAwayFrame:
					t.Fatalf("client: %v after %d of %d bytes", f, p.receivedTotal, total)
				case *http2.DataFrame:
					if f.StreamID == 1 {
						p.data(f)
					}
				}
				if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 && d.StreamEnded() {
					break
				}
			}
			if p.receivedTotal != total {
				t.Fatalf("client got %d of %d bytes", p.receivedTotal, total)
			}
		})
	}
}

// TestH2NoStallManyStreams: streams that each move a little, together
// more than a connection window, all complete: the connection windows
// (the client's toward the proxy, the upstream's toward it) are credited
// whatever each stream holds.
func TestH2NoStallManyStreams(t *testing.T) {
	const streams, each = 4, 300000 // 1,200,000 bytes: over the connection window (1 MiB here), under h2StreamRefresh a stream (the test router allows 4)
	srv, accept := startH2Up(t, func(cfg *Config) {
		cfg.Router = windowsRouter{cfg.Router.(h2UpRouter), proxyroute.H2Windows{Stream: 1 << 20, Conn: 1 << 20}}
	})
	h := dialH2Raw(t, srv, http2.ClientPreface)
	var u *rawUp
	ids := map[uint32]uint32{} // upstream's stream -> client's
	for i := range streams {
		cid := uint32(2*i + 1)
		h.headers(cid, false, ":path", "/post")
		if u == nil {
			u = accept()
		}
		ids[u.request().StreamID] = cid
	}
	_ = u.c.SetDeadline(time.Time{})
	_ = h.c.SetDeadline(time.Time{})
	// Request bodies: the upstream credits every frame; the client sends
	// each stream's body once the connection window lets it.
	var connWin atomic.Int64
	connWin.Store(65535)
	upGot := make(chan map[uint32]int, 1)
	go func() { // ends once every stream's body arrived or the connection closes (Cleanup)
		got := map[uint32]int{}
		ended := 0
		p := newPeerCredit(u.fr, 0)
		for {
			f, err := u.fr.ReadFrame()
			if err != nil {
				upGot <- got
				return
			}
			if d, ok := f.(*http2.DataFrame); ok {
				p.data(d)
				got[d.StreamID] += len(d.Data())
				if d.StreamEnded() {
					if ended++; ended == streams {
						upGot <- got
						return
					}
				}
			}
		}
	}()
	// The client's frames: its connection window credited, then (once
	// the bodies went: the client writes nothing else meanwhile) the
	// responses, every frame credited.
	type result struct {
		got   map[uint32]int
		ended int
		err   error
	}
	clientGot := make(chan result, 1)
	go func() { // ends once every response ended, or when the connection closes (Cleanup)
		r := result{got: map[uint32]int{}}
		p := newPeerCredit(h.fr, 0)
		for r.ended < streams {
			f, err := h.fr.ReadFrame()
			if err != nil {
				r.err = err
				break
			}
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connWin.Add(int64(f.Increment))
				}
			case *http2.DataFrame:
				p.data(f)
				r.got[f.StreamID] += len(f.Data())
				if f.StreamEnded() {
					r.ended++
				}
			}
		}
		clientGot <- r
	}()
	body := bytes.Repeat([]byte("m"), each)
	for i := range streams {
		deadline := time.Now().Add(5 * time.Second)
		for connWin.Load() < each {
			if time.Now().After(deadline) {
				t.Fatalf("stream %d: the client's connection window stayed at %d for 5 s", 2*i+1, connWin.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
		connWin.Add(-each)
		writeFrames(h.fr, uint32(2*i+1), body, false)
	}
	for i := range streams {
		_ = h.fr.WriteData(uint32(2*i+1), true, nil)
	}
	select {
	case got := <-upGot:
		for uid, n := range got {
			if n != each {
				t.Errorf("upstream stream %d (client's %d): %d body bytes, want %d", uid, ids[uid], n, each)
			}
		}
		if len(got) != streams {
			t.Fatalf("the upstream got bodies on %d streams, want %d", len(got), streams)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request bodies did not all reach the upstream in 10 s")
	}
	// Responses: each stream's under the upstream connection's window the
	// proxy credits; the client credits every frame.
	var upConn atomic.Int64
	upConn.Store(65535 + u.connCredit) // the proxy's first WINDOW_UPDATE came before the requests (u.request)
	go func() {                        // ends when the upstream's connection closes (Cleanup)
		for {
			f, err := u.fr.ReadFrame()
			if err != nil {
				return
			}
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
				upConn.Add(int64(wu.Increment))
			}
		}
	}()
	upSent := make(chan error, 1)
	go func() { // ends when every response went or no credit came for 5 s
		for uid := range ids {
			u.headers(uid, false, ":status", "200")
			deadline := time.Now().Add(5 * time.Second)
			for upConn.Load() < each {
				if time.Now().After(deadline) {
					upSent <- fmt.Errorf("upstream stream %d: its connection window stayed at %d for 5 s", uid, upConn.Load())
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			upConn.Add(-each)
			writeFrames(u.fr, uid, body, true)
		}
		upSent <- nil
	}()
	var r result
	select {
	case r = <-clientGot:
	case <-time.After(10 * time.Second):
		r.err = fmt.Errorf("not all within 10 s")
	}
	if r.err != nil || r.ended != streams {
		select {
		case e := <-upSent:
			t.Fatalf("client: %v, %d responses ended; the upstream: %v", r.err, r.ended, e)
		default:
			t.Fatalf("client: %v, %d responses ended", r.err, r.ended)
		}
	}
	for cid, n := range r.got {
		if n != each {
			t.Errorf("client stream %d: %d bytes, want %d", cid, n, each)
		}
	}
}

// writeFrames writes b on stream id as DATA frames of 16,384 bytes at
// most, END_STREAM with the last when end.
func writeFrames(fr *http2.Framer, id uint32, b []byte, end bool) {
	for len(b) > 0 {
		n := min(len(b), 16384)
		_ = fr.WriteData(id, end && n == len(b), b[:n])
		b = b[n:]
	}
}

// TestH1NoStallH2Upstream: an HTTP/1.1 client's request body and
// response of several windows go whole through the loops to and from an
// HTTP/2 upstream that credits at half its windows.
func TestH1NoStallH2Upstream(t *testing.T) {
	c, accept := startH1Up(t)
	go func() { // ends when the request is written or the connection closes (Cleanup)
		w := bufio.NewWriter(c)
		fmt.Fprintf(w, "PUT /put HTTP/1.1\r\nHost: svc.local\r\nContent-Length: %d\r\n\r\n", h2FlowTotal)
		_, _ = w.WriteString(strings.Repeat("q", h2FlowTotal))
		_ = w.Flush()
	}()
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 20000})
	id := u.request().StreamID
	_ = u.c.SetDeadline(time.Now().Add(20 * time.Second))
	p := newPeerCredit(u.fr, 20000)
	u.until(func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok && d.StreamID == id {
			p.data(d)
		}
		return ok && d.StreamEnded()
	})
	if p.receivedTotal != h2FlowTotal {
		t.Fatalf("the upstream got %d of %d body bytes", p.receivedTotal, h2FlowTotal)
	}
	u.headers(id, false, ":status", "200", "content-length", fmt.Sprint(h2FlowTotal))
	sent := sendBody(u, id, h2FlowTotal, 3*time.Second)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != h2FlowTotal {
		t.Fatalf("client got %d of %d bytes: %v (the upstream sent %d)", n, h2FlowTotal, err, <-sent)
	}
}
