package server

import (
	"sync/atomic"
	"testing"
)

// TestParallelCallsEachOnce: parallel calls fn once per index, on worker
// numbers below workers(n), and returns after the last call.
func TestParallelCallsEachOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 1000} {
		calls := make([]atomic.Int32, n)
		var bad atomic.Bool
		parallel(n, func(w, i int) {
			if w < 0 || w >= workers(n) {
				bad.Store(true)
			}
			calls[i].Add(1)
		})
		if bad.Load() {
			t.Fatalf("n=%d: a worker number out of range", n)
		}
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n=%d: index %d called %d times", n, i, c)
			}
		}
	}
}
