package evloop

import (
	"fmt"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestH2ClientTrailersHeldWhileBlocked: a client's trailers that arrive
// while the upstream's window holds the request body back wait on the
// stream (h2ustream.trailers), and reach the upstream intact once it
// opens the window, though the client connection's decoder, which lends
// each block's fields only until its next frame (h2Heads), went on to
// the next frames meanwhile: h2uTrailers keeps a copy.
func TestH2ClientTrailersHeldWhileBlocked(t *testing.T) {
	srv, accept := startH2Up(t)
	h := dialH2Raw(t, srv, http2.ClientPreface)
	h.headers(1, false, ":path", "/upload", "content-type", "application/grpc")
	u := accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	id := u.request().StreamID
	// The proxy took the upstream's window of 0 before the body comes.
	if u.until(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() }) == nil {
		t.Fatal("upstream: closed before the proxy acknowledged its settings")
	}
	body := []byte("\x00\x00\x00\x00\x03abc")
	_ = h.fr.WriteData(1, false, body)
	h.hbuf.Reset()
	want := []hpack.HeaderField{{Name: "x-checksum", Value: "held back"}, {Name: "x-count", Value: "3"}}
	for _, f := range want {
		_ = h.enc.WriteField(f)
	}
	_ = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	// The next request's HEADERS, decoded after the trailers; its PING's
	// answer says the proxy read both.
	h.headers(3, true, ":path", "/next", "x-next", "decoded after")
	_ = h.fr.WritePing(false, [8]byte{7})
	if h.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }) == nil {
		t.Fatal("client: closed before the PING's answer")
	}
	_ = u.fr.WriteWindowUpdate(id, uint32(len(body)))
	got, sent := 0, 0
	f := u.until(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == id {
			sent += len(d.Data())
		}
		if hf, ok := f.(*http2.MetaHeadersFrame); ok && hf.StreamID != id {
			got++ // stream 3's request
		}
		hf, ok := f.(*http2.MetaHeadersFrame)
		return ok && hf.StreamID == id && hf.StreamEnded()
	})
	tr, _ := f.(*http2.MetaHeadersFrame)
	if tr == nil || sent != len(body) {
		t.Fatalf("upstream stream %d: %d bytes of body (%d other requests), then %v", id, sent, got, f)
	}
	if fmt.Sprint(tr.Fields) != fmt.Sprint(want) {
		t.Fatalf("trailers %v, want %v", tr.Fields, want)
	}
}
