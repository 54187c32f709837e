package bodychain

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// testPool is a Pool that checks the chain's use of it: every chunk it
// gave comes back once, and a chunk given back is poisoned, so that a
// chain still reading it shows wrong bytes.
type testPool struct {
	t    *testing.T
	size int
	out  map[*byte]bool // chunks given and not yet taken back
	gets int
}

func newTestPool(t *testing.T, size int) *testPool {
	return &testPool{t: t, size: size, out: map[*byte]bool{}}
}

func (p *testPool) Get() []byte {
	b := make([]byte, 0, p.size)
	p.out[&b[:1][0]] = true
	p.gets++
	return b
}

func (p *testPool) Put(b []byte) {
	p.t.Helper()
	if cap(b) != p.size {
		p.t.Fatalf("a chunk of %d came back, want %d", cap(b), p.size)
	}
	k := &b[:1][0]
	if !p.out[k] {
		p.t.Fatal("a chunk came back twice, or one the pool never gave")
	}
	delete(p.out, k)
	b = b[:cap(b)]
	for i := range b {
		b[i] = 0xee
	}
}

// TestChainMatchesSlice is optimised-equals-obvious: random appends,
// drops and reads on a Chain against a plain []byte with its offset, on
// chunk sizes that put every boundary in play; the chunks held are
// always as few as the bytes need, and all come back on Release.
func TestChainMatchesSlice(t *testing.T) {
	for _, size := range []int{1, 7, 16, 16 << 10} {
		for seed := uint64(0); seed < 50; seed++ {
			r := rand.New(rand.NewPCG(seed, uint64(size)))
			p := newTestPool(t, size)
			var c Chain
			var model []byte // the bytes from base on
			var base int64
			next := byte(0)
			for op := 0; op < 300; op++ {
				switch r.IntN(5) {
				case 0, 1:
					b := make([]byte, r.IntN(3*size+2))
					for i := range b {
						b[i] = next
						next++
					}
					c.Append(p, b)
					model = append(model, b...)
				case 2:
					upto := base - 3 + r.Int64N(int64(len(model))+8)
					c.Drop(p, upto)
					switch {
					case upto <= base:
					case upto-base >= int64(len(model)):
						model, base = nil, upto
					default:
						model, base = model[upto-base:], upto
					}
				case 3:
					off := base - 2 + r.Int64N(int64(len(model))+5)
					dst := make([]byte, r.IntN(2*size+3))
					n, err := c.ReadAt(dst, off)
					switch {
					case off < base:
						if !errors.Is(err, ErrDropped) || n != 0 {
							t.Fatalf("size %d seed %d: ReadAt(%d) before the front %d: %d, %v", size, seed, off, base, n, err)
						}
					default:
						var want []byte
						if off-base < int64(len(model)) {
							want = model[off-base:]
						}
						want = want[:min(len(want), len(dst))]
						if err != nil || !bytes.Equal(dst[:n], want) {
							t.Fatalf("size %d seed %d: ReadAt(%d) = %v %v, want %v", size, seed, off, dst[:n], err, want)
						}
					}
				case 4:
					if r.IntN(10) == 0 {
						c.Release(p)
						model, base = nil, base+int64(len(model))
					}
				}
				if c.Len() != len(model) || c.Base() != base || c.End() != base+int64(len(model)) {
					t.Fatalf("size %d seed %d: Len %d Base %d End %d, want %d %d", size, seed, c.Len(), c.Base(), c.End(), len(model), base)
				}
				if held, most := len(p.out), (len(model)+size-1)/size+1; held > most {
					t.Fatalf("size %d seed %d: %d chunks held for %d bytes", size, seed, held, len(model))
				}
			}
			c.Release(p)
			if len(p.out) != 0 || c.Len() != 0 {
				t.Fatalf("size %d seed %d: %d chunks not given back", size, seed, len(p.out))
			}
		}
	}
}

// TestChainAtWalksChunks: At gives each chunk's bytes in order, which
// is how the loops write a kept body; past End, nothing.
func TestChainAtWalksChunks(t *testing.T) {
	p := newTestPool(t, 4)
	var c Chain
	c.Append(p, []byte("abcdefghij"))
	c.Drop(p, 3)
	var got []string
	for off := c.Base(); ; {
		b, err := c.At(off)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			break
		}
		got = append(got, string(b))
		off += int64(len(b))
	}
	if want := []string{"d", "efgh", "ij"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("At walked %q, want %q", got, want)
	}
	if _, err := c.At(2); !errors.Is(err, ErrDropped) {
		t.Fatalf("At before the front: %v, want ErrDropped", err)
	}
	c.Release(p)
}

// BenchmarkChainKeep512K keeps a 512 KiB body arriving in 16 KiB reads
// in a chain of 16 KiB chunks from a free list, as the loops keep a
// retry's copy: no allocation once the list holds the chunks.
func BenchmarkChainKeep512K(b *testing.B) {
	var fl freeList
	in := make([]byte, 16<<10)
	var c Chain
	b.ReportAllocs()
	for range b.N {
		for range 32 {
			c.Append(&fl, in)
		}
		c.Release(&fl)
	}
}

type freeList struct{ bufs [][]byte }

func (f *freeList) Get() []byte {
	if n := len(f.bufs); n > 0 {
		b := f.bufs[n-1]
		f.bufs = f.bufs[:n-1]
		return b
	}
	return make([]byte, 0, 16<<10)
}

func (f *freeList) Put(b []byte) { f.bufs = append(f.bufs, b[:0]) }
