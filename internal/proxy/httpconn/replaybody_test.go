package httpconn

import (
	"bytes"
	"io"
	"testing"
)

// TestReplayBodyAnswered: once the response began (answered), the body
// is no longer kept for a retry, and an attempt still replaying what was
// kept gets the rest of it, then the source's, each byte once.
func TestReplayBodyAnswered(t *testing.T) {
	src := make([]byte, 1000)
	for i := range src {
		src[i] = byte(i)
	}
	b := &replayBody{src: io.NopCloser(bytes.NewReader(src))}
	first := b.next()
	p := make([]byte, 100)
	if n, _ := io.ReadFull(first, p); n != 100 {
		t.Fatalf("first attempt read %d", n)
	}
	_ = first.Close()
	second := b.next() // a retry: replays the 100 kept, then reads on
	if n, _ := io.ReadFull(second, p[:30]); n != 30 || !bytes.Equal(p[:30], src[:30]) {
		t.Fatalf("second attempt replayed %d bytes %v", n, p[:n])
	}
	b.answered()
	rest, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(rest, src[30:]) {
		t.Fatalf("after the answer the attempt read %d bytes (err %v), want the %d from byte 30 on, each once", len(rest), err, len(src)-30)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf != nil {
		t.Errorf("the body kept %d bytes after the response began; want none", len(b.buf))
	}
}
