package main

import (
	"fmt"
	"math"
	"slices"
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
	st.ackMean = mean(ack)
	st.ackMax = math.NaN()
	if ack != nil && ack.count > 0 {
		st.ackMax = 1000 * ack.quantile(1)
	}
	return st
}

// printTimeline prints, per replica, the median over the writes of each
// step's moment, in ms from the API call's start: the write's 2xx; when
// the replica's store watchers had the write (etcd: the writer's commit
// sent, estimated as its 2xx less its commit time, plus the replica's
// learn time); its recompute done (that plus the recompute time: an upper
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
	fmt.Printf("  %-6s %7s %9s %9s %11s %11s %11s %10s %10s\n", "", "2xx", "commit", "learned", "recomputed", "first appl", "last appl", "recompute", "ack mean")
	num := func(w int, v float64) string {
		if math.IsNaN(v) {
			return fmt.Sprintf("%*s", w, "-")
		}
		return fmt.Sprintf("%*.1f", w, v)
	}
	for i, r := range b.procs {
		var okAt, commit, learned, recomputed, first, last, recompute, ack []float64
		for k, w := range ws {
			st := w.steps[i]
			ok := msf(w.ok.Sub(w.start))
			okAt = append(okAt, ok)
			// The write's commit was sent at about 2xx - commit (the
			// writer's own commit time).
			var sent float64 = math.NaN()
			if wi := writer(k); wi >= 0 {
				c := w.steps[wi].commit
				commit = append(commit, c)
				sent = ok - c
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
		fmt.Printf("  %-6s %s %s %s %s %s %s %s %s\n", r.Name, num(7, median(okAt)), num(9, median(commit)), num(9, median(learned)),
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
