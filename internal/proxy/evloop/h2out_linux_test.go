package evloop

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2ParallelResponsesReuseBuffers: four streams at once on one h2c
// connection, each a large response from an HTTP/1.1 upstream, with the
// client reading at once or only after its socket filled (the output
// then waits up to h2MaxOut), in plaintext and over TLS: every byte
// arrives in order, and once the free lists hold what one round needs,
// the next rounds make (almost) no buffer. Appending an iteration's frames to one buffer grew it past
// bigBufSize, four full DATA frames an iteration, and a grown buffer is
// not pooled: the loop made a buffer of bigBufSize again nearly every
// iteration.
func TestH2ParallelResponsesReuseBuffers(t *testing.T) {
	const size = 1 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i % 251) // a byte out of place shows
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(body)
	}))
	t.Cleanup(up.Close)
	for _, tc := range []struct {
		name string
		late time.Duration
		tls  bool
	}{{"client reads at once", 0, false}, {"client reads late", 100 * time.Millisecond, false},
		{"over TLS, client reads late", 100 * time.Millisecond, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var h *h2Raw
			var srv *Server
			if !tc.tls {
				srv = startH2To(t, hostOf(up))
				h = dialH2Raw(t, srv, http2.ClientPreface)
			} else {
				server, client := h2TLSServer(t)
				srv = startH2To(t, hostOf(up), func(c *Config) { c.TLS = server })
				h = dialH2TLS(t, srv, client)
			}
			_ = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			_ = h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
			id := uint32(1)
			round := func(r int) {
				t.Helper()
				got := map[uint32][]byte{}
				for range 4 { // the router's SETTINGS_MAX_CONCURRENT_STREAMS
					h.headers(id, true)
					got[id] = nil
					id += 2
				}
				time.Sleep(tc.late)
				_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				for ended := 0; ended < 4; {
					f := h.until(func(f http2.Frame) bool {
						_, data := f.(*http2.DataFrame)
						_, rst := f.(*http2.RSTStreamFrame)
						return data || rst || isGoAway(f)
					})
					d, ok := f.(*http2.DataFrame)
					if !ok {
						t.Fatalf("round %d: %v before the four responses' ends", r, f)
					}
					got[d.StreamID] = append(got[d.StreamID], d.Data()...)
					if d.StreamEnded() {
						ended++
					}
				}
				for sid, b := range got {
					if !bytes.Equal(b, body) {
						t.Fatalf("round %d, stream %d: %d bytes, not the upstream's %d", r, sid, len(b), size)
					}
				}
			}
			round(0) // the free lists fill
			made0 := srv.bufsMade.Load()
			const n = 10
			for r := 1; r <= n; r++ {
				round(r)
			}
			made := srv.bufsMade.Load() - made0
			t.Logf("%d buffers made over %d rounds of 4 responses of %d bytes", made, n, size)
			// A round may hold more at once than the first did (its
			// client read later, and the output grew to more buffers):
			// those are made, up to 10 under stress. Fewer than one a
			// response; about 16 a response were made before.
			if made >= 4*n {
				t.Errorf("the loop made %d buffers over %d more rounds of 4 responses; want those of the first reused (fewer than one a response)", made, n)
			}
		})
	}
}

// TestH2OutChain: a connection's output past one buffer of bigBufSize
// goes on in more such buffers from the free list, filled to their
// capacity, none grown; writing moves it on buffer by buffer, each given
// back once written, and the connection's end gives back the rest.
func TestH2OutChain(t *testing.T) {
	var l loop
	c := &h2conn{d: &down{}}
	c.d.h2c, c.out = c, h2OutTo(&c.d.out, &c.d.outOff)
	var want []byte
	frame := make([]byte, 9+h2MaxFrame)
	for i := range 20 { // 20 full DATA frames, about 320 KiB
		for j := range frame {
			frame[j] = byte(i*7 + j)
		}
		l.h2OutAdd(&c.out, frame)
		want = append(want, frame...)
	}
	all := bytes.Clone(c.d.out)
	for _, b := range c.out.more {
		if cap(b) != bigBufSize {
			t.Fatalf("a chained buffer of %d bytes; want %d", cap(b), bigBufSize)
		}
		all = append(all, b...)
	}
	if cap(c.d.out) != bigBufSize || !bytes.Equal(all, want) || c.out.len() != len(want) {
		t.Fatalf("first buffer %d, %d bytes chained (%d counted) in %d buffers; want %d bytes in order, in buffers of %d",
			cap(c.d.out), len(all), c.out.len(), 1+len(c.out.more), len(want), bigBufSize)
	}
	if len(l.bufs) != 1 {
		t.Fatalf("%d free buffers of bufSize; want the one the first frame outgrew", len(l.bufs))
	}
	held := 1 + len(c.out.more)
	l.h2Wrote(&c.out, bigBufSize+100) // the first buffer and 100 bytes of the second
	if got := c.d.out[c.d.outOff:]; len(l.bigs) != 1 || len(c.out.more) != held-2 || !bytes.Equal(got, want[bigBufSize+100:2*bigBufSize]) {
		t.Fatalf("after %d bytes written: %d free, %d chained; want the first back, the second from byte 100", bigBufSize+100, len(l.bigs), len(c.out.more))
	}
	if c.out.len() != len(want)-bigBufSize-100 {
		t.Fatalf("%d bytes left; want %d", c.out.len(), len(want)-bigBufSize-100)
	}
	l.h2OutRelease(&c.out)
	l.putBuf(c.d.out)
	if len(l.bigs) != held || c.out.len() != len(c.d.out)-c.d.outOff || len(c.out.more) != 0 {
		t.Fatalf("%d free buffers of bigBufSize after the end; want all %d back", len(l.bigs), held)
	}
}
