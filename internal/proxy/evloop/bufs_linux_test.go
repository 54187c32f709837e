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

// TestBigBufs: an output buffer of bufSize that a full-size HTTP/2 DATA
// frame overflows moves, bytes and all, to one of bigBufSize from the
// free list, and both go back to their lists to be reused; the grown
// ones are kept up to maxFreeBigBufs and freed by trimBufs as the others.
// A buffer grown past bigBufSize is not kept.
func TestBigBufs(t *testing.T) {
	var l loop
	frame := bytes.Repeat([]byte("f"), 9+h2MaxFrame)
	b := append(l.getBuf(), "SETTINGS"...)
	b = l.appendBuf(b, frame)
	if cap(b) != bigBufSize || !bytes.Equal(b, append([]byte("SETTINGS"), frame...)) {
		t.Fatalf("a full frame after 8 bytes: cap %d, %d bytes; want the bytes in one of %d", cap(b), len(b), bigBufSize)
	}
	if len(l.bufs) != 1 {
		t.Fatalf("%d free buffers of bufSize; want the one outgrown back", len(l.bufs))
	}
	l.putBuf(b)
	b2 := l.appendBuf(l.getBuf(), frame)
	if len(l.bigs) != 0 || &b2[0] != &b[0] {
		t.Fatal("a second full frame did not reuse the grown buffer")
	}
	b3 := l.growBuf(append(l.getBuf(), bytes.Repeat([]byte("r"), bufSize)...), h2UpMaxIn)
	if cap(b3) != bigBufSize {
		t.Fatalf("a read buffer grew to %d; want %d", cap(b3), bigBufSize)
	}
	l.putBuf(b2)
	l.putBuf(b3)
	if len(l.bigs) != 2 {
		t.Fatalf("%d free grown buffers; want 2", len(l.bigs))
	}
	l.putBuf(l.appendBuf(make([]byte, 0, bigBufSize), bytes.Repeat(frame, 3))) // past bigBufSize
	if len(l.bigs) != 2 {
		t.Fatalf("%d free grown buffers after one grown past %d; want it dropped", len(l.bigs), bigBufSize)
	}

	held := make([][]byte, 2*maxFreeBigBufs) // a burst
	for i := range held {
		held[i] = l.appendBuf(l.getBuf(), frame)
	}
	for _, b := range held {
		l.putBuf(b)
	}
	if len(l.bigs) != maxFreeBigBufs {
		t.Fatalf("%d free grown buffers after a burst; want the bound, %d", len(l.bigs), maxFreeBigBufs)
	}
	l.trimBufs()
	l.trimBufs()
	if len(l.bigs) != 0 || len(l.bufs) != 0 {
		t.Fatalf("%d grown and %d other free buffers after two idle intervals; want none", len(l.bigs), len(l.bufs))
	}
	for i, b := range l.bigs[:cap(l.bigs)] {
		if b != nil {
			t.Fatalf("slot %d past the free list still holds a grown buffer", i)
		}
	}
}
