package evloop

// What an idle HTTP/2 connection of a loop keeps. Its read and output
// buffers go back to the loop's free lists once read or written
// (h2Input, h2UpRead, flushDown, flushUp), but the state it keeps for its
// life holds memory of its own: x/net's Framer keeps the largest frame it
// wrote (its write buffer) and the largest it read (its read buffer,
// though the loops hand it frames already in their own buffer), 16 KiB
// each after a full-size DATA frame; the header block buffer the largest
// block encoded; and the streams map the room of the most streams open at
// once. At the loop's sweep (poolSweepEvery), a connection without a
// stream that wrote or read a frame over h2KeepFrame, or had more than
// h2KeepStreams streams, gets them anew: an idle connection holds about
// 3.5 KB (client) and 2.4 KB (upstream) of Go heap after any traffic, not
// 22 KB and 19 KB after one full-size response (TestH2IdleMemory). A busy
// connection pays one Framer (and map) per sweep at most, nothing per
// request.

import (
	"bytes"
	"io"

	"golang.org/x/net/http2"
)

const (
	// h2KeepFrame is the largest frame, header included, a connection's
	// Framer may have read or written and be kept as it is when idle.
	h2KeepFrame = 1<<10 + 9
	// h2KeepStreams is the most streams a connection may have had open
	// at once and keep its streams map when idle (8: one group of Go's
	// map).
	h2KeepStreams = 8
)

// newH2Framer returns a Framer writing to w and reading from r as the
// loops' HTTP/2 connections read: frames up to h2MaxFrame, header lists
// up to maxList, the frames read reused.
func newH2Framer(w io.Writer, r io.Reader, maxList uint32) *http2.Framer {
	fr := http2.NewFramer(w, r)
	fr.MaxHeaderListSize = maxList
	fr.SetMaxReadFrameSize(h2MaxFrame)
	fr.SetReuseFrames() // a DATA frame is relayed or copied before the next is read
	return fr
}

// lightenH2 renews what the loop's HTTP/2 connections without a stream
// keep past h2KeepFrame and h2KeepStreams.
func (l *loop) lightenH2() {
	for _, d := range l.downs {
		if c := d.h2c; c != nil && c.heavy && !d.closed && len(c.streams) == 0 {
			c.heavy = false
			c.fr = newH2Framer(c.wr, &c.rd, c.fr.MaxHeaderListSize)
			c.streams = map[uint32]*h2stream{}
			lightenBuffer(&c.hbuf)
		}
	}
	pool := func(p *clusterPool) {
		for _, u := range p.h2 {
			if c := u.h2; c.heavy && !u.closed && len(c.streams) == 0 {
				c.heavy = false
				c.fr = newH2Framer(h2upWriter{c, l}, &c.rd, h2UpMaxHeaderList)
				c.streams = map[uint32]*h2ustream{}
				lightenBuffer(&c.hbuf)
			}
		}
	}
	for i := range l.pools {
		pool(&l.pools[i])
	}
	for _, p := range l.hpools {
		pool(p)
	}
}

// lightenBuffer drops b's room when it grew past h2KeepFrame (the hpack
// encoder writes to it through a pointer, which stays valid).
func lightenBuffer(b *bytes.Buffer) {
	if b.Cap() > h2KeepFrame {
		*b = bytes.Buffer{}
	}
}
