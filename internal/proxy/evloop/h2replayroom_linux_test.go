package evloop

import (
	"testing"

	proxyroute "github.com/weftmesh/weft/internal/proxy/route"
)

// TestH2ReplayKeptInStreamRoom: a recycled stream under a retry policy
// keeps its body's first chunk for a retry with the chain's list of
// chunks in the stream (h2stream.replayRoom, bodychain.Chain.Within),
// so that keeping a small request body allocates nothing: the loops'
// small h2c POST under a retry policy at 112 allocations, not 113
// (round 35). The stream is taken from the loop's free list, given a
// body in its retry's back-off (h2uBody with no upstream stream: kept
// only), and recycled, as the loops recycle it at an iteration's end.
func TestH2ReplayKeptInStreamRoom(t *testing.T) {
	l := &loop{}
	policy := &proxyroute.RetryPolicy{On: proxyroute.OnReset, NumRetries: 1}
	body := []byte("a small request body")
	allocs := testing.AllocsPerRun(100, func() {
		st := l.streams.get()
		st.sd = &st.req
		st.req.h2 = st
		st.req.rs.policy = policy
		l.h2uBody(st, body, false)
		if st.replay.Len() != len(body) {
			t.Fatalf("the stream kept %d bytes, want %d", st.replay.Len(), len(body))
		}
		st.replay.Release(l.chunks()) // h2uForget's
		l.streams.ended(st)
		l.streams.recycle(true, func(*h2stream) bool { return false }, (*h2stream).zero)
	})
	if allocs != 0 {
		t.Fatalf("keeping a small body in a recycled stream allocated %v times per request, want 0", allocs)
	}
}
