package evloop

// HTTP/2 streams are recycled by their loop. A client stream (its
// h2stream, with its request's down inside) and an upstream stream (its
// h2ustream) were 1,184 of the 1,876 bytes of garbage an h2c request
// left, and the garbage sets how often the collector runs. Recycled, a
// request leaves 692 bytes (612 with its added fields in the stream); at
// saturation the proxy ran 0.26 GC cycles per 1,000 requests instead of
// 0.82, and spent 16-20 % less CPU per request (docs/bench/proxy.md,
// "h2c: streams recycled").
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
// idle: 128 × 1,184 bytes of client streams (a 1,280-byte size class)
// and 128 × 552 of upstream ones (576), 232 KiB at most (round 37's
// sizes; round 16's were 968 and 432), and the client streams' request
// fields' rooms, 40 bytes a field up to maxRoomFields: 160 KiB more at
// most, a few hundred bytes a stream for the usual 7-15 fields.
const maxFreeStreams = 128

// recycleStreams is off in this package's tests, which poison ended
// streams instead (h2pool_linux_test.go): a stream left zeroed and not
// reused has no connection and no request and is not marked ended, so any
// use after its loop freed it faults.
var recycleStreams = true

// streamPool is a loop's streams of one kind that ended in this
// iteration (dead), and those kept for reuse (free).
type streamPool[T any] struct{ dead, free []*T }

// get returns a zeroed stream.
func (p *streamPool[T]) get() *T {
	if n := len(p.free); n > 0 {
		x := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return x
	}
	return new(T)
}

// ended takes a stream that ended; it is recycled at the iteration's end.
func (p *streamPool[T]) ended(x *T) { p.dead = append(p.dead, x) }

// recycle zeroes the dead streams that linked does not report (with
// zero, or to T's zero value when it is nil) and, with reuse, keeps them
// for reuse, up to maxFreeStreams.
func (p *streamPool[T]) recycle(reuse bool, linked func(*T) bool, zero func(*T)) {
	for i, x := range p.dead {
		p.dead[i] = nil
		if linked(x) {
			continue
		}
		if zero != nil {
			zero(x)
		} else {
			var z T
			*x = z
		}
		if reuse && len(p.free) < maxFreeStreams {
			p.free = append(p.free, x)
		}
	}
	p.dead = p.dead[:0]
}

// recycleDead frees the streams that ended in this iteration (run's
// last step, with recycleStreams).
func (l *loop) recycleDead(reuse bool) {
	l.streams.recycle(reuse, func(st *h2stream) bool {
		return st.blocked || st.us != nil || st.req.tm.idx != 0 || st.req.u != nil
	}, (*h2stream).zero)
	l.ustreams.recycle(reuse, func(s *h2ustream) bool { return s.blocked }, nil)
}

// maxRoomFields bounds the request fields' room a recycled client stream
// keeps (h2stream.room): 32 fields, 1,280 bytes.
const maxRoomFields = 32

// zero clears a client stream for its next request, all but its request
// fields' room (cleared: it keeps no request's strings), up to
// maxRoomFields.
func (st *h2stream) zero() {
	room := st.room
	clear(room)
	if cap(room) > maxRoomFields {
		room = nil
	}
	*st = h2stream{room: room[:0]}
}
