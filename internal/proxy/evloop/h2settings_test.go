package evloop

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestWriteH2HeadersLetsLargeBlockGo: a header block is written whole,
// over as many frames as the peer's frame size needs, and the buffer it
// was encoded into keeps no more than keptBlockCap afterwards, so that a
// connection that once sent a large head (a response's may reach 64 KiB)
// does not hold its buffer for its life; a small block's buffer is kept
// for the next one. The encoder writing through a pointer to the buffer
// still works after it was let go.
func TestWriteH2HeadersLetsLargeBlockGo(t *testing.T) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	big := strings.Repeat("~", 1000)
	for i := range 56 {
		_ = enc.WriteField(hpack.HeaderField{Name: "x-big-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: big})
	}
	sent := append([]byte(nil), hb.Bytes()...)
	writeH2Headers(fr, 16384, 1, &hb, true)
	if hb.Len() != 0 || hb.Cap() > keptBlockCap {
		t.Errorf("after a %d-byte block the buffer holds %d bytes in %d; want 0 in at most %d", len(sent), hb.Len(), hb.Cap(), keptBlockCap)
	}
	if got := readBlock(t, &wire); !bytes.Equal(got, sent) {
		t.Errorf("the frames carried %d bytes, not the %d-byte block", len(got), len(sent))
	}

	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	small := append([]byte(nil), hb.Bytes()...)
	if len(small) == 0 {
		t.Fatal("the encoder wrote nothing into the buffer after it was let go")
	}
	writeH2Headers(fr, 16384, 3, &hb, false)
	if got := readBlock(t, &wire); !bytes.Equal(got, small) {
		t.Errorf("the second block was %x, want %x", got, small)
	}
	if hb.Cap() == 0 {
		t.Error("a small block's buffer was let go; want it kept for the next")
	}
}

// readBlock reads one header block's frames off wire.
func readBlock(t *testing.T, wire io.Reader) []byte {
	t.Helper()
	fr := http2.NewFramer(nil, wire)
	var block []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				return block
			}
		case *http2.ContinuationFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				return block
			}
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
}
