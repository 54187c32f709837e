package main

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The tail of the fixed-rate run. A p99 from 10,000 pooled samples is the
// 100th slowest request: a handful of stalls on a shared 2-core machine
// move it by a millisecond. What this file adds to the pooled figure:
// p99.9, the p99 of each slice and of each slice pair (path minus the
// direct path's slice of the same round), so that one slow slice shows
// as one outlier instead of deciding the verdict, and, for the slowest
// requests, whether they overlapped a garbage collection of the path's
// weft proxies or of the generator itself (this process).

// runSlice is one slice of a path's fixed-rate run: request i was
// scheduled at start + i*interval and took lat[i].
type runSlice struct {
	start    time.Time
	interval time.Duration
	lat      []time.Duration
}

// quantile is the q-quantile of sorted as summarize takes it: the
// element at n*q (the 100th slowest of 10,000 for q = 0.99).
func quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	return sorted[min(n-1, int(float64(n)*q))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sliceQuantile is a slice's q-quantile in ms.
func sliceQuantile(s runSlice, q float64) float64 {
	l := slices.Clone(s.lat)
	slices.Sort(l)
	return ms(quantile(l, q))
}

// pooledQuantile is the q-quantile of every slice's requests, in ms.
func pooledQuantile(ss []runSlice, q float64) float64 {
	var l []time.Duration
	for _, s := range ss {
		l = append(l, s.lat...)
	}
	slices.Sort(l)
	return ms(quantile(l, q))
}

// spread is the minimum, median and maximum of xs (the median of an even
// count is the lower middle one).
func spread(xs []float64) (lo, med, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[0], s[(len(s)-1)/2], s[len(s)-1]
}

// slowReq is one request: when it was scheduled and how long it took.
type slowReq struct {
	at  time.Time
	lat time.Duration
}

// slowest returns the n slowest requests of ss, slowest first.
func slowest(ss []runSlice, n int) []slowReq {
	var all []slowReq
	for _, s := range ss {
		for i, l := range s.lat {
			all = append(all, slowReq{s.start.Add(time.Duration(i) * s.interval), l})
		}
	}
	slices.SortFunc(all, func(a, b slowReq) int { return int(b.lat - a.lat) })
	return all[:min(n, len(all))]
}

// firstN is how many requests open a slice: the generator's connections
// are new in every slice, so the first request of each opens one.
var firstN = 16

// firstShare is the share of reqs that are among the first firstN of
// their slice in ss.
func firstShare(reqs []slowReq, ss []runSlice) float64 {
	if len(reqs) == 0 {
		return 0
	}
	n := 0
	for _, r := range reqs {
		for _, s := range ss {
			if i := r.at.Sub(s.start); i >= 0 && i < time.Duration(firstN)*s.interval {
				n++
				break
			}
		}
	}
	return float64(n) / float64(len(reqs))
}

// window is a stretch of time: a garbage collection.
type window struct{ from, to time.Time }

// gcWindows turns the end times of GC pauses (MemStats.PauseEnd, Unix
// nanoseconds; zeros are unused entries) into windows reaching before
// each end by before and after it by after: the cycle's concurrent mark
// precedes its final pause, whose end is all MemStats keeps.
func gcWindows(pauseEnds []uint64, before, after time.Duration) []window {
	var ws []window
	for _, e := range pauseEnds {
		if e == 0 {
			continue
		}
		t := time.Unix(0, int64(e))
		ws = append(ws, window{t.Add(-before), t.Add(after)})
	}
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	return ws
}

// overlaps says whether the request [at, at+lat] meets any of ws (sorted
// by from).
func overlaps(at time.Time, lat time.Duration, ws []window) bool {
	end := at.Add(lat)
	// The first window starting after the request's end, then back over
	// the ones before it, until they end a second before the request
	// starts (windows are milliseconds long).
	i := sort.Search(len(ws), func(k int) bool { return ws[k].from.After(end) })
	for j := i - 1; j >= 0; j-- {
		if !ws[j].to.Before(at) {
			return true
		}
		if ws[j].from.Add(time.Second).Before(at) {
			break
		}
	}
	return false
}

// overlapShare is the share of reqs that overlap ws.
func overlapShare(reqs []slowReq, ws []window) float64 {
	if len(reqs) == 0 {
		return 0
	}
	n := 0
	for _, r := range reqs {
		if overlaps(r.at, r.lat, ws) {
			n++
		}
	}
	return float64(n) / float64(len(reqs))
}

// parsePauseEnds reads "# PauseEnd = [a b c]" from a heap profile in its
// text form (/debug/pprof/heap?debug=1).
func parsePauseEnds(text string) []uint64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "# PauseEnd = ")
		if !ok {
			continue
		}
		var out []uint64
		for _, f := range strings.Fields(strings.Trim(v, "[]")) {
			if x, err := strconv.ParseUint(f, 10, 64); err == nil {
				out = append(out, x)
			}
		}
		return out
	}
	return nil
}

// proxyPauseEnds reads the GC pause end times of the weft proxies among
// procs from their admin listeners (they run with --pprof).
func (b *bench) proxyPauseEnds(procs []*os.Process) []uint64 {
	var out []uint64
	for _, p := range procs {
		admin, ok := b.admin[p.Pid]
		if !ok {
			continue
		}
		resp, err := http.Get("http://" + admin + "/debug/pprof/heap?debug=1")
		if err != nil {
			continue
		}
		var sb strings.Builder
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "# PauseEnd") {
				sb.WriteString(sc.Text())
			}
		}
		resp.Body.Close()
		out = append(out, parsePauseEnds(sb.String())...)
	}
	return out
}

// ownPauseEnds is this process's (the generator's) GC pause end times.
func ownPauseEnds() []uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.PauseEnd[:]
}

// gcWindowBefore and gcWindowAfter: how far a GC window reaches around
// its final pause's end. A proxy's cycle over its 4-6 MB heap marks for
// about a millisecond of wall time on this machine (GODEBUG=gctrace=1);
// 3 ms before covers the cycle and a request queued behind it.
const (
	gcWindowBefore = 3 * time.Millisecond
	gcWindowAfter  = 500 * time.Microsecond
)

// tailRow is one path's line of the tail table.
type tailRow struct {
	name                string
	p99, p999           float64
	sliceP99            []float64 // each slice's
	addedP99            []float64 // each round's: the path's slice minus the direct path's
	slowProxyGC, allGC  float64   // share of the slowest 1% / of all requests overlapping a GC of the path's weft proxies
	slowOwnGC, allOwnGC float64   // the same for the generator's GCs
	proxies             bool      // the path has weft proxies with GC times
	slowFirst, allFirst float64   // share of the slowest 1% / of all requests among each slice's first requests (firstN)
	sched, gen, app     schedStat // run-queue waits of the path's proxies, of the generator and of the app, during its slices
	requests            int
}

// tailTable computes the tail rows: runs[i] are path i's slices, direct
// the direct path's (nil: no added column), gcs[i] path i's proxies' GC
// windows (nil: none known), own the generator's.
func tailTable(names []string, runs [][]runSlice, direct []runSlice, gcs [][]window, own []window) []tailRow {
	var rows []tailRow
	for i, ss := range runs {
		r := tailRow{name: names[i], p99: pooledQuantile(ss, 0.99), p999: pooledQuantile(ss, 0.999)}
		for k, s := range ss {
			r.sliceP99 = append(r.sliceP99, sliceQuantile(s, 0.99))
			if direct != nil && k < len(direct) {
				r.addedP99 = append(r.addedP99, sliceQuantile(s, 0.99)-sliceQuantile(direct[k], 0.99))
			}
		}
		n := 0
		for _, s := range ss {
			n += len(s.lat)
		}
		slow := slowest(ss, max(1, n/100))
		all := slowest(ss, n)
		if gcs[i] != nil {
			r.proxies = true
			r.slowProxyGC, r.allGC = overlapShare(slow, gcs[i]), overlapShare(all, gcs[i])
		}
		r.slowOwnGC, r.allOwnGC = overlapShare(slow, own), overlapShare(all, own)
		r.slowFirst, r.allFirst = firstShare(slow, ss), firstShare(all, ss)
		rows = append(rows, r)
	}
	return rows
}

// printTail prints the tail table of the run named what.
func printTail(what string, rows []tailRow) {
	fmt.Printf("\nTail of the %s: pooled p99 and p99.9; each slice's p99 and each round's added p99 (the path's slice minus the direct path's slice of the same round), min / median / max; the share of the slowest 1%% of requests (of all requests) that overlapped a GC window (%v before to %v after a GC's final pause) of the path's weft proxies, and of the generator:\n\n", what, gcWindowBefore, gcWindowAfter)
	fmt.Println("| path | p99 ms | p99.9 ms | slice p99 min / med / max | added p99 per round min / med / max | slowest 1% in a proxy GC (all) | slowest 1% in a generator GC (all) | proxies' run-queue wait µs per request (time slices) | generator's | app's | slowest 1% among a slice's first requests (all) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		lo, med, hi := spread(r.sliceP99)
		added := ""
		if len(r.addedP99) > 0 {
			a, b, c := spread(r.addedP99)
			added = fmt.Sprintf("%.3f / %.3f / %.3f", a, b, c)
		}
		pgc := ""
		if r.proxies {
			pgc = fmt.Sprintf("%.0f%% (%.1f%%)", 100*r.slowProxyGC, 100*r.allGC)
		}
		perReq := func(s schedStat) string {
			if r.requests == 0 || s.slices == 0 {
				return ""
			}
			n := float64(r.requests)
			return fmt.Sprintf("%.1f (%.2f)", float64(s.wait.Microseconds())/n, float64(s.slices)/n)
		}
		fmt.Printf("| %s | %.3f | %.3f | %.3f / %.3f / %.3f | %s | %s | %.0f%% (%.1f%%) | %s | %s | %s | %.0f%% (%.1f%%) |\n", r.name, r.p99, r.p999, lo, med, hi, added, pgc,
			100*r.slowOwnGC, 100*r.allOwnGC, perReq(r.sched), perReq(r.gen), perReq(r.app), 100*r.slowFirst, 100*r.allFirst)
	}
}

// printSlowest prints the n slowest requests of each path with their
// scheduled time and which GCs they overlapped.
func printSlowest(names []string, runs [][]runSlice, gcs [][]window, own []window, n int) {
	fmt.Printf("\nThe %d slowest requests of each path (scheduled time, UTC; latency; GC overlapped):\n", n)
	for i, ss := range runs {
		fmt.Printf("\n%s:\n", names[i])
		for _, r := range slowest(ss, n) {
			var tags []string
			if gcs[i] != nil && overlaps(r.at, r.lat, gcs[i]) {
				tags = append(tags, "proxy GC")
			}
			if overlaps(r.at, r.lat, own) {
				tags = append(tags, "generator GC")
			}
			fmt.Printf("  %s %8.3f ms %s\n", r.at.UTC().Format("15:04:05.000000"), ms(r.lat), strings.Join(tags, ", "))
		}
	}
}

// schedStat is what the kernel's scheduler counted for a set of
// processes, every thread of each (/proc/<pid>/task/<tid>/schedstat):
// time spent waiting on a run queue while runnable, and time slices
// (times a thread was put on a CPU). Threads that ended meanwhile drop
// out of the sums, so a delta is a lower bound.
type schedStat struct {
	wait   time.Duration
	slices int64
}

func schedOf(pids []int) schedStat {
	var s schedStat
	for _, pid := range pids {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				continue
			}
			s = s.add(parseSchedstat(string(b)))
		}
	}
	return s
}

// parseSchedstat reads one schedstat line: "<on-CPU ns> <waiting ns>
// <time slices>".
func parseSchedstat(line string) schedStat {
	f := strings.Fields(line)
	if len(f) < 3 {
		return schedStat{}
	}
	w, _ := strconv.ParseInt(f[1], 10, 64)
	n, _ := strconv.ParseInt(f[2], 10, 64)
	return schedStat{time.Duration(w), n}
}

func (s schedStat) add(o schedStat) schedStat { return schedStat{s.wait + o.wait, s.slices + o.slices} }
func (s schedStat) sub(o schedStat) schedStat { return schedStat{s.wait - o.wait, s.slices - o.slices} }

func pidsOf(ps []*os.Process) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Pid)
	}
	return out
}

// roundDiffs is, for each round both paths ran, a's slice quantile q
// minus b's, in ms: the two slices of a round are seconds apart, so the
// machine's slow minutes weigh on both.
func roundDiffs(a, b []runSlice, q float64) []float64 {
	var d []float64
	for k := range min(len(a), len(b)) {
		d = append(d, sliceQuantile(a[k], q)-sliceQuantile(b[k], q))
	}
	return d
}

// signTest is the two-sided sign test's p-value for k rounds of n going
// one way when either way is as likely: the chance of a split at least
// as uneven as k to n-k. Ties are the caller's to leave out of n.
func signTest(k, n int) float64 {
	if n == 0 {
		return 1
	}
	lo := min(k, n-k)
	// P(X <= lo) for X ~ Binomial(n, 1/2), doubled; each term
	// (n choose i) / 2^n in logarithms, so that no n overflows.
	lgN, _ := math.Lgamma(float64(n + 1))
	p := 0.0
	for i := 0; i <= lo; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgR, _ := math.Lgamma(float64(n - i + 1))
		p += math.Exp(lgN - lgI - lgR - float64(n)*math.Ln2)
	}
	return min(2*p, 1)
}

// versus compares a path's slice quantile q with another's, round by
// round.
type versus struct {
	a, b              string
	q                 float64
	diffs             []float64 // a minus b, ms
	below, above, tie int       // rounds a was under, over, equal to b
}

func compareRounds(a, b string, ra, rb []runSlice, q float64) versus {
	v := versus{a: a, b: b, q: q, diffs: roundDiffs(ra, rb, q)}
	for _, d := range v.diffs {
		switch {
		case d < 0:
			v.below++
		case d > 0:
			v.above++
		default:
			v.tie++
		}
	}
	return v
}

// printVersus prints the round-by-round comparisons of one quantile.
func printVersus(vs []versus) {
	if len(vs) == 0 {
		return
	}
	p := fmt.Sprintf("p%g", 100*vs[0].q)
	fmt.Printf("\n%s against haproxy round by round (each round's slice %s of the path minus haproxy's slice %s of the same round; sign test: the chance of a split at least this uneven if neither path were slower):\n\n", p, p, p)
	fmt.Println("| path | against | difference ms min / median / max | rounds below / above / equal | sign test p |")
	fmt.Println("|---|---|---|---|---|")
	for _, v := range vs {
		lo, med, hi := spread(v.diffs)
		fmt.Printf("| %s | %s | %.3f / %.3f / %.3f | %d / %d / %d | %.2f |\n", v.a, v.b, lo, med, hi, v.below, v.above, v.tie, signTest(v.below, v.below+v.above))
	}
}

// versusHAProxy pairs the weft proxy paths with haproxy's of the same
// shape (haproxyTwin), comparing their slices' quantile q.
func versusHAProxy(names []string, runs [][]runSlice, q float64) []versus {
	by := map[string][]runSlice{}
	for i, n := range names {
		by[n] = runs[i]
	}
	var vs []versus
	for i, n := range names {
		h, ok := haproxyTwin(n)
		if !ok {
			continue
		}
		if hr, ok := by[h]; ok {
			vs = append(vs, compareRounds(n, h, runs[i], hr, q))
		}
	}
	return vs
}

// haproxyTwin is the haproxy path of weft proxy path n's shape (one
// proxy or two chained; plaintext, mutual TLS, h2c or h2 over mutual
// TLS); false for a path that is not weft proxy's or has no twin.
func haproxyTwin(n string) (string, bool) {
	var h string
	switch {
	case !strings.Contains(n, "weft prox"), strings.HasSuffix(n, h1ToH2Suffix):
		return "", false // HTTP/1.1 in, HTTP/2 upstream: no haproxy path of that shape
	case strings.HasPrefix(n, "one "):
		h = "haproxy"
	case strings.HasPrefix(n, "two "):
		h = "two haproxies"
	default:
		return "", false
	}
	switch {
	case strings.HasSuffix(n, ", mTLS in"):
		h += ", mTLS in"
	case strings.HasSuffix(n, ", mTLS between"):
		h += ", mTLS between"
	case strings.HasSuffix(n, h2cSuffix):
		h += h2cSuffix
	case strings.HasSuffix(n, h2tlsSuffix):
		h += h2tlsSuffix
	case strings.Contains(n, ","):
		return "", false // tracing: compared elsewhere
	}
	return h, true
}

// stallWindows are the spans of the slowest 1% of ss's requests (each
// from its scheduled time to its answer): on the direct path, the
// machine's stalls.
func stallWindows(ss []runSlice) []window {
	n := 0
	for _, s := range ss {
		n += len(s.lat)
	}
	var ws []window
	for _, r := range slowest(ss, max(1, n/100)) {
		ws = append(ws, window{r.at, r.at.Add(r.lat)})
	}
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	return ws
}

// printCoincidence prints, for each path of a paired run, the share of
// its slowest 1% (and of all its requests) in flight while one of the
// direct path's slowest 1% was: slow at the same moment as a request
// that crossed no proxy, so slow for the machine's reasons.
func printCoincidence(names []string, runs [][]runSlice, direct []runSlice) {
	if direct == nil {
		return
	}
	ws := stallWindows(direct)
	fmt.Printf("\nSlow at the same time as the direct path (paired run): the share of each path's slowest 1%% of requests (of all its requests) in flight while one of the direct path's slowest 1%% was:\n\n")
	fmt.Println("| path | slowest 1% (all) |")
	fmt.Println("|---|---|")
	for i, ss := range runs {
		if strings.HasPrefix(names[i], "app direct") {
			continue
		}
		n := 0
		for _, s := range ss {
			n += len(s.lat)
		}
		fmt.Printf("| %s | %.0f%% (%.1f%%) |\n", names[i], 100*overlapShare(slowest(ss, max(1, n/100)), ws), 100*overlapShare(slowest(ss, n), ws))
	}
}

// stealTicks is the machine's steal time so far (/proc/stat's first
// line, eighth value, in clock ticks of 10 ms): time the hypervisor
// gave a virtual CPU's turn to another machine.
func stealTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseSteal(line)
}

func parseSteal(cpuLine string) int64 {
	f := strings.Fields(cpuLine)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	v, _ := strconv.ParseInt(f[8], 10, 64)
	return v
}

// ownNumGC is the generator's GC cycles so far.
func ownNumGC() uint32 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.NumGC
}
