package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

// writeRun is one setup's writes in progress: what was read before the
// first, and each write's figures as they come. A sequential run makes
// them one after the other; a paired run (-paired) interleaves two
// setups' writes, each setup with its own writeRun.
type writeRun struct {
	all, each []time.Duration // each write to the last proxy; each proxy's
	times     []writeTimes
	before    []map[string]*hist // the replicas' histograms before the first write
	last      []map[string]*hist // -timeline: the scrape after the previous write
	procs     []proc
	cpu0      []time.Duration // each process's CPU before the first write
	etcd0     []map[string]float64
	lastEtcd  []map[string]float64 // -timeline: the members' counters after the previous write
	began     time.Time
	// own is each process's CPU during this setup's own writes only,
	// and ownWall their windows' wall time together (-paired: the other
	// setup's writes fall between them).
	own     []time.Duration
	ownWall time.Duration
	// gcs is how long each forced GC after a write took (-gc-between;
	// -paired: after a pair, not kept here).
	gcs      []time.Duration
	profiled func()
	perfDone func()
}

// measureWrites changes the route's weights writes times, each through
// the next replica, and times each from before the API call until every
// proxy applied it.
func (b *bench) measureWrites(ctx context.Context) error {
	run := b.beginWrites(ctx)
	for k := range b.writes {
		if err := b.write(ctx, run, k); err != nil {
			return err
		}
		if b.gcBetween {
			run.gcs = append(run.gcs, collect())
		}
	}
	b.endWrites(run)
	return nil
}

// beginWrites reads the replicas' histograms, every process's CPU and the
// members' counters before the first write, and starts the profiles.
func (b *bench) beginWrites(ctx context.Context) *writeRun {
	if b.gcBetween {
		runtime.GC()
	}
	run := &writeRun{before: make([]map[string]*hist, len(b.procs)), procs: b.processes()}
	for i, r := range b.procs {
		run.before[i] = r.scrape()
	}
	run.last = slices.Clone(run.before)
	run.cpu0 = cpuOf(run.procs)
	run.own = make([]time.Duration, len(run.procs))
	run.etcd0 = b.scrapeEtcd()
	run.lastEtcd = run.etcd0
	run.began = time.Now()
	run.profiled = b.profileEtcd(ctx)
	run.perfDone = b.profileReplicas()
	return run
}

// write makes write k (write number k+2, split) and times it until every proxy of
// the setup applied it.
func (b *bench) write(ctx context.Context, run *writeRun, k int) error {
	w := uint32(k + 2)
	b.track.arm(w, b.proxies)
	wcpu0 := cpuOf(run.procs)
	gc0 := gcCycles()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(b.writers(k)))
	for i, r := range b.writers(k) {
		wg.Go(func() { errs[i] = setWeights(ctx, client(r), w) }) // ends with the API call
	}
	wg.Wait()
	ok := time.Now()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("write %d: %w", k, err)
		}
	}
	if missing := b.track.wait(ctx, 30*time.Second); missing > 0 {
		return fmt.Errorf("write %d: %d proxies did not apply it within 30 s", k, missing)
	}
	total := time.Since(start)
	run.all = append(run.all, total)
	run.ownWall += total
	wt := writeTimes{start: start, ok: ok, first: make([]time.Time, len(b.procs)), last: make([]time.Time, len(b.procs))}
	wt.gc = gcCycles() - gc0
	for i, c := range cpuOf(run.procs) {
		wt.cpu = append(wt.cpu, c-wcpu0[i])
		run.own[i] += c - wcpu0[i]
	}
	run.each = append(run.each, b.track.latencies(start)...)
	for _, a := range b.track.applies() {
		if a.replica < 0 || a.replica >= len(b.procs) {
			continue
		}
		if wt.first[a.replica].IsZero() || a.at.Before(wt.first[a.replica]) {
			wt.first[a.replica] = a.at
		}
		if a.at.After(wt.last[a.replica]) {
			wt.last[a.replica] = a.at
		}
	}
	if b.timeline {
		wt.sent = b.commitSent(ctx)
		wt.steps = make([]stepTimes, len(b.procs))
		for i, r := range b.procs {
			now := r.scrape()
			wt.steps[i] = writeSteps(run.last[i], now)
			run.last[i] = now
		}
		if now := b.scrapeEtcd(); now != nil {
			for i := range now {
				d := map[string]float64{}
				for key, v := range now[i] {
					if run.lastEtcd[i] != nil {
						v -= run.lastEtcd[i][key]
					}
					d[key] = v
				}
				wt.etcd = append(wt.etcd, d)
			}
			run.lastEtcd = now
		}
	}
	run.times = append(run.times, wt)
	return nil
}

// collect collects habench's heap, outside the timed windows
// (-gc-between), so that its own GC (1,000 simulated proxies' worth per
// setup) does not land inside the next write; it returns how long that
// took.
func collect() time.Duration {
	t := time.Now()
	runtime.GC()
	return time.Since(t)
}

// endWrites stops the profiles and prints the setup's figures over its
// writes. With -paired, the CPU breakdown counts each process's CPU during
// the setup's own writes only, over their windows' wall time: the other
// setup's writes fell between them.
func (b *bench) endWrites(run *writeRun) {
	elapsed := time.Since(run.began)
	etcd1 := b.scrapeEtcd()
	run.perfDone()
	run.profiled()
	cpu0, cpu1 := run.cpu0, cpuOf(run.procs)
	if b.paired {
		cpu0, cpu1, elapsed = make([]time.Duration, len(run.own)), run.own, run.ownWall
	}
	after := make([]map[string]*hist, len(b.procs))
	for i, r := range b.procs {
		after[i] = r.scrape()
	}
	all, each := slices.Sorted(slices.Values(run.all)), slices.Sorted(slices.Values(run.each))
	fmt.Printf("write -> all %d proxies applied: p50 %s p99 %s max %s over %d writes; per proxy p50 %s p99 %s\n",
		b.proxies, ms(pct(all, 50)), ms(pct(all, 99)), ms(all[len(all)-1]), len(all), ms(pct(each, 50)), ms(pct(each, 99)))
	b.printGC(run.times)
	if len(run.gcs) > 0 {
		gcs := slices.Sorted(slices.Values(run.gcs))
		fmt.Printf("habench's forced GCs, after each write (-gc-between, outside the timed windows): p50 %s max %s\n", ms(pct(gcs, 50)), ms(gcs[len(gcs)-1]))
	}
	b.printReplicaGC(run.times)
	b.printBreakdown(run.times, run.before, after, cpu0, cpu1, elapsed)
	b.printTimeline(run.times)
	b.printTail(run.times, run.procs, b.tail)
	b.printEtcd(run.etcd0, etcd1, b.writes)
}

// cpuOf is each process's CPU so far.
func cpuOf(procs []proc) []time.Duration {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		out[i] = procstat.CPU(p.pid)
	}
	return out
}
