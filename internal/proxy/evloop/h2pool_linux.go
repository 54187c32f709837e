package evloop

// HTTP/2 streams are recycled by their loop. A client stream (its
// h2stream, with its request's down inside) and an upstream stream (its
// h2ustream) were 1,184 of the 1,876 bytes of garbage an h2c request
// left, and the garbage sets how often the collector runs. Recycled, a
// request leaves 692 bytes; at saturation the proxy ran 0.26 GC cycles
// per 1,000 requests instead of 0.82, and spent 16-20 % less CPU per
// request (docs/bench/proxy.md, "h2c: streams recycled").
//
// An ended stream goes on its loop's dead list. At the end of the loop's
// iteration, when no call in progress holds it, it is zeroed and kept for
// the next stream, unless something that outlives the iteration may still
// point to it; that one is left to the collector:
//   - an upstream stream still in its connection's blocked list (the
//     connection's socket was full, so the list was not walked);
//   - a client stream still in its connection's blocked list (the
//     connection closed in the iteration, so the flush did not walk it);
//   - a client stream in the timer heap, with an upstream exchange or
//     with an upstream stream. h2Done clears those three when a stream
//     ends, so these checks keep a later change from recycling a stream
//     still linked.
// Nothing else keeps a stream: the connections' stream maps drop it when
// it ends, an upstream stream drops its client stream's link to it
// (h2uDone), and the descriptor table holds connections only.

// maxFreeStreams bounds each free list, per loop: a loop reuses as many
// streams as it had in flight at once, and keeps no more than this many
// idle: 128 × 776 bytes of client streams (a 896-byte size class) and
// 128 × 368 of upstream ones (384), 160 KB at most.
const maxFreeStreams = 128

// recycleStreams is off in this package's tests, which poison ended
// streams instead (h2pool_linux_test.go).
var recycleStreams = true

// newH2Stream returns a zeroed client stream.
func (l *loop) newH2Stream() *h2stream {
	if n := len(l.freeST); n > 0 {
		st := l.freeST[n-1]
		l.freeST[n-1] = nil
		l.freeST = l.freeST[:n-1]
		return st
	}
	return new(h2stream)
}

// newH2UStream returns a zeroed upstream stream.
func (l *loop) newH2UStream() *h2ustream {
	if n := len(l.freeUS); n > 0 {
		s := l.freeUS[n-1]
		l.freeUS[n-1] = nil
		l.freeUS = l.freeUS[:n-1]
		return s
	}
	return new(h2ustream)
}

// recycleDead frees the streams that ended in this iteration (run's
// last step).
func (l *loop) recycleDead() {
	for i, st := range l.deadST {
		l.deadST[i] = nil
		if st.blocked || st.us != nil || st.req.tm.idx != 0 || st.req.u != nil {
			continue
		}
		if !recycleStreams {
			poisonStream(st)
			continue
		}
		*st = h2stream{}
		if len(l.freeST) < maxFreeStreams {
			l.freeST = append(l.freeST, st)
		}
	}
	l.deadST = l.deadST[:0]
	for i, s := range l.deadUS {
		l.deadUS[i] = nil
		if s.blocked {
			continue
		}
		if !recycleStreams {
			poisonUStream(s)
			continue
		}
		*s = h2ustream{}
		if len(l.freeUS) < maxFreeStreams {
			l.freeUS = append(l.freeUS, s)
		}
	}
	l.deadUS = l.deadUS[:0]
}

// poisonStream makes a freed client stream fault on use: its connection
// and request are nil, and it is not marked ended, so a check of gone
// does not stop the code that then reaches for them.
func poisonStream(st *h2stream) { *st = h2stream{} }

// poisonUStream does the same to a freed upstream stream (its connection
// and client stream nil, not marked done).
func poisonUStream(s *h2ustream) { *s = h2ustream{} }
