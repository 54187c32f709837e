package httpconn

import (
	"bytes"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/route"
)

// testBody is n bytes numbered by their place, so that a byte out of
// place or twice shows.
func testBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// giveUp takes a retry of b's current attempt (replayBody.decide, the
// cluster's budget free): false when the body is no longer kept.
func giveUp(b *replayBody) bool {
	return b.decide(0, 1, func() bool { return true }) == route.RetryGo
}

// kept is what b keeps now.
func kept(b *replayBody) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kept.Len()
}

// TestReplayBodyAnswered: once the response began (answered), the body
// is no longer kept for a retry, and an attempt still replaying what was
// kept gets the rest of it, then the source's, each byte once.
func TestReplayBodyAnswered(t *testing.T) {
	src := testBody(1000)
	b := &replayBody{src: io.NopCloser(bytes.NewReader(src))}
	first := b.next()
	p := make([]byte, 100)
	if n, _ := io.ReadFull(first, p); n != 100 {
		t.Fatalf("first attempt read %d", n)
	}
	if !giveUp(b) {
		t.Fatal("giveUp: the body is not kept")
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
	if n := kept(b); n != 0 {
		t.Errorf("the body kept %d bytes after the response began; want none", n)
	}
}

// TestReplayBodyAnsweredDuringRead: answered does not wait for a read of
// the source under way (the client's next bytes, which may never come
// before the response: a ping-pong stream), and what that read brings
// is passed on, not kept.
func TestReplayBodyAnsweredDuringRead(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	b := &replayBody{src: pr}
	r := b.next()
	type result struct {
		n   int
		err error
	}
	read := make(chan result, 1)
	p := make([]byte, 64)
	go func() { // ends when pw is written to or closed
		n, err := r.Read(p)
		read <- result{n, err}
	}()
	answered := make(chan struct{})
	go func() { // ends when answered returns
		b.answered()
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		_, _ = pw.Write([]byte("late"))
		t.Fatal("answered waited for the client's next body bytes (10 s)")
	}
	if _, err := pw.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	if got := <-read; got.err != nil || string(p[:got.n]) != "next" {
		t.Fatalf("the read under way got %q (err %v), want \"next\"", p[:got.n], got.err)
	}
	if n := kept(b); n != 0 {
		t.Errorf("the body kept %d bytes read after the response began; want none", n)
	}
}

// TestReplayBodyRetryDuringRead: an attempt given up on while its
// transport is still in a read of the source (its Close from another
// goroutine, as x/net's abortRequestBodyWrite does): the next attempt
// replays what was kept without waiting for that read, then gets what
// that read brings, then the rest, each byte once, in order.
func TestReplayBodyRetryDuringRead(t *testing.T) {
	src := testBody(300)
	pr, pw := io.Pipe()
	defer pw.Close()
	entered := &enteredReader{r: pr, entered: make(chan struct{}, 1)}
	b := &replayBody{src: io.NopCloser(entered)}
	first := b.next()
	go func() { _, _ = pw.Write(src[:100]) }() // ends once read
	p := make([]byte, 100)
	if n, err := io.ReadFull(first, p); n != 100 {
		t.Fatalf("first attempt read %d (%v)", n, err)
	}
	select {
	case <-entered.entered: // those reads'
	default:
	}
	inFlight := make(chan int, 1)
	go func() { // ends when pw is written to or closed
		n, _ := first.Read(make([]byte, 50))
		inFlight <- n
	}()
	// Until that read is in the source's Read: readMu held is not
	// enough, as the reader looks at what is kept once more after it
	// takes readMu, and a giveUp before that look ends its read with
	// nothing (seen under -race -count=3).
	select {
	case <-entered.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first attempt's further read did not reach its source (10 s)")
	}
	if !giveUp(b) {
		t.Fatal("giveUp: the body is not kept")
	}
	_ = first.Close()
	second := b.next()
	if n, err := io.ReadFull(second, p); n != 100 || !bytes.Equal(p, src[:100]) {
		t.Fatalf("second attempt replayed %d bytes (%v)", n, err)
	}
	go func() { // ends once read, or at pw.Close
		_, _ = pw.Write(src[100:150]) // to the read under way: 50 bytes at most
		_, _ = pw.Write(src[150:])
		_ = pw.Close()
	}()
	rest, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(rest, src[100:]) {
		t.Fatalf("second attempt read on %d bytes (err %v), want the %d from byte 100 on, each once", len(rest), err, len(src)-100)
	}
	if n := <-inFlight; n == 0 {
		t.Error("the first attempt's read under way got nothing")
	}
	if _, err := first.Read(p); err == nil {
		t.Error("the first attempt's reader read on after its Close")
	}
}

// TestReplayBodyRace runs the attempts' readers, Close, giveUp and
// answered against each other at random points (for -race): every
// attempt reads the body's bytes in order from its first, and once
// answered nothing is kept past what the last attempt has yet to take.
func TestReplayBodyRace(t *testing.T) {
	src := testBody(64 << 10)
	for i := range 200 {
		pr, pw := io.Pipe()
		b := &replayBody{src: pr}
		go func() { // ends at the body's end
			for off := 0; off < len(src); {
				n := min(1+rand.IntN(3000), len(src)-off)
				_, _ = pw.Write(src[off : off+n])
				off += n
			}
			_ = pw.Close()
		}()
		attempts := 1 + rand.IntN(3)
		for a := range attempts {
			r := b.next()
			if r == nil {
				t.Fatalf("run %d: attempt %d: the body is no longer kept", i, a)
			}
			last := a == attempts-1
			var wg sync.WaitGroup
			var got []byte
			var err error
			wg.Add(1)
			go func() { // ends at the body's end, or when the attempt is given up (Close)
				defer wg.Done()
				buf := make([]byte, 1+rand.IntN(4096))
				for {
					n, e := r.Read(buf)
					got = append(got, buf[:n]...)
					if e != nil {
						err = e
						return
					}
				}
			}()
			if !last {
				// Give it up at a random point, its read maybe under way.
				for range rand.IntN(20) {
					runtime.Gosched()
				}
				if !giveUp(b) {
					t.Fatalf("run %d: attempt %d: giveUp: the body is not kept", i, a)
				}
				_ = r.Close()
				wg.Wait()
			} else {
				for range rand.IntN(20) {
					runtime.Gosched()
				}
				b.answered()
				wg.Wait()
				_ = r.Close()
			}
			if !bytes.Equal(got, src[:len(got)]) {
				t.Fatalf("run %d: attempt %d read %d bytes not the body's first ones", i, a, len(got))
			}
			if last && (err != io.EOF || len(got) != len(src)) {
				t.Fatalf("run %d: the last attempt read %d bytes, then %v; want the %d, then EOF", i, len(got), err, len(src))
			}
			if err := b.waitPrevious(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if n := kept(b); n != 0 {
			t.Fatalf("run %d: %d bytes kept after the body was answered and read", i, n)
		}
	}
}
