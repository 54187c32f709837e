package evloop

import (
	"bytes"
	"testing"
)

// TestTrimBufs: the free buffers a whole interval did not need are freed
// (their slots cleared, so the collector can take them), a steady load
// keeps the ones it cycles through, and a buffer a connection holds is
// never touched.
func TestTrimBufs(t *testing.T) {
	var l loop
	free := func(want int, when string) {
		t.Helper()
		if len(l.bufs) != want {
			t.Fatalf("%s: %d free buffers, want %d", when, len(l.bufs), want)
		}
		for i, b := range l.bufs[len(l.bufs):cap(l.bufs)] {
			if b != nil {
				t.Fatalf("%s: slot %d past the free list still holds a buffer", when, len(l.bufs)+i)
			}
		}
	}
	cycle := func(n int) {
		held := make([][]byte, n)
		for i := range held {
			held[i] = l.getBuf()
		}
		for _, b := range held {
			l.putBuf(b)
		}
	}

	held := append(l.getBuf(), "a request in flight"...)
	cycle(8) // a burst
	l.trimBufs()
	free(8, "after the burst's interval")
	cycle(2) // steady load: two at a time
	l.trimBufs()
	free(2, "after an interval of steady load")
	cycle(2)
	l.trimBufs()
	free(2, "after another")
	l.trimBufs()
	free(0, "after an idle interval")
	other := append(l.getBuf(), "another"...)
	if !bytes.Equal(held, []byte("a request in flight")) || &held[0] == &other[0] {
		t.Fatalf("a held buffer changed across trims: %q", held)
	}
	l.putBuf(held)
	l.putBuf(other)
	free(2, "once both are back")
}

// TestGrowBuf: a read buffer grown for a head or a header block doubles
// up to the bound given and no further: an HTTP/2 upstream connection's
// to h2UpMaxIn, which holds the block h2UpBlockMax waits for and the
// whole frame past it (it doubled to 256 KiB, past the 144 KiB it was
// said to bound it to), and an HTTP/1.1 upstream's to a head's limit and
// a read more (it doubled to 128 KiB).
func TestGrowBuf(t *testing.T) {
	var l loop
	for _, most := range []int{h2UpMaxIn, maxHeadBytes + bufSize} {
		b := l.getBuf()
		var caps []int
		for cap(b) < most {
			b = append(b, bytes.Repeat([]byte("x"), cap(b)-len(b))...)
			b = l.growBuf(b, most)
			caps = append(caps, cap(b))
			if !bytes.Equal(b, bytes.Repeat([]byte("x"), len(b))) {
				t.Fatalf("growing to %d lost the bytes read", cap(b))
			}
		}
		if cap(b) != most {
			t.Errorf("grew to %v; want %d at most", caps, most)
		}
	}
	if h2UpMaxIn < h2UpBlockMax+9+h2MaxFrame {
		t.Errorf("h2UpMaxIn %d cannot hold a block of %d and the frame past it", h2UpMaxIn, h2UpBlockMax)
	}
}
