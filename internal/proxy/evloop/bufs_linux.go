package evloop

// The loop's free lists of buffers (bufSize, bigBufSize: loop_linux.go).

// getBuf returns an empty buffer of bufSize, from the free list when it
// has one.
func (l *loop) getBuf() []byte { return l.takeBuf(&l.bufs, &l.bufsLow, bufSize) }

// takeBuf returns an empty buffer of size from the free list *free,
// noting its lowest length in *low (trimBufs), or a new one.
func (l *loop) takeBuf(free *[][]byte, low *int, size int) []byte {
	n := len(*free)
	if n == 0 {
		*low = 0
		if l.srv != nil { // a test's bare loop has none
			l.srv.bufsMade.Add(1)
		}
		return make([]byte, 0, size)
	}
	b := (*free)[n-1]
	(*free)[n-1] = nil
	*free = (*free)[:n-1]
	*low = min(*low, n-1)
	return b[:0]
}

// putBuf gives b back to its free list: buffers of bufSize and of
// bigBufSize are kept, up to their bounds; others are left to the
// collector.
func (l *loop) putBuf(b []byte) {
	switch {
	case cap(b) == bufSize && len(l.bufs) < maxFreeBufs:
		l.bufs = append(l.bufs, b[:0])
	case cap(b) == bigBufSize && len(l.bigs) < maxFreeBigBufs:
		l.bigs = append(l.bigs, b[:0])
	}
}

// growBuf returns a full read buffer b (len(b) == cap(b) < most) with
// its bytes in one twice as large, but no larger than most: what a
// connection's buffer may grow to while it waits for a head or a header
// block. b goes back to the free list, and one of bigBufSize comes from
// it.
func (l *loop) growBuf(b []byte, most int) []byte {
	var nb []byte
	if n := min(2*cap(b), most); n == bigBufSize {
		nb = l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize)[:len(b)]
	} else {
		nb = make([]byte, len(b), n)
	}
	copy(nb, b)
	l.putBuf(b)
	return nb
}

// appendBuf appends p to b, an output buffer: one of bufSize that p
// overflows is swapped for one of bigBufSize from the free list when
// that holds both (a full-size HTTP/2 DATA frame with a few others), and
// goes back to the list itself. Past bigBufSize, append grows it as it
// would (not kept: putBuf).
func (l *loop) appendBuf(b, p []byte) []byte {
	if need := len(b) + len(p); need > cap(b) && cap(b) == bufSize && need <= bigBufSize {
		nb := append(l.takeBuf(&l.bigs, &l.bigsLow, bigBufSize), b...)
		l.putBuf(b)
		return append(nb, p...)
	}
	return append(b, p...)
}

// trimBufs frees the free buffers no getBuf needed since the last
// trimBufs, of either size: a burst's buffers go within two calls, a
// steady load keeps the ones it cycles through. Only free buffers are
// dropped; those a connection holds are its own until it puts them back.
func (l *loop) trimBufs() {
	trimFree(&l.bufs, &l.bufsLow)
	trimFree(&l.bigs, &l.bigsLow)
}

// trimFree drops the free buffers of *free below its lowest length since
// the last call, *low, clearing their slots for the collector.
func trimFree(free *[][]byte, low *int) {
	keep := len(*free) - *low
	clear((*free)[keep:])
	*free = (*free)[:keep]
	*low = keep
}
