package main

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func msList(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestPairOrder(t *testing.T) {
	var got [][2]int
	for k := range 4 {
		got = append(got, pairOrder(k))
	}
	want := [][2]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("pair orders %v, want %v (A B, B A, ...)", got, want)
	}
}

// Five pairs worked by hand: the percentiles are pct's (the lower nearest
// rank, as every habench figure), so p50 is the 3rd of 5 and p99 and p90
// the 4th.
func TestComparePairs(t *testing.T) {
	a := msList(10, 20, 30, 40, 50)
	b := msList(12, 25, 29, 60, 50) // differences 2, 5, -1, 20, 0
	st := comparePairs(a, b, 20*time.Millisecond, rand.New(rand.NewPCG(1, 2)))
	check := func(name string, got, want time.Duration) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("A p50", st.a.p50, 30*time.Millisecond)
	check("A p99", st.a.p99, 40*time.Millisecond)
	check("A max", st.a.max, 50*time.Millisecond)
	check("B p50", st.b.p50, 29*time.Millisecond)
	check("B p99", st.b.p99, 50*time.Millisecond)
	check("B max", st.b.max, 60*time.Millisecond)
	check("per-pair median", st.diffMedian, 2*time.Millisecond)
	check("per-pair p90", st.diffP90, 5*time.Millisecond)
	check("median where A wrote first (pairs 0, 2, 4: 2, -1, 0)", st.aFirst, 0)
	check("median where B wrote first (pairs 1, 3: 5, 20)", st.bFirst, 5*time.Millisecond)
	check("p50 difference", st.p50Diff, -time.Millisecond)
	check("p99 difference", st.p99Diff, 10*time.Millisecond)
	if st.pairs != 5 {
		t.Errorf("pairs = %d, want 5", st.pairs)
	}
	if st.p99CI[0] > st.p99CI[1] || st.p50CI[0] > st.p50CI[1] {
		t.Errorf("intervals out of order: p50 %v, p99 %v", st.p50CI, st.p99CI)
	}
}

// When every B is its A plus 7 ms, every resample's p50 and p99 differ by
// exactly 7 ms if the pairs are drawn together, however spread the A's
// are; drawing A's and B's apart would give an interval as wide as that
// spread.
func TestBootstrapKeepsPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a, b []time.Duration
	for range 200 {
		x := time.Duration(40+rng.IntN(160)) * time.Millisecond
		a, b = append(a, x), append(b, x+7*time.Millisecond)
	}
	seven := [2]time.Duration{7 * time.Millisecond, 7 * time.Millisecond}
	st := comparePairs(a, b, 20*time.Millisecond, rand.New(rand.NewPCG(1, 2)))
	if st.p50CI != seven || st.p99CI != seven {
		t.Errorf("intervals p50 %v, p99 %v; want both exactly 7 ms", st.p50CI, st.p99CI)
	}
	if st.p99Within != 1 {
		t.Errorf("share within 20 ms = %v, want 1", st.p99Within)
	}
	if st := comparePairs(a, b, 5*time.Millisecond, rand.New(rand.NewPCG(1, 2))); st.p99Within != 0 {
		t.Errorf("share within 5 ms = %v, want 0", st.p99Within)
	}
}

// With noise on the difference, the interval has width, holds the point
// estimate, and narrows as the pairs grow in number.
func TestBootstrapWidth(t *testing.T) {
	pairs := func(n int) ([]time.Duration, []time.Duration) {
		rng := rand.New(rand.NewPCG(5, 6))
		var a, b []time.Duration
		for range n {
			x := time.Duration(40+rng.IntN(60)) * time.Millisecond
			a, b = append(a, x), append(b, x+time.Duration(rng.IntN(30))*time.Millisecond)
		}
		return a, b
	}
	width := func(ci [2]time.Duration) time.Duration { return ci[1] - ci[0] }
	a, b := pairs(50)
	small := comparePairs(a, b, 20*time.Millisecond, rand.New(rand.NewPCG(1, 2)))
	a, b = pairs(2000)
	large := comparePairs(a, b, 20*time.Millisecond, rand.New(rand.NewPCG(1, 2)))
	for _, st := range []pairStats{small, large} {
		if !(st.p50CI[0] <= st.p50Diff && st.p50Diff <= st.p50CI[1]) || !(st.p99CI[0] <= st.p99Diff && st.p99Diff <= st.p99CI[1]) {
			t.Errorf("%d pairs: p50 %v in %v, p99 %v in %v: an estimate outside its interval", st.pairs, st.p50Diff, st.p50CI, st.p99Diff, st.p99CI)
		}
	}
	if width(small.p50CI) == 0 || width(large.p50CI) >= width(small.p50CI) {
		t.Errorf("p50 interval width %v with 50 pairs, %v with 2,000: want some, and narrower with more", width(small.p50CI), width(large.p50CI))
	}
}

func TestVerdict(t *testing.T) {
	goal := 20 * time.Millisecond
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{
		{-5, 12, "within 20.0 ms"},
		{3, 20, "within 20.0 ms"},
		{20, 31, "not decided"},
		{8, 25, "not decided"},
		{20.5, 40, "over 20.0 ms"},
	} {
		ci := [2]time.Duration(msList(c.lo, c.hi))
		if got := verdict(ci, goal); !strings.HasPrefix(got, c.want) {
			t.Errorf("verdict(%v) = %q, want %q...", ci, got, c.want)
		}
	}
}

func TestPairsFile(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "1"), filepath.Join(dir, "2")
	a, b := msList(10.5, 20, 30.25), msList(11, 19.125, 45)
	if err := writePairs(one, "bbolt:1", "etcd:3", a, b); err != nil {
		t.Fatal(err)
	}
	na, nb, ra, rb, err := readPairs(mustOpen(t, one))
	if err != nil || na != "bbolt:1" || nb != "etcd:3" || !slices.Equal(ra, a) || !slices.Equal(rb, b) {
		t.Errorf("read back %s %s %v %v (%v); want bbolt:1 etcd:3 %v %v", na, nb, ra, rb, err, a, b)
	}
	if err := writePairs(two, "etcd:3", "bbolt:1", b, a); err != nil {
		t.Fatal(err)
	}
	if err := pool([]string{one, two}, 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "compares etcd:3 with bbolt:1") {
		t.Errorf("pooling files of other setups: %v, want an error naming them", err)
	}
	for _, c := range []struct{ name, text, want string }{
		{"no header", "10 12\n", "line 1: not a habench pairs file"},
		{"one setup", pairsHeader + " bbolt:1\n", "line 1: not a habench pairs file"},
		{"three times", pairsHeader + " bbolt:1 etcd:3\n10 12 14\n", "line 2: want two times"},
		{"not a number", pairsHeader + " bbolt:1 etcd:3\n10 x\n", `line 2: "x" is not a time`},
		{"negative", pairsHeader + " bbolt:1 etcd:3\n10 12\n-3 4\n", `line 3: "-3" is not a time`},
		{"NaN", pairsHeader + " bbolt:1 etcd:3\n10 NaN\n", `line 2: "NaN" is not a time`},
		{"empty", "", "empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, _, err := readPairs(strings.NewReader(c.text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("readPairs: %v, want %q", err, c.want)
			}
		})
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Every write number gives weights App Mesh accepts (1 to 100) that a
// proxy's routes map back to the same number; the mesh's first route (1
// and 1) is write 1, before the first timed write (2).
func TestWeightsCarryTheWrite(t *testing.T) {
	for n := uint32(1); n <= maxWrite; n++ {
		blue, green := split(n)
		if blue < 1 || blue > 100 || green < 1 || green > 100 {
			t.Fatalf("split(%d) = %d, %d: out of App Mesh's 0-100", n, blue, green)
		}
		if got := writeOf(uint32(blue), uint32(green)); got != n {
			t.Fatalf("writeOf(split(%d)) = %d", n, got)
		}
	}
	if b, g := split(1); b != 1 || g != 1 {
		t.Errorf("split(1) = %d, %d, want the mesh's first route, 1 and 1", b, g)
	}
	if got := writeOf(0, 5); got != 0 {
		t.Errorf("writeOf without blue = %d, want 0", got)
	}
}

func TestRankCorrelation(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b []time.Duration
		want float64
	}{
		{"same order", msList(10, 30, 20, 50), msList(1, 300, 2, 400), 1},
		{"reversed", msList(10, 20, 30), msList(9, 8, 7), -1},
		// ranks 0 1 2 3 against 1 0 3 2: sum of products of centred ranks 3, of squares 5
		{"two swaps", msList(1, 2, 3, 4), msList(20, 10, 40, 30), 0.6},
		// a's ranks 0.5, 0.5, 2 against 0, 1, 2: 1.5 / sqrt(1.5 * 2)
		{"ties", msList(5, 5, 9), msList(1, 2, 3), math.Sqrt(3) / 2},
		{"no spread", msList(5, 5, 5), msList(1, 2, 3), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := rankCorrelation(c.a, c.b); math.Abs(got-c.want) > 1e-9 {
				t.Errorf("rankCorrelation = %v, want %v", got, c.want)
			}
		})
	}
	if got := ranks(msList(7, 3, 7, 1)); !slices.Equal(got, []float64{2.5, 1, 2.5, 0}) {
		t.Errorf("ranks = %v, want [2.5 1 2.5 0]", got)
	}
}
