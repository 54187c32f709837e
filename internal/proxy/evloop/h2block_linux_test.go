package evloop

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

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
