package evloop

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestH2SendDataFromChainGrowsOutOnce: a DATA frame sent from a kept
// chain's chunks (h2uSendData) as large as the upstream's windows and
// SETTINGS_MAX_FRAME_SIZE let it (Go's server allows 1 MiB frames) is
// written to the connection's output in pieces, and that output must
// grow once for it, as it grew for the one write of a frame copied
// whole: grown piece by piece, append copied it again at each of its
// 1.25x steps, 2.7 MB allocated per 512 KiB h2c retry where main
// allocated 0.5 (BenchmarkRetryUpload/loops/h2c/retried). The frame's
// bytes are checked too: the header, then the chain's in order.
func TestH2SendDataFromChainGrowsOutOnce(t *testing.T) {
	l := &loop{}
	body := bytes.Repeat([]byte("0123456789abcdef"), 6*bufSize/16) // six chunks
	st := &h2stream{}
	st.replay.Append(l.chunks(), body)
	c := &h2up{u: &up{}}
	s := &h2ustream{c: c, id: 3, st: st}
	send := func() {
		s.replayAt = st.replay.Base()
		l.h2uSendData(s, true, len(body))
	}
	send()
	out := c.u.out
	if len(out) != 9+len(body) || !bytes.Equal(out[9:], body) {
		t.Fatalf("the frame holds %d bytes, want 9+%d, the chain's", len(out), len(body))
	}
	if n := int(out[0])<<16 | int(out[1])<<8 | int(out[2]); n != len(body) || out[3] != 0 || out[4] != 1 || binary.BigEndian.Uint32(out[5:9]) != 3 {
		t.Fatalf("frame header %x, want DATA of %d with END_STREAM on stream 3", out[:9], len(body))
	}
	for range 21 { // AllocsPerRun's runs start from a buffer of the free list, as a connection's first frame does
		l.putBuf(make([]byte, 0, bufSize))
	}
	allocs := testing.AllocsPerRun(20, func() {
		l.putBuf(c.u.out)
		c.u.out, c.u.outOff, c.dirty, l.h2updirty = nil, 0, false, l.h2updirty[:0]
		send()
	})
	// Once: one allocation, two under -race, where the zeroed room
	// slices.Grow appends is not elided; piece by piece it was five.
	want := 1.0
	if raceOn {
		want = 2
	}
	if allocs > want {
		t.Fatalf("a %d-byte DATA frame from the chain grew the connection's output in %v allocations, want %v", len(body), allocs, want)
	}
}
