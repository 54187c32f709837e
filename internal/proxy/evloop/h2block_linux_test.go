package evloop

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bigListRouter is h2TestRouter advertising the header list size weft
// proxy does by default (60 KiB and 32 bytes for each of 100 fields).
type bigListRouter struct{ h2TestRouter }

func (r bigListRouter) H2() (H2Settings, bool) {
	s, ok := r.h2TestRouter.H2()
	s.MaxHeaderList = 60<<10 + 32*100
	return s, ok
}

// TestH2BlockBufferNotKept: a connection whose read buffer grew to hold a
// large header block (h2conn.blockMax) holds it no longer once the block
// is read, nor the block's fields once its stream has them: neither while
// it idles, nor while a frame of which only a part came waits for the
// rest. It kept them for its life (the frame reader still pointed into
// the buffer, the decoder's last frame at the fields, and a part of a
// frame kept the buffer in use), so that a client could have over 128 KiB
// held on each of its connections by sending one request with a 60 KiB
// header list in small frames.
func TestH2BlockBufferNotKept(t *testing.T) {
	var fields []hpack.HeaderField
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		fields = append(fields, hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range 90 { // 61,062 bytes of names and values, within the limits
		fields = append(fields, hpack.HeaderField{Name: fmt.Sprintf("x-big-%02d", i), Value: strings.Repeat("~", 670)})
	}
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial frame %v", partial), func(t *testing.T) {
			srv := startH2(t, func(c *Config) { c.Router = bigListRouter{c.Router.(h2TestRouter)} })
			const conns = 32
			heap := func() uint64 {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heap()
			var clients []*h2Raw
			for range conns {
				h := dialH2Raw(t, srv, http2.ClientPreface)
				for _, f := range fields {
					_ = h.enc.WriteField(f)
				}
				block := h.hbuf.Bytes()
				// Fragments of 64 bytes: the block and its frame headers
				// are over 64 KiB, which the read buffer grows past. The
				// frames go in one write, with the start of a PING after
				// them when partial, so that the last read holds both.
				var wire bytes.Buffer
				fr := http2.NewFramer(&wire, nil)
				const frag = 64
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:frag], EndStream: true})
				for rest := block[frag:]; len(rest) > 0; {
					n := min(frag, len(rest))
					_ = fr.WriteContinuation(1, n == len(rest), rest[:n])
					rest = rest[n:]
				}
				if partial {
					wire.Write([]byte{0, 0, 8, byte(http2.FramePing), 0}) // 5 of a PING's 17 bytes
				}
				if _, err := h.c.Write(wire.Bytes()); err != nil {
					t.Fatal(err)
				}
				h.hbuf = bytes.Buffer{}
				f := h.until(func(f http2.Frame) bool {
					return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
				})
				if f == nil {
					t.Fatal("the connection ended before the answer")
				}
				clients = append(clients, h)
			}
			// Each partial frame was read with its block, before the answer.
			grown := int64(heap()) - int64(before)
			if per := grown / conns; per > 48<<10 {
				t.Errorf("%d bytes held for each connection after its request, want under 48 KiB", per)
			}
			for _, c := range clients {
				_ = c.c.Close()
			}
		})
	}
}

// TestH2UpstreamBlockBufferNotKept: an upstream HTTP/2 connection whose
// read buffer grew to hold a large response header block (h2UpBlockMax)
// holds it no longer once the block is read, nor the block's fields,
// while it waits in the pool for the next stream: neither when the read
// ended on a frame's end nor when it ended within a frame. It kept them
// for its life (the frame reader still pointed into the buffer, the
// decoder's last frame and reused fields at the fields, and a part of a
// frame kept the buffer in use), so that an upstream could have over 110
// KiB held on each of a loop's connections to it (the 64 KiB buffer and
// the fields) by answering once with a 56 KiB header list in small
// frames.
func TestH2UpstreamBlockBufferNotKept(t *testing.T) {
	// As TestH2ResponseBlockInSmallFramesSamePaths's: 56 fields of 1,008
	// bytes, each new to HPACK's table and sent as it is. The block ends
	// the stream, so that it is the last frame the connection read.
	big := []string{":status", "200", "content-length", "0"}
	for i := range 56 {
		big = append(big, fmt.Sprintf("x-big-%02d", i), strings.Repeat("~", 1000))
	}
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial frame %v", partial), func(t *testing.T) {
			srv, accept := startH2Up(t, func(c *Config) {
				c.Router = h1UpRouter{c.Router.(h2UpRouter)}
				c.AcceptHTTP10 = true // served by the loops: no HandOff
			})
			// Each upstream takes one stream at a time, so that each client's
			// request, held unanswered, opens a connection of its own.
			const conns = 12 // within h2UpMaxConns
			var clients []*bufio.Reader
			var ups []*rawUp
			var ids []uint32
			for range conns {
				c := dial(t, srv.Addr())
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				u := accept(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
				ids = append(ids, u.request().StreamID)
				// The proxy has applied the limit before the next request.
				if u.until(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() }) == nil {
					t.Fatal("upstream: closed before the SETTINGS ACK")
				}
				clients, ups = append(clients, bufio.NewReader(c)), append(ups, u)
			}
			heap := func() uint64 {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heap()
			for i, u := range ups {
				for j := 0; j+1 < len(big); j += 2 {
					_ = u.enc.WriteField(hpack.HeaderField{Name: big[j], Value: big[j+1]})
				}
				block := u.hbuf.Bytes()
				// Fragments of 64 bytes: the block and its frame headers
				// are over 48 KiB, which the read buffer grows past (to 64
				// KiB). The frames go in one write, with the start of a
				// PING after them when partial, so that the last read holds
				// both.
				var wire bytes.Buffer
				fr := http2.NewFramer(&wire, nil)
				const frag = 64
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: ids[i], BlockFragment: block[:frag], EndStream: true})
				for rest := block[frag:]; len(rest) > 0; {
					n := min(frag, len(rest))
					_ = fr.WriteContinuation(ids[i], n == len(rest), rest[:n])
					rest = rest[n:]
				}
				if partial {
					wire.Write([]byte{0, 0, 8, byte(http2.FramePing), 0}) // 5 of a PING's 17 bytes
				}
				if _, err := u.c.Write(wire.Bytes()); err != nil {
					t.Fatal(err)
				}
				u.hbuf = bytes.Buffer{}
				resp, err := http.ReadResponse(clients[i], nil)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || len(body) != 0 || len(resp.Header) < 56 {
					t.Fatalf("client %d got %d %q (%v), %d header fields", i, resp.StatusCode, body, err, len(resp.Header))
				}
			}
			// Each partial frame was read with its block, before the
			// response reached the client.
			grown := int64(heap()) - int64(before)
			t.Logf("%d bytes held for each upstream connection after its response", grown/conns)
			if per := grown / conns; per > 32<<10 {
				t.Errorf("%d bytes held for each upstream connection after its response, want under 32 KiB", per)
			}
		})
	}
}
