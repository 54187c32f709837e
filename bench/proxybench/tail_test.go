package main

import (
	"math"
	"reflect"
	"testing"
	"time"
)

// slice100 is a slice of 100 requests 1 ms apart from t0, the i-th taking
// base + i µs, with the latencies of extra overriding some.
func slice100(t0 time.Time, base time.Duration, extra map[int]time.Duration) runSlice {
	s := runSlice{start: t0, interval: time.Millisecond}
	for i := range 100 {
		l := base + time.Duration(i)*time.Microsecond
		if x, ok := extra[i]; ok {
			l = x
		}
		s.lat = append(s.lat, l)
	}
	return s
}

func TestQuantileAsSummarize(t *testing.T) {
	var l []time.Duration
	for i := range 10000 {
		l = append(l, time.Duration(i))
	}
	// summarize's p99 of 10,000 is the element at 9,900: the 100th slowest.
	if got := quantile(l, 0.99); got != 9900 {
		t.Errorf("p99 of 0..9999 = %d, want 9900", got)
	}
	if got := quantile(l, 0.999); got != 9990 {
		t.Errorf("p99.9 = %d, want 9990", got)
	}
	if got := quantile(l[:1], 0.999); got != 0 {
		t.Errorf("one sample: %d", got)
	}
	if got := quantile(nil, 0.99); got != 0 {
		t.Errorf("no sample: %d", got)
	}
}

func TestSpread(t *testing.T) {
	lo, med, hi := spread([]float64{3, -1, 2, 10, 0})
	if lo != -1 || med != 2 || hi != 10 {
		t.Errorf("spread = %v %v %v, want -1 2 10", lo, med, hi)
	}
	// An even count: the lower middle one.
	if _, med, _ := spread([]float64{4, 1, 3, 2}); med != 2 {
		t.Errorf("median of 1..4 = %v, want 2", med)
	}
}

func TestSlowestCarriesScheduledTime(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	a := slice100(t0, time.Millisecond, map[int]time.Duration{7: 9 * time.Millisecond})
	b := slice100(t0.Add(10*time.Second), time.Millisecond, map[int]time.Duration{42: 20 * time.Millisecond})
	got := slowest([]runSlice{a, b}, 2)
	want := []slowReq{
		{t0.Add(10*time.Second + 42*time.Millisecond), 20 * time.Millisecond},
		{t0.Add(7 * time.Millisecond), 9 * time.Millisecond},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slowest = %v, want %v", got, want)
	}
}

func TestGCWindowOverlap(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	ends := []uint64{0, uint64(t0.Add(100 * time.Millisecond).UnixNano()), uint64(t0.Add(20 * time.Millisecond).UnixNano()), 0}
	ws := gcWindows(ends, 3*time.Millisecond, 500*time.Microsecond)
	if len(ws) != 2 || !ws[0].from.Equal(t0.Add(17*time.Millisecond)) || !ws[1].to.Equal(t0.Add(100500*time.Microsecond)) {
		t.Fatalf("windows = %v", ws)
	}
	for _, c := range []struct {
		at   time.Duration // after t0
		lat  time.Duration
		want bool
	}{
		{10 * time.Millisecond, time.Millisecond, false},      // ends before the first window
		{10 * time.Millisecond, 7 * time.Millisecond, true},   // ends at its start
		{18 * time.Millisecond, 100 * time.Microsecond, true}, // inside
		{20600 * time.Microsecond, time.Millisecond, false},   // starts after its end
		{50 * time.Millisecond, 60 * time.Millisecond, true},  // spans the second
		{101 * time.Millisecond, time.Millisecond, false},     // after both
	} {
		if got := overlaps(t0.Add(c.at), c.lat, ws); got != c.want {
			t.Errorf("request at +%v for %v: overlaps %v, want %v", c.at, c.lat, got, c.want)
		}
	}
	reqs := []slowReq{{t0.Add(18 * time.Millisecond), time.Millisecond}, {t0.Add(time.Second), time.Millisecond}}
	if got := overlapShare(reqs, ws); got != 0.5 {
		t.Errorf("share = %v, want 0.5", got)
	}
}

func TestParsePauseEnds(t *testing.T) {
	text := "# runtime.MemStats\n# PauseNs = [1 2 0]\n# PauseEnd = [1764806400000000000 0 1764806400500000000]\n# NumGC = 2\n"
	got := parsePauseEnds(text)
	want := []uint64{1764806400000000000, 0, 1764806400500000000}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PauseEnd = %v, want %v", got, want)
	}
	if parsePauseEnds("# NumGC = 0\n") != nil {
		t.Error("no PauseEnd line: want nil")
	}
}

func TestFirstShare(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	defer func(n int) { firstN = n }(firstN)
	firstN = 16
	ss := []runSlice{slice100(t0, time.Millisecond, nil), slice100(t0.Add(time.Second), time.Millisecond, nil)}
	reqs := []slowReq{
		{t0, 0},                                     // the first request of slice 0
		{t0.Add(15 * time.Millisecond), 0},          // the 16th
		{t0.Add(16 * time.Millisecond), 0},          // the 17th: not among the first
		{t0.Add(time.Second + time.Millisecond), 0}, // slice 1's second
	}
	if got := firstShare(reqs, ss); got != 0.75 {
		t.Errorf("first share = %v, want 0.75", got)
	}
}

func TestSignTest(t *testing.T) {
	for _, c := range []struct {
		k, n int
		want float64
	}{
		{0, 5, 2.0 / 32},     // all five one way
		{5, 5, 2.0 / 32},     // symmetric
		{1, 5, 2 * 6.0 / 32}, // 0 or 1 of 5, doubled
		{2, 5, 1},            // as even as five can be
		{0, 10, 2.0 / 1024},
		{0, 0, 1},
		{32, 64, 1},                     // 64 rounds or more: once 0 by a 64-bit shift
		{0, 64, math.Ldexp(2, -64)},     // all 64 one way
		{0, 2000, 0},                    // underflows to 0, no NaN
		{10, 20, 1},                     // even
		{14, 20, 2 * 60460.0 / 1048576}, // P(X <= 6) of 20, doubled: 0.115
	} {
		if got := signTest(c.k, c.n); math.Abs(got-c.want) > 1e-9*c.want {
			t.Errorf("signTest(%d, %d) = %v, want %v", c.k, c.n, got, c.want)
		}
	}
}

func TestParseSchedstat(t *testing.T) {
	got := parseSchedstat("1202734 34466890 2\n")
	if got != (schedStat{34466890 * time.Nanosecond, 2}) {
		t.Errorf("schedstat = %+v", got)
	}
	if parseSchedstat("") != (schedStat{}) {
		t.Error("empty line: want zero")
	}
	if d := got.add(got).sub(got); d != got {
		t.Errorf("add then sub = %+v", d)
	}
}

func TestTailTableRoundsAndVersus(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	// Three rounds. The direct path's slice p99 is 1 ms + 99 µs in each;
	// the proxy path's is 2 ms + 99 µs but for one slow slice (a 50 ms
	// stall over its slowest requests), which moves its pooled p99 less
	// than the per-round figures show.
	stall := map[int]time.Duration{}
	for i := 90; i < 100; i++ {
		stall[i] = 50 * time.Millisecond
	}
	var direct, proxy, hap []runSlice
	for r := range 3 {
		at := t0.Add(time.Duration(r) * 10 * time.Second)
		direct = append(direct, slice100(at, time.Millisecond, nil))
		extra := map[int]time.Duration(nil)
		if r == 1 {
			extra = stall
		}
		proxy = append(proxy, slice100(at.Add(time.Second), 2*time.Millisecond, extra))
		hap = append(hap, slice100(at.Add(2*time.Second), 3*time.Millisecond, nil))
	}
	rows := tailTable([]string{"one weft proxy"}, [][]runSlice{proxy}, direct, [][]window{nil}, nil)
	r := rows[0]
	if want := []float64{2.099, 50, 2.099}; !reflect.DeepEqual(r.sliceP99, want) {
		t.Errorf("slice p99 = %v, want %v", r.sliceP99, want)
	}
	if lo, med, hi := spread(r.addedP99); math.Abs(lo-1) > 1e-9 || math.Abs(med-1) > 1e-9 || math.Abs(hi-48.901) > 1e-9 {
		t.Errorf("added p99 per round = %v", r.addedP99)
	}
	if r.p99 != 50 || r.proxies {
		t.Errorf("pooled p99 %v (want 50), proxies %v", r.p99, r.proxies)
	}
	vs := versusHAProxy([]string{"app direct", "one weft proxy", "haproxy", "one weft proxy, tracing 1%", "two weft proxies B"},
		[][]runSlice{direct, proxy, hap, proxy, proxy}, 0.99)
	if len(vs) != 1 || vs[0].a != "one weft proxy" || vs[0].b != "haproxy" {
		t.Fatalf("pairs = %+v, want one weft proxy against haproxy only (no two haproxies in the run)", vs)
	}
	if v := vs[0]; v.below != 2 || v.above != 1 || v.tie != 0 {
		t.Errorf("below/above/tie = %d/%d/%d, want 2/1/0 (diffs %v)", v.below, v.above, v.tie, v.diffs)
	}
	// At p50 the stall (the slowest tenth of round 1) does not show: the
	// proxy's 2 ms slices are under haproxy's 3 ms in every round.
	vs = versusHAProxy([]string{"one weft proxy", "haproxy"}, [][]runSlice{proxy, hap}, 0.5)
	if v := vs[0]; v.below != 3 || v.above != 0 || v.tie != 0 || math.Abs(v.diffs[1]+1) > 1e-9 {
		t.Errorf("p50: below/above/tie = %d/%d/%d (diffs %v), want 3/0/0, round 1 -1 ms", v.below, v.above, v.tie, v.diffs)
	}
	// The HTTP/2 paths pair with haproxy's of the same protocol.
	vs = versusHAProxy([]string{"app direct h2c", "one weft proxy h2c", "haproxy", "haproxy h2c", "two weft proxies B h2 mTLS", "two haproxies h2 mTLS"},
		[][]runSlice{direct, proxy, hap, hap, proxy, hap}, 0.99)
	if len(vs) != 2 || vs[0].a != "one weft proxy h2c" || vs[0].b != "haproxy h2c" ||
		vs[1].a != "two weft proxies B h2 mTLS" || vs[1].b != "two haproxies h2 mTLS" {
		t.Fatalf("HTTP/2 pairs = %+v", vs)
	}
	if v := compareRounds("a", "b", proxy, proxy, 0.99); v.tie != 3 || v.below != 0 || v.above != 0 {
		t.Errorf("a path against itself: below/above/tie = %d/%d/%d, want 0/0/3", v.below, v.above, v.tie)
	}
}

func TestStallWindows(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	// 100 requests: the slowest 1% is one, request 40, 30 ms long.
	d := []runSlice{slice100(t0, time.Millisecond, map[int]time.Duration{40: 30 * time.Millisecond})}
	ws := stallWindows(d)
	if len(ws) != 1 || !ws[0].from.Equal(t0.Add(40*time.Millisecond)) || !ws[0].to.Equal(t0.Add(70*time.Millisecond)) {
		t.Fatalf("stall windows = %v", ws)
	}
	if !overlaps(t0.Add(60*time.Millisecond), time.Millisecond, ws) || overlaps(t0.Add(80*time.Millisecond), time.Millisecond, ws) {
		t.Error("a request during the stall overlaps it, one after does not")
	}
}

func TestParseSteal(t *testing.T) {
	if got := parseSteal("cpu  2608407 11113 864562 4135647 31817 0 117116 132490 0 0"); got != 132490 {
		t.Errorf("steal = %d, want 132490", got)
	}
	if got := parseSteal("cpu0 1 2 3 4 5 6 7 8 9 10"); got != 0 {
		t.Errorf("a single CPU's line: %d, want 0", got)
	}
}
