package main

import (
	"slices"
	"testing"
	"time"
)

func TestSlowest(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, c := range []struct {
		name   string
		totals []time.Duration
		n      int
		want   []int
	}{
		{"none", nil, 3, nil},
		{"two slowest, then the median", ms(50, 300, 40, 90, 200), 2, []int{1, 4, 3}},
		{"ties keep write order", ms(70, 90, 90, 10), 2, []int{1, 2, 0}},
		{"more asked than writes", ms(20, 10), 5, []int{0, 1, 1}},
		{"only the median", ms(30, 10, 20), 0, []int{2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := slowest(c.totals, c.n); !slices.Equal(got, c.want) {
				t.Errorf("slowest(%v, %d) = %v, want %v", c.totals, c.n, got, c.want)
			}
		})
	}
}

// The commit's send time read from etcd is the anchor when known; without
// it, the 2xx less the writer's commit time.
func TestSentAt(t *testing.T) {
	start := time.Unix(1000, 0)
	w := writeTimes{start: start, ok: start.Add(30 * time.Millisecond)}
	if got := sentAt(w, 12); got != 18 {
		t.Errorf("without the sequence key: %v ms, want 18 (2xx 30 less commit 12)", got)
	}
	w.sent = start.Add(3 * time.Millisecond)
	if got := sentAt(w, 12); got != 3 {
		t.Errorf("with the sequence key: %v ms, want 3", got)
	}
}
