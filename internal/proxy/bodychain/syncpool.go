package bodychain

import "sync"

// ChunkSize is the size of SyncPool's chunks: the event loops' buffer
// size, so that both paths keep a body in chunks alike.
const ChunkSize = 16 << 10

// SyncPool is a Pool of ChunkSize chunks shared by goroutines, backed by
// a sync.Pool of array pointers so that neither Get nor Put allocates (a
// []byte stored in a sync.Pool would). Its zero value is ready.
type SyncPool struct{ p sync.Pool }

// Get returns an empty chunk of ChunkSize.
func (s *SyncPool) Get() []byte {
	if a, ok := s.p.Get().(*[ChunkSize]byte); ok {
		return a[:0]
	}
	return make([]byte, 0, ChunkSize)
}

// Put takes back a chunk of ChunkSize; others are left to the collector.
func (s *SyncPool) Put(b []byte) {
	if cap(b) == ChunkSize {
		s.p.Put((*[ChunkSize]byte)(b[:ChunkSize]))
	}
}
