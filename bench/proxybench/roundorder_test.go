package main

import (
	"slices"
	"testing"
)

// TestRoundOrder checks that each round takes every path once, in the
// paths' own order with -fixed-order, and that the drawn orders differ
// between rounds.
func TestRoundOrder(t *testing.T) {
	const n = 9
	if got := roundOrder(n, true); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("fixed order %v", got)
	}
	firsts := map[int]bool{}
	for range 200 {
		got := roundOrder(n, false)
		sorted := slices.Sorted(slices.Values(got))
		if !slices.Equal(sorted, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}) {
			t.Fatalf("drawn order %v does not take every path once", got)
		}
		firsts[got[0]] = true
	}
	if len(firsts) < n {
		t.Fatalf("in 200 drawn orders only paths %v came first", firsts)
	}
}
