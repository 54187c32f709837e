package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

// runPaired starts both setups, each with its own replicas, store and
// proxies, then makes their writes in pairs (pairOrder), each write timed
// until every proxy of its own setup applied it, and prints each setup's
// figures and the paired comparison; out, when not empty, gets each
// pair's times (-pairs-out).
func runPaired(ctx context.Context, pair [2]*bench, goal time.Duration, out string) error {
	for _, b := range pair {
		defer b.close()
	}
	for _, b := range pair {
		if err := b.start(ctx); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	for _, b := range pair {
		if err := b.measureIdle(ctx); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	fmt.Printf("\nboth setups up (load average %s); %d writes each, in pairs: %s then %s on even pairs, the other way on odd ones\n",
		loadavg.String(), pair[0].writes, pair[0].name, pair[1].name)
	var runs [2]*writeRun
	for i, b := range pair {
		runs[i] = b.beginWrites(ctx)
	}
	// idle[i] is each of setup i's processes' CPU (replicas and members,
	// not habench's, which both share) during the other setup's writes.
	var idle [2][]time.Duration
	for i := range idle {
		idle[i] = make([]time.Duration, len(runs[i].procs)-1)
	}
	// gcs: habench's forced GC after each pair (-gc-between). One per pair,
	// not per write: with both setups' proxies habench's heap is twice a
	// sequential run's, a collection took 200 ms on the loaded machine,
	// and one write allocates too little for habench to start a cycle
	// of its own within the next (each run's count of writes habench's GC
	// landed in says whether it did).
	var gcs []time.Duration
	for k := range pair[0].writes {
		for _, i := range pairOrder(k) {
			other := runs[1-i].procs[:len(runs[1-i].procs)-1]
			c0 := cpuOf(other)
			if err := pair[i].write(ctx, runs[i], k); err != nil {
				return fmt.Errorf("%s: %w", pair[i].name, err)
			}
			for j, c := range cpuOf(other) {
				idle[1-i][j] += c - c0[j]
			}
		}
		if pair[0].gcBetween {
			gcs = append(gcs, collect())
		}
	}
	for i, b := range pair {
		fmt.Printf("\n== %s: its %d writes\n", b.name, b.writes)
		b.endWrites(runs[i])
	}
	fmt.Println()
	if len(gcs) > 0 {
		slices.Sort(gcs)
		fmt.Printf("habench's forced GCs, after each pair (-gc-between, outside the timed windows): p50 %s max %s\n", ms(pct(gcs, 50)), ms(gcs[len(gcs)-1]))
	}
	for i, b := range pair {
		printIdleCost(b.name, pair[1-i].name, runs[i], runs[1-i], idle[i])
	}
	printPaired(pair[0].name, pair[1].name, runs[0].all, runs[1].all, goal)
	if out != "" {
		if err := writePairs(out, pair[0].name, pair[1].name, runs[0].all, runs[1].all); err != nil {
			return err
		}
	}
	for _, b := range pair {
		if b.failover && b.replicas > 1 {
			if err := b.measureFailover(ctx); err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
		}
	}
	return nil
}

// printIdleCost prints what setup name's replicas and members used while
// the other setup wrote (idle, by process, from run's procs without
// habench), against what they used during their own writes.
func printIdleCost(name, other string, run, otherRun *writeRun, idle []time.Duration) {
	var idleR, idleM, ownR, ownM time.Duration
	for j, p := range run.procs[:len(idle)] {
		if strings.HasPrefix(p.name, "etcd ") {
			idleM, ownM = idleM+idle[j], ownM+run.own[j]
		} else {
			idleR, ownR = idleR+idle[j], ownR+run.own[j]
		}
	}
	per := func(d time.Duration, n int) float64 { return msf(d) / float64(n) }
	fmt.Printf("idle cost: while %s wrote, %s's replicas used %.1f ms and its members %.1f ms of CPU per write (%.0f%% of one core together), against %.1f and %.1f ms per write of their own\n",
		other, name, per(idleR, len(otherRun.all)), per(idleM, len(otherRun.all)), 100*(idleR+idleM).Seconds()/otherRun.ownWall.Seconds(),
		per(ownR, len(run.all)), per(ownM, len(run.all)))
}

// printPaired prints the paired comparison of B (nameB) against A.
func printPaired(nameA, nameB string, a, b []time.Duration, goal time.Duration) {
	st := comparePairs(a, b, goal, rand.New(rand.NewPCG(1, 2)))
	fmt.Printf("paired comparison over %d pairs, write -> all proxies applied:\n", st.pairs)
	for _, s := range []struct {
		name string
		sum  summary
	}{{nameA, st.a}, {nameB, st.b}} {
		fmt.Printf("  %-10s p50 %s p99 %s max %s\n", s.name, ms(s.sum.p50), ms(s.sum.p99), ms(s.sum.max))
	}
	fmt.Printf("  %s - %s, pair by pair: median %s, p90 %s; median where %s wrote first %s, where %s did %s\n",
		nameB, nameA, ms(st.diffMedian), ms(st.diffP90), nameA, ms(st.aFirst), nameB, ms(st.bFirst))
	fmt.Printf("  rank correlation of a pair's two writes %.2f (what the pairing takes out: the machine's state both shared)\n", st.rho)
	fmt.Printf("  difference of the p50s %s (95%% interval %s to %s); of the p99s %s (95%% interval %s to %s; bootstrap, %d resamples of the pairs)\n",
		ms(st.p50Diff), ms(st.p50CI[0]), ms(st.p50CI[1]), ms(st.p99Diff), ms(st.p99CI[0]), ms(st.p99CI[1]), resamples)
	fmt.Printf("  goal, %s within %s of %s at p99: %s; %.0f%% of the resamples at or under it\n",
		nameB, ms(goal), nameA, verdict(st.p99CI, goal), 100*st.p99Within)
}

// pairsHeader opens a -pairs-out file; the setups' names follow it.
const pairsHeader = "# habench pairs, ms:"

// writePairs writes each pair's two times, in ms, one pair a line, after
// a line naming the setups.
func writePairs(path, nameA, nameB string, a, b []time.Duration) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s %s\n", pairsHeader, nameA, nameB)
	for k := range a {
		fmt.Fprintf(&sb, "%.3f %.3f\n", msf(a[k]), msf(b[k]))
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write the pairs: %w", err)
	}
	return nil
}

// readPairs reads a file writePairs wrote: the setups' names and the
// pairs.
func readPairs(r io.Reader) (nameA, nameB string, a, b []time.Duration, err error) {
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if line == 1 {
			rest, ok := strings.CutPrefix(sc.Text(), pairsHeader)
			names := strings.Fields(rest)
			if !ok || len(names) != 2 {
				return "", "", nil, nil, fmt.Errorf("line 1: not a habench pairs file (want %q and two setups)", pairsHeader)
			}
			nameA, nameB = names[0], names[1]
			continue
		}
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return "", "", nil, nil, fmt.Errorf("line %d: want two times in ms, got %q", line, sc.Text())
		}
		var v [2]float64
		for i := range v {
			if v[i], err = strconv.ParseFloat(f[i], 64); err != nil || !(v[i] >= 0 && v[i] < 1e9) { // NaN, negative or over 11 days: not a write's time
				return "", "", nil, nil, fmt.Errorf("line %d: %q is not a time in ms", line, f[i])
			}
		}
		a = append(a, time.Duration(v[0]*float64(time.Millisecond)))
		b = append(b, time.Duration(v[1]*float64(time.Millisecond)))
	}
	if err := sc.Err(); err != nil {
		return "", "", nil, nil, err
	}
	if line == 0 {
		return "", "", nil, nil, fmt.Errorf("empty")
	}
	return nameA, nameB, a, b, nil
}

// pool prints the paired comparison over the pairs of several -pairs-out
// files, which must name the same setups in the same order.
func pool(paths []string, goal time.Duration) error {
	var nameA, nameB string
	var a, b []time.Duration
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		na, nb, pa, pb, err := readPairs(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if nameA == "" {
			nameA, nameB = na, nb
		} else if na != nameA || nb != nameB {
			return fmt.Errorf("%s compares %s with %s, %s compared %s with %s", p, na, nb, paths[0], nameA, nameB)
		}
		a, b = append(a, pa...), append(b, pb...)
	}
	if len(a) == 0 {
		return fmt.Errorf("no pairs in %s", strings.Join(paths, ", "))
	}
	fmt.Printf("pooled over %d files:\n", len(paths))
	printPaired(nameA, nameB, a, b, goal)
	return nil
}
