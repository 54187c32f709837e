package httpconn

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/weftmesh/weft/internal/proxy/bodychain"
)

// TestReplayBodyReaderBehindFront: a reader neither current nor done
// whose position is before what is kept (no transport reads so today)
// gets bodychain.ErrDropped, not bytes of another place in the body nor
// a panic, while the current attempt reads on from where it was.
func TestReplayBodyReaderBehindFront(t *testing.T) {
	src := testBody(3000)
	b := &replayBody{src: io.NopCloser(bytes.NewReader(src))}
	first := b.next()
	p := make([]byte, 100)
	if n, _ := io.ReadFull(first, p); n != 100 {
		t.Fatalf("first attempt read %d", n)
	}
	second := b.next() // first is left neither closed nor given up
	q := make([]byte, 1000)
	if n, _ := io.ReadFull(second, q); n != 1000 || !bytes.Equal(q, src[:1000]) {
		t.Fatalf("second attempt read %d, or wrong bytes", n)
	}
	b.answered() // kept: nothing before 1000
	n, err := first.Read(p)
	if !errors.Is(err, bodychain.ErrDropped) || n != 0 {
		t.Fatalf("a reader at 100 behind the front at 1000 read %d, %v; want 0, ErrDropped", n, err)
	}
	rest, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(rest, src[1000:]) {
		t.Fatalf("the current attempt read on %d bytes (%v), want the body's last %d", len(rest), err, len(src)-1000)
	}
}
