package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// With -timeline, each write is followed, once every proxy applied it, by
// a scrape of every replica's /metrics: the difference from the previous
// scrape is that write's alone (one write at a time), which places each
// replica's steps on the write's own time line instead of in histograms
// over the run. The scrapes fall between writes, outside the timed
// window, but the replicas' CPU for them is counted in the run's CPU.

// stepTimes are one replica's steps of one write, from its /metrics (ms;
// NaN: the replica recorded none for the write).
type stepTimes struct {
	commit    float64 // the writer's etcd commit: Txn sent -> response
	learn     float64 // Txn sent -> the replica's store watchers have it (mean over them)
	recompute float64 // the replica's xDS recompute time for the write (every batch, summed)
	ackMean   float64 // the replica's xDS: change received -> a proxy's route ACK, mean over its proxies
	ackMax    float64 // the same, the last proxy (upper bound of its histogram bucket)
	gcCycles  float64 // the replica's GC cycles since the previous scrape
	gcPause   float64 // their stop-the-world pauses, summed (ms)
}

// writeSteps is the difference between two scrapes of one replica.
func writeSteps(before, after map[string]*hist) stepTimes {
	d := func(name, label string) *hist {
		a := after[name+label]
		if a == nil {
			return nil
		}
		return a.minus(before[name+label])
	}
	mean := func(h *hist) float64 {
		if h == nil || h.count <= 0 {
			return math.NaN()
		}
		return 1000 * h.sum / h.count
	}
	sum := func(h *hist) float64 {
		if h == nil || h.count <= 0 {
			return math.NaN()
		}
		return 1000 * h.sum
	}
	var st stepTimes
	st.commit = mean(d("weft_store_etcd_commit_seconds", ""))
	var learn *hist
	if c, w := d("weft_store_etcd_learn_seconds", `via="commit"`), d("weft_store_etcd_learn_seconds", `via="watch"`); c != nil && w != nil {
		learn = c.add(w)
	} else if c != nil {
		learn = c
	} else {
		learn = w
	}
	st.learn = mean(learn)
	st.recompute = sum(d("weft_xds_recompute_seconds", ""))
	ack := d("weft_xds_write_to_ack_seconds", `type="rds"`)
	if gc := d(gcPauses, ""); gc != nil {
		st.gcCycles, st.gcPause = gc.count, 1000*gc.sum
	}
	st.ackMean = mean(ack)
	st.ackMax = math.NaN()
	if ack != nil && ack.count > 0 {
		st.ackMax = 1000 * ack.quantile(1)
	}
	return st
}

// printTimeline prints, per replica, the median over the writes of each
// step's moment, in ms from the API call's start: the write's 2xx; when
// the writer sent its commit (sentAt); when the replica's store watchers
// had the write (etcd: the commit sent plus the replica's learn time); its recompute done (that plus the recompute time: an upper
// bound on the first push's start); its first and last proxy applied.
// What lies between "recompute done" and "first proxy applied" is the
// push: marshalling, the stream's queue, the socket, the proxy.
func (b *bench) printTimeline(ws []writeTimes) {
	if len(ws) == 0 || ws[0].steps == nil {
		return
	}
	writer := func(k int) int {
		if b.kind == "bbolt" {
			return -1
		}
		return k % len(b.procs)
	}
	fmt.Println("time line per write, median over the writes (ms from the API call's start; replica steps from its /metrics, one scrape after each write):")
	fmt.Printf("  %-6s %7s %9s %9s %9s %11s %11s %11s %10s %10s\n", "", "2xx", "sent", "commit", "learned", "recomputed", "first appl", "last appl", "recompute", "ack mean")
	num := func(w int, v float64) string {
		if math.IsNaN(v) {
			return fmt.Sprintf("%*s", w, "-")
		}
		return fmt.Sprintf("%*.1f", w, v)
	}
	for i, r := range b.procs {
		var okAt, sentMs, commit, learned, recomputed, first, last, recompute, ack []float64
		for k, w := range ws {
			st := w.steps[i]
			ok := msf(w.ok.Sub(w.start))
			okAt = append(okAt, ok)
			var sent float64 = math.NaN()
			if wi := writer(k); wi >= 0 {
				c := w.steps[wi].commit
				commit = append(commit, c)
				sent = sentAt(w, c)
				sentMs = append(sentMs, sent)
			}
			l := sent + st.learn
			if b.kind == "bbolt" {
				l = math.NaN()
			}
			learned = append(learned, l)
			recomputed = append(recomputed, l+st.recompute)
			recompute = append(recompute, st.recompute)
			ack = append(ack, st.ackMean)
			if !w.first[i].IsZero() {
				first = append(first, msf(w.first[i].Sub(w.start)))
				last = append(last, msf(w.last[i].Sub(w.start)))
			}
		}
		fmt.Printf("  %-6s %s %s %s %s %s %s %s %s %s\n", r.Name, num(7, median(okAt)), num(9, median(sentMs)), num(9, median(commit)), num(9, median(learned)),
			num(11, median(recomputed)), num(11, median(first)), num(11, median(last)), num(10, median(recompute)), num(10, median(ack)))
	}
}

// median of the values that are numbers; NaN when none is.
func median(v []float64) float64 {
	v = slices.DeleteFunc(slices.Clone(v), math.IsNaN)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// printTail prints the time line of the n slowest writes one by one, and
// the median write's to compare: the p99 of 50 writes is the second
// slowest, and a median over the writes says nothing of what made those
// slow. For each: the 2xx and the writer's commit; per replica, when it
// had the write, its recompute, its first and last proxy applied and its
// GC cycles; each process's CPU during the write; habench's own GC
// cycles; what the etcd members did (backend commits, WAL fsyncs).
func (b *bench) printTail(ws []writeTimes, procs []proc, n int) {
	if n <= 0 || len(ws) == 0 || ws[0].steps == nil {
		return
	}
	totals := make([]time.Duration, len(ws))
	for i, w := range ws {
		totals[i] = w.total()
	}
	total := func(w writeTimes) time.Duration { return w.total() }
	show := slowest(totals, n)
	fmt.Printf("the %d slowest writes, then the median one (ms from the API call's start; per replica: had the write, recompute, first / last proxy applied, GC cycles and pauses since the previous write's scrape):\n", len(show)-1)
	num := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	for rank, k := range show {
		w := ws[k]
		tag := fmt.Sprintf("#%d", rank+1)
		if rank == len(show)-1 {
			tag = "median"
		}
		ok := msf(w.ok.Sub(w.start))
		sent := math.NaN()
		line := fmt.Sprintf("  %s: write %d, all applied %.1f, 2xx %.1f", tag, k, msf(total(w)), ok)
		if b.kind == "etcd" {
			wi := k % len(b.procs)
			c := w.steps[wi].commit
			sent = sentAt(w, c)
			line += fmt.Sprintf(" (through %s, commit sent %s, commit %s)", b.procs[wi].Name, num(sent), num(c))
		}
		fmt.Println(line + fmt.Sprintf("; habench GC cycles %d", w.gc))
		for i, r := range b.procs {
			st := w.steps[i]
			had := "-"
			if b.kind == "etcd" {
				had = num(sent + st.learn)
			}
			first, last := math.NaN(), math.NaN()
			if !w.first[i].IsZero() {
				first, last = msf(w.first[i].Sub(w.start)), msf(w.last[i].Sub(w.start))
			}
			fmt.Printf("    %-4s had %6s  recompute %5s  first %6s  last %6s  GC %.0f (%.2f ms)\n", r.Name, had, num(st.recompute), num(first), num(last), st.gcCycles, st.gcPause)
		}
		var cpu []string
		for i, p := range procs {
			if i < len(w.cpu) {
				name, _ := strings.CutPrefix(p.name, "weft ")
				name, _, _ = strings.Cut(name, " (")
				cpu = append(cpu, fmt.Sprintf("%s %.0f", name, msf(w.cpu[i])))
			}
		}
		fmt.Printf("    CPU ms: %s\n", strings.Join(cpu, ", "))
		if len(w.etcd) > 0 {
			var commits, fsyncs []string
			var commitS, fsyncS float64
			for _, m := range w.etcd {
				commits = append(commits, fmt.Sprintf("%.0f", m["backend commits"]))
				fsyncs = append(fsyncs, fmt.Sprintf("%.0f", m["WAL fsyncs"]))
				commitS += m["backend commit seconds"]
				fsyncS += m["WAL fsync seconds"]
			}
			fmt.Printf("    etcd members: backend commits %s (%.1f ms together), WAL fsyncs %s (%.1f ms together)\n",
				strings.Join(commits, "/"), 1000*commitS, strings.Join(fsyncs, "/"), 1000*fsyncS)
		}
	}
}

// seqKey is the key every weft write on etcd puts, with the time its
// commit was sent (the writer's clock, this machine's) as its value: the
// anchor of the replicas' learn times (internal/store/etcd, local.go).
const seqKey = "/weft/meta/seq"

// commitSent reads when the last write's commit was sent (zero when it
// cannot be read). Nothing else writes between two timed writes, so the
// sequence key's value is that write's.
func (b *bench) commitSent(ctx context.Context) time.Time {
	if b.etcdClient == nil {
		return time.Time{}
	}
	rctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	resp, err := b.etcdClient.Get(rctx, seqKey)
	if err != nil || len(resp.Kvs) == 0 {
		return time.Time{}
	}
	n, err := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// sentAt is when write w's commit was sent, in ms from its API call's
// start: read from etcd when known, else estimated as the 2xx less the
// writer's commit time (which the writer's busy cores can delay by
// several ms: the 2xx then comes after other replicas' proxies applied
// the write).
func sentAt(w writeTimes, commit float64) float64 {
	if !w.sent.IsZero() {
		return msf(w.sent.Sub(w.start))
	}
	return msf(w.ok.Sub(w.start)) - commit
}

// gcCycles is how many GC cycles this process has completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// printGC prints how many writes habench's own GC landed in, and how long
// those took against the others: habench runs 1,000 xDS clients in one
// process, whose GC takes CPU that real proxies, on other machines, would
// not take from the replicas.
func (b *bench) printGC(ws []writeTimes) {
	var hit, clean []float64
	for _, w := range ws {
		if w.gc > 0 {
			hit = append(hit, msf(w.total()))
		} else {
			clean = append(clean, msf(w.total()))
		}
	}
	num := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	slices.Sort(hit)
	how := "habench's heap collected after each write, outside the timed windows (-gc-between)"
	if b.paired {
		how = "habench's heap collected after each pair, outside the timed windows (-gc-between)"
	}
	if !b.gcBetween {
		how = "-gc-between=false: its GC may land inside the timed windows"
	}
	fmt.Printf("writes during which habench ran a GC cycle (%s): %d of %d, median %s ms (%s); the others' median %s ms\n",
		how, len(hit), len(ws), num(median(hit)), strings.Join(strings.Fields(strings.Trim(fmt.Sprintf("%.0f", hit), "[]")), " "), num(median(clean)))
}

// total is the write's time from the API call's start to the last proxy
// applied it.
func (w writeTimes) total() time.Duration {
	var last time.Time
	for _, t := range w.last {
		if t.After(last) {
			last = t
		}
	}
	return last.Sub(w.start)
}

// slowest returns the indices of the n longest of totals, longest first
// (ties in write order), then the index of the median one.
func slowest(totals []time.Duration, n int) []int {
	if len(totals) == 0 {
		return nil
	}
	order := make([]int, len(totals))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, c int) int { return cmp.Compare(totals[c], totals[a]) })
	return append(slices.Clone(order[:min(n, len(order))]), order[len(order)/2])
}
