package main

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// A paired run (-paired) has both setups up at once and interleaves their
// writes, so that write k of one and write k of the other see about the
// same machine: the load of two shared cores drifts over seconds, and in
// a sequential run that drift lands on one setup and not the other. The
// comparison is then made pair by pair, and its uncertainty estimated by
// resampling the pairs.

// pairOrder is which setup writes first in pair k: A then B on even
// pairs, B then A on odd ones (A B B A A B ...), so that neither always
// follows the other's write (its GC, its proxies' last ACKs).
func pairOrder(k int) [2]int {
	if k%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// summary is one setup's writes: p50, p99 and max.
type summary struct{ p50, p99, max time.Duration }

func summarize(d []time.Duration) summary {
	s := slices.Sorted(slices.Values(d))
	return summary{pct(s, 50), pct(s, 99), s[len(s)-1]}
}

// pairStats compares setups A and B over paired writes: a[k] and b[k]
// were made one right after the other.
type pairStats struct {
	pairs int
	a, b  summary
	// diffMedian and diffP90 are the median and p90 of b[k] - a[k];
	// aFirst and bFirst its median over the pairs where A wrote first
	// (even k, pairOrder) and where B did: apart, they would show the
	// order within a pair weighing on the result.
	diffMedian, diffP90 time.Duration
	aFirst, bFirst      time.Duration
	// p50Diff and p99Diff are B's p50 (p99) less A's, and p50CI and
	// p99CI their 95 % bootstrap intervals.
	p50Diff, p99Diff time.Duration
	p50CI, p99CI     [2]time.Duration
	// rho is the rank correlation of the pairs' halves (Spearman's): how
	// much of a write's time came from the machine's state, which both
	// halves of a pair share and the per-pair difference removes.
	rho float64
	// p99Within is the share of bootstrap resamples whose p99 difference
	// is at or under the goal.
	p99Within float64
}

// resamples is how many times the bootstrap draws the pairs again: with
// 2,000 the ends of a 95 % interval are the 50th and 1,950th values. On
// the 200 pairs of a test run (loaded machine), six seeds moved the ends
// by at most 1.1 ms (p50) and 0.4 ms (p99), and the share of resamples
// within the goal by 2.4 points.
const resamples = 2000

// comparePairs computes pairStats over the pairs (a and b of the same
// length, at least one), drawing the bootstrap's resamples from rng.
func comparePairs(a, b []time.Duration, goal time.Duration, rng *rand.Rand) pairStats {
	n := len(a)
	st := pairStats{pairs: n, a: summarize(a), b: summarize(b)}
	diff := make([]time.Duration, n)
	var byOrder [2][]time.Duration
	for k := range n {
		diff[k] = b[k] - a[k]
		first := pairOrder(k)[0]
		byOrder[first] = append(byOrder[first], diff[k])
	}
	mid := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return pct(d, 50)
	}
	st.aFirst, st.bFirst = mid(byOrder[0]), mid(byOrder[1])
	slices.Sort(diff)
	st.diffMedian, st.diffP90 = pct(diff, 50), pct(diff, 90)
	st.p50Diff, st.p99Diff = st.b.p50-st.a.p50, st.b.p99-st.a.p99
	st.rho = rankCorrelation(a, b)
	var within int
	st.p50CI, st.p99CI, within = bootstrap(a, b, goal, rng)
	st.p99Within = float64(within) / resamples
	return st
}

// bootstrap draws the n pairs n times with replacement, resamples times,
// keeping each drawn pair together (B's write k is compared with A's write
// k, made on the same machine state), and returns the 2.5th and 97.5th
// percentiles of the resampled p50 and p99 differences (B less A), and
// how many resamples' p99 difference was at or under goal.
func bootstrap(a, b []time.Duration, goal time.Duration, rng *rand.Rand) (p50, p99 [2]time.Duration, within int) {
	n := len(a)
	ra, rb := make([]time.Duration, n), make([]time.Duration, n)
	d50, d99 := make([]time.Duration, resamples), make([]time.Duration, resamples)
	for r := range resamples {
		for i := range n {
			k := rng.IntN(n)
			ra[i], rb[i] = a[k], b[k]
		}
		slices.Sort(ra)
		slices.Sort(rb)
		d50[r], d99[r] = pct(rb, 50)-pct(ra, 50), pct(rb, 99)-pct(ra, 99)
		if d99[r] <= goal {
			within++
		}
	}
	slices.Sort(d50)
	slices.Sort(d99)
	lo, hi := resamples*25/1000, resamples*975/1000-1
	return [2]time.Duration{d50[lo], d50[hi]}, [2]time.Duration{d99[lo], d99[hi]}, within
}

// rankCorrelation is Spearman's rank correlation of a and b (same
// length): Pearson's correlation of their ranks, tied values given their
// mean rank; 0 when either has no spread.
func rankCorrelation(a, b []time.Duration) float64 {
	ra, rb := ranks(a), ranks(b)
	n := float64(len(a))
	mean := (n - 1) / 2
	var sab, saa, sbb float64
	for i := range ra {
		da, db := ra[i]-mean, rb[i]-mean
		sab, saa, sbb = sab+da*db, saa+da*da, sbb+db*db
	}
	if saa == 0 || sbb == 0 {
		return 0
	}
	return sab / math.Sqrt(saa*sbb)
}

// ranks is each value's rank in v from 0, ties sharing their mean rank.
func ranks(v []time.Duration) []float64 {
	order := make([]int, len(v))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(v[x], v[y]) })
	r := make([]float64, len(v))
	for i := 0; i < len(order); {
		j := i
		for j < len(order) && v[order[j]] == v[order[i]] {
			j++
		}
		for _, k := range order[i:j] {
			r[k] = float64(i+j-1) / 2
		}
		i = j
	}
	return r
}

// verdict says whether B is within goal of A at p99, as sure as the
// interval allows: within when the whole interval is at or under the
// goal, over when it is all above, else not decided by these pairs.
func verdict(ci [2]time.Duration, goal time.Duration) string {
	switch {
	case ci[1] <= goal:
		return fmt.Sprintf("within %s (the whole 95 %% interval is)", ms(goal))
	case ci[0] > goal:
		return fmt.Sprintf("over %s (the whole 95 %% interval is)", ms(goal))
	default:
		return fmt.Sprintf("not decided: the 95 %% interval spans %s", ms(goal))
	}
}
