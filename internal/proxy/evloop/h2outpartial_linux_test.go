package evloop

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"golang.org/x/sys/unix"
)

// TestH2OutPartialWrites: a connection's output chained over several
// buffers, written to a socket that takes a few KiB at a time (writev
// cut anywhere, within a buffer or across two, and EAGAIN mid-list),
// arrives whole, every byte once and in order, while frames of every
// size are appended between the writes; every buffer comes back to the
// free list once written, none twice.
func TestH2OutPartialWrites(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	var l loop
	c := &h2conn{d: &down{fd: fds[0]}}
	c.d.h2c, c.out = c, h2OutTo(&c.d.out, &c.d.outOff)
	d := c.d
	rng := rand.New(rand.NewSource(1))
	var want, got []byte
	sent := 0 // bytes the socket took
	full, across := 0, 0
	rb := make([]byte, 70000)
	read := func(most int) {
		for most > 0 {
			n, err := unix.Read(fds[1], rb[:min(most, len(rb))])
			if n <= 0 || err != nil {
				return
			}
			got = append(got, rb[:n]...)
			most -= n
		}
	}
	flush := func() { // flushDown's loop
		for d.outOff < len(d.out) {
			if len(c.out.more) > 0 && d.outOff >= len(d.out) {
				t.Fatalf("d.out written to its end with %d buffers chained", len(c.out.more))
			}
			n, err := l.h2OutWrite(&c.out, d.fd, nil)
			if errors.Is(err, unix.EAGAIN) {
				full++
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.out.more) > 0 && n > len(d.out)-d.outOff && n < c.out.len() {
				across++ // cut in a buffer past the first
			}
			l.h2Wrote(&c.out, n)
			sent += n
		}
		if len(c.out.more) != 0 || c.out.moreN != 0 {
			t.Fatalf("all written, %d buffers (%d bytes) still chained", len(c.out.more), c.out.moreN)
		}
		if d.out != nil {
			l.putBuf(d.out)
			d.out, d.outOff = nil, 0
		}
	}
	for range 100 {
		for range rng.Intn(12) {
			f := make([]byte, 1+rng.Intn(9+h2MaxFrame))
			rng.Read(f)
			l.h2OutAdd(&c.out, f)
			want = append(want, f...)
		}
		if c.out.len() != len(want)-sent {
			t.Fatalf("len %d; want %d", c.out.len(), len(want)-sent)
		}
		flush()
		read(rng.Intn(3 * bigBufSize))
	}
	for d.out != nil {
		flush()
		read(len(rb))
	}
	read(len(rb))
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%d bytes read, first difference at %d; want the %d written, in order", len(got), i, len(want))
	}
	if full == 0 || across == 0 {
		t.Fatalf("%d writes cut across buffers, %d EAGAINs; want some of each", across, full)
	}
	t.Logf("%d bytes; %d writes cut past the first buffer, %d EAGAINs", len(want), across, full)
	seen := map[*byte]bool{}
	for _, b := range append(l.bigs, l.bufs...) {
		p := &b[:1][0]
		if seen[p] {
			t.Fatal("a buffer twice in the free lists")
		}
		seen[p] = true
	}
}
