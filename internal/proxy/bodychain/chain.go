// Package bodychain keeps the bytes of a request body for a retry as a
// chain of fixed-size chunks from a pool its caller gives: a body kept
// as it arrives costs the chunks it fills, where one slice grown by
// append copies it again at each doubling and leaves the smaller arrays
// to the collector (Envoy's Buffer::OwnedImpl is a chain of slices
// alike). Both of the proxy's request paths keep their retry copy in
// it: the event loops with chunks of their free lists, the goroutine
// path with a sync.Pool's.
package bodychain

import "errors"

// Pool gives a chain its chunks and takes them back. Get returns an
// empty buffer (length 0) whose capacity is the chunk's size, never 0;
// Put takes back one that Get gave, which the chain no longer holds.
type Pool interface {
	Get() []byte
	Put([]byte)
}

// ErrDropped is what a read from before a chain's front gets: those
// bytes were let go (Drop).
var ErrDropped = errors.New("bodychain: bytes before the kept front were dropped")

// Chain holds a body's bytes from Base to End. Its zero value is empty,
// at offset 0. A Chain is not safe for concurrent use; its chunks are
// its own until Drop gives them back.
type Chain struct {
	// chunks hold the bytes in order, each up to its capacity, the
	// first from off on; only the last may have room.
	chunks [][]byte
	off    int   // where the front starts in chunks[0]
	base   int64 // the body's offset of the front
	n      int   // bytes held
}

// Within gives an empty chain room for its first chunks' list: a chain
// that lives in a recycled struct keeps its list there rather than
// allocate one each time it is used again (the event loops' HTTP/2
// streams: one allocation less per request body kept). The chain must
// then not be copied while it holds room's elements. Past room, Append
// grows the list as usual.
func (c *Chain) Within(room [][]byte) {
	if c.chunks == nil {
		c.chunks = room[:0]
	}
}

// Len returns how many bytes the chain holds.
func (c *Chain) Len() int { return c.n }

// Base returns the body's offset of the first byte held.
func (c *Chain) Base() int64 { return c.base }

// End returns the body's offset just past the last byte held.
func (c *Chain) End() int64 { return c.base + int64(c.n) }

// Append adds b at the end, filling the last chunk, then new ones of p.
func (c *Chain) Append(p Pool, b []byte) {
	for len(b) > 0 {
		k := len(c.chunks)
		if k == 0 || len(c.chunks[k-1]) == cap(c.chunks[k-1]) {
			ch := p.Get()
			if cap(ch) == 0 {
				panic("bodychain: the pool gave a chunk of no capacity")
			}
			c.chunks = append(c.chunks, ch[:0])
			k++
		}
		last := c.chunks[k-1]
		m := min(cap(last)-len(last), len(b))
		c.chunks[k-1] = append(last, b[:m]...)
		b = b[m:]
		c.n += m
	}
}

// At returns the bytes held from the body's offset off to the end of the
// chunk holding it, for a caller to copy or write before the chain
// changes: nil at End or past it, ErrDropped before Base.
func (c *Chain) At(off int64) ([]byte, error) {
	if off < c.base {
		return nil, ErrDropped
	}
	rel := off - c.base
	for i, ch := range c.chunks {
		if i == 0 {
			ch = ch[c.off:]
		}
		if rel < int64(len(ch)) {
			return ch[rel:], nil
		}
		rel -= int64(len(ch))
	}
	return nil, nil
}

// ReadAt copies to dst the bytes held from the body's offset off: 0 at
// End or past it, ErrDropped before Base.
func (c *Chain) ReadAt(dst []byte, off int64) (int, error) {
	if off < c.base {
		return 0, ErrDropped
	}
	n := 0
	for n < len(dst) {
		b, err := c.At(off + int64(n))
		if err != nil {
			return n, err
		}
		if len(b) == 0 {
			break
		}
		n += copy(dst[n:], b)
	}
	return n, nil
}

// AppendTo appends to dst the bytes held from the body's offset from
// on (all of them from Base or before) and returns it.
func (c *Chain) AppendTo(dst []byte, from int64) []byte {
	for off := max(from, c.base); ; {
		b, _ := c.At(off)
		if len(b) == 0 {
			return dst
		}
		dst = append(dst, b...)
		off += int64(len(b))
	}
}

// Drop lets go of the bytes before the body's offset upto, giving the
// chunks that held only those back to p. Past End it drops all, and the
// front moves to upto (bytes passed on without being kept); before Base
// it does nothing.
func (c *Chain) Drop(p Pool, upto int64) {
	if upto <= c.base {
		return
	}
	k := upto - c.base
	if k >= int64(c.n) {
		for _, ch := range c.chunks {
			p.Put(ch)
		}
		clear(c.chunks)
		c.chunks, c.off, c.n, c.base = c.chunks[:0], 0, 0, upto
		return
	}
	gone := 0 // chunks let go
	for k > 0 {
		s := int64(len(c.chunks[gone]) - c.off)
		if k < s {
			c.off += int(k)
			break
		}
		p.Put(c.chunks[gone])
		gone++
		c.off = 0
		k -= s
	}
	m := copy(c.chunks, c.chunks[gone:])
	clear(c.chunks[m:])
	c.chunks = c.chunks[:m]
	c.n -= int(upto - c.base)
	c.base = upto
}

// Release gives every chunk back to p: nothing is held, and the front
// is the end.
func (c *Chain) Release(p Pool) { c.Drop(p, c.End()) }
