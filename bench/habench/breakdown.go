package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

// The replicas' histograms the write breakdown reads from /metrics.
var breakdownSeries = []struct{ name, label, what string }{
	{"weft_store_etcd_commit_seconds", "", "etcd commit (writer: Txn sent -> response)"},
	{"weft_store_etcd_learn_seconds", `via="commit"`, "writer learns its own write from the commit (Txn sent -> watcher)"},
	{"weft_store_etcd_learn_seconds", `via="watch"`, "replica learns a write from etcd's watch (Txn sent -> watcher)"},
	{"weft_xds_recompute_seconds", "", "xDS recompute per batch (change received -> snapshots to streams)"},
	{"weft_xds_write_to_ack_seconds", `type="rds"`, "route ACK per proxy (from the replica's commit time: bbolt commit, etcd learn)"},
}

// hist is one Prometheus histogram as scraped: cumulative bucket counts
// by upper bound, sum and count.
type hist struct {
	le     []float64
	counts []float64
	sum    float64
	count  float64
}

// staleReads counts an etcd replica's writes whose first read was
// serializable, by outcome.
const staleReads = "weft_store_etcd_stale_first_reads_total"

// gcPauses is the Go collector's summary of a replica's GC pauses.
const gcPauses = "go_gc_duration_seconds"

// scrape reads the histograms of breakdownSeries from a replica's
// /metrics; a missing series is an empty hist.
func (r *replica) scrape() map[string]*hist {
	out := map[string]*hist{}
	resp, err := (&http.Client{Timeout: adminTimeout}).Get("http://" + r.API + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Counters: a hist with only a count, under "counter " and the
		// series with its labels.
		if rest, ok := strings.CutPrefix(line, staleReads+"{"); ok {
			if sp := strings.LastIndexByte(rest, ' '); sp >= 0 {
				if v, err := strconv.ParseFloat(rest[sp+1:], 64); err == nil {
					out["counter "+rest[:sp]] = &hist{count: v}
				}
			}
			continue
		}
		// The Go collector's GC pauses: their count is the replica's GC
		// cycles (the tail's time line, -timeline).
		if rest, ok := strings.CutPrefix(line, gcPauses); ok && (strings.HasPrefix(rest, "_count ") || strings.HasPrefix(rest, "_sum ")) {
			h := out[gcPauses]
			if h == nil {
				h = &hist{}
				out[gcPauses] = h
			}
			v, err := strconv.ParseFloat(rest[strings.IndexByte(rest, ' ')+1:], 64)
			if err != nil {
				continue
			}
			if strings.HasPrefix(rest, "_count") {
				h.count = v
			} else {
				h.sum = v
			}
			continue
		}
		for _, s := range breakdownSeries {
			key := s.name + s.label
			rest, ok := strings.CutPrefix(line, s.name)
			if !ok || (s.label != "" && !strings.Contains(rest, s.label)) {
				continue
			}
			h := out[key]
			if h == nil {
				h = &hist{}
				out[key] = h
			}
			sp := strings.LastIndexByte(rest, ' ')
			if sp < 0 {
				continue
			}
			v, err := strconv.ParseFloat(rest[sp+1:], 64)
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(rest, "_bucket"):
				i := strings.Index(rest, `le="`)
				if i < 0 {
					continue
				}
				le := rest[i+4:]
				le = le[:strings.IndexByte(le, '"')]
				b, err := strconv.ParseFloat(le, 64)
				if err != nil {
					continue
				}
				h.le, h.counts = append(h.le, b), append(h.counts, v)
			case strings.HasPrefix(rest, "_sum"):
				h.sum = v
			case strings.HasPrefix(rest, "_count"):
				h.count = v
			}
		}
	}
	return out
}

// minus is h - before (the observations between two scrapes).
func (h *hist) minus(before *hist) *hist {
	if before == nil {
		return h
	}
	d := &hist{le: h.le, sum: h.sum - before.sum, count: h.count - before.count}
	for i, c := range h.counts {
		if i < len(before.counts) {
			c -= before.counts[i]
		}
		d.counts = append(d.counts, c)
	}
	return d
}

// add merges o into h (same buckets).
func (h *hist) add(o *hist) *hist {
	if h == nil {
		return o
	}
	d := &hist{le: h.le, sum: h.sum + o.sum, count: h.count + o.count}
	for i, c := range h.counts {
		if i < len(o.counts) {
			c += o.counts[i]
		}
		d.counts = append(d.counts, c)
	}
	return d
}

// quantile interpolates linearly inside the bucket holding quantile q.
func (h *hist) quantile(q float64) float64 {
	if h == nil || h.count <= 0 {
		return math.NaN()
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			upper := h.le[i]
			if math.IsInf(upper, 1) {
				return lower
			}
			if c == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(c-below)
		}
		lower, below = h.le[i], c
	}
	return lower
}

func (h *hist) String() string {
	if h == nil || h.count <= 0 {
		return "-"
	}
	return fmt.Sprintf("mean %.1f, p50 ~%.1f, p99 ~%.1f ms (n=%.0f)", 1000*h.sum/h.count, 1000*h.quantile(0.5), 1000*h.quantile(0.99), h.count)
}

// proc is one process whose CPU the breakdown counts.
type proc struct {
	name string
	pid  int
}

func (b *bench) processes() []proc {
	var out []proc
	for _, r := range b.procs {
		out = append(out, proc{"weft " + r.Name, r.Pid()})
	}
	if b.cluster != nil {
		for _, m := range b.cluster.Members {
			out = append(out, proc{"etcd " + m.Name, m.Pid()})
		}
	}
	return append(out, proc{"habench (1 process: clients, proxies)", os.Getpid()})
}

// writeTimes are one write's moments.
type writeTimes struct {
	start, ok time.Time
	// first and last proxy applied, by replica the proxy is on (zero: none
	// there)
	first, last []time.Time
	// steps are each replica's steps of the write (-timeline; nil
	// without).
	steps []stepTimes
	// cpu is each process's CPU during the write (b.processes' order),
	// from the API call's start to the last proxy applied (at
	// /proc's 10 ms resolution).
	cpu []time.Duration
	// etcd is what each member did during the write and the scrapes
	// after it (-timeline on etcd).
	etcd []map[string]float64
	// gc is habench's own GC cycles during the write (-timeline).
	gc uint64
	// sent is when the writer sent the write's commit to etcd (-timeline
	// on etcd; zero: not known).
	sent time.Time
}

// printBreakdown prints, over the writes, the p50/p99 of each step and
// the replicas' own histograms and CPU.
func (b *bench) printBreakdown(ws []writeTimes, before, after []map[string]*hist, cpu0, cpu1 []time.Duration, elapsed time.Duration) {
	fmt.Println("breakdown over the writes, p50 / p99 / max (ms from the API call's start):")
	row := func(name string, f func(w writeTimes) (time.Duration, bool)) {
		var d []time.Duration
		for _, w := range ws {
			if v, ok := f(w); ok {
				d = append(d, v)
			}
		}
		if len(d) == 0 {
			return
		}
		slices.Sort(d)
		fmt.Printf("  %-44s %7.1f / %7.1f / %7.1f\n", name, msf(pct(d, 50)), msf(pct(d, 99)), msf(d[len(d)-1]))
	}
	row("API call -> 2xx", func(w writeTimes) (time.Duration, bool) { return w.ok.Sub(w.start), true })
	for i, r := range b.procs {
		row(fmt.Sprintf("-> first proxy applied on %s", r.Name), func(w writeTimes) (time.Duration, bool) {
			return w.first[i].Sub(w.start), !w.first[i].IsZero()
		})
		row(fmt.Sprintf("-> last proxy applied on %s", r.Name), func(w writeTimes) (time.Duration, bool) {
			return w.last[i].Sub(w.start), !w.last[i].IsZero()
		})
	}
	row("2xx -> last proxy applied (all replicas)", func(w writeTimes) (time.Duration, bool) {
		var last time.Time
		for _, t := range w.last {
			if t.After(last) {
				last = t
			}
		}
		return last.Sub(w.ok), true
	})
	fmt.Println("replicas' histograms over the writes (from /metrics; percentiles interpolated in buckets):")
	var merged map[string]*hist = map[string]*hist{}
	for i, r := range b.procs {
		for _, s := range breakdownSeries {
			key := s.name + s.label
			a := after[i][key]
			if a == nil {
				continue
			}
			d := a.minus(before[i][key])
			if d.count <= 0 {
				continue
			}
			merged[key] = merged[key].add(d)
			fmt.Printf("  %s: %s: %s\n", r.Name, s.what, d)
		}
	}
	counters := map[string]float64{}
	for i := range b.procs {
		for k, h := range after[i] {
			if strings.HasPrefix(k, "counter ") {
				counters[strings.TrimPrefix(k, "counter ")] += h.minus(before[i][k]).count
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(counters)) {
		fmt.Printf("  all replicas: %s{%s: %.2f per write\n", staleReads, k, counters[k]/float64(len(ws)))
	}
	if len(b.procs) > 1 {
		for _, s := range breakdownSeries {
			if h := merged[s.name+s.label]; h != nil {
				fmt.Printf("  all replicas: %s: %s\n", s.what, h)
			}
		}
	}
	during := "the writes"
	if b.paired {
		during = "this setup's own writes (the other's between them not counted)"
	}
	fmt.Printf("CPU during %s (%.1f s wall, %d writes; 2 cores = %.1f CPU-s):\n", during, elapsed.Seconds(), len(ws), 2*elapsed.Seconds())
	procs := b.processes()
	type use struct {
		name string
		d    time.Duration
	}
	var uses []use
	var total time.Duration
	for i, p := range procs {
		d := cpu1[i] - cpu0[i]
		total += d
		uses = append(uses, use{p.name, d})
	}
	sort.SliceStable(uses, func(i, j int) bool { return uses[i].d > uses[j].d })
	for _, u := range uses {
		fmt.Printf("  %-40s %6.2f CPU-s (%5.1f ms per write, %4.0f%% of one core)\n", u.name, u.d.Seconds(), msf(u.d)/float64(len(ws)), 100*u.d.Seconds()/elapsed.Seconds())
	}
	fmt.Printf("  %-40s %6.2f CPU-s (%4.0f%% of two cores)\n", "total", total.Seconds(), 50*total.Seconds()/elapsed.Seconds())
	if b.idleCPU > 0 {
		var members time.Duration
		for i, p := range procs {
			if strings.HasPrefix(p.name, "etcd ") {
				members += cpu1[i] - cpu0[i]
			}
		}
		above := members.Seconds() - b.idleCPU*elapsed.Seconds()
		fmt.Printf("  etcd members above their idle rate: %.1f ms per write (%.1f during the writes, %.1f idle over as long)\n",
			1000*above/float64(len(ws)), msf(members)/float64(len(ws)), 1000*b.idleCPU*elapsed.Seconds()/float64(len(ws)))
	}
}

// measureIdle measures the etcd members' CPU and requests with every
// proxy connected and nothing written: what the replicas cost etcd
// without writes (the endpoint probe, watches, keepalives).
func (b *bench) measureIdle(ctx context.Context) error {
	if b.cluster == nil || b.idle <= 0 {
		return nil
	}
	procs := b.processes()
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i] = procstat.CPU(p.pid)
	}
	etcd0 := b.scrapeEtcd()
	began := time.Now()
	t := time.NewTimer(b.idle)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	elapsed := time.Since(began)
	etcd1 := b.scrapeEtcd()
	fmt.Printf("idle %.1f s (every proxy connected, no writes), CPU per second:", elapsed.Seconds())
	var members time.Duration
	for i, p := range procs {
		d := procstat.CPU(p.pid) - cpu0[i]
		if strings.HasPrefix(p.name, "etcd ") {
			members += d
		}
		fmt.Printf(" %s %.1f ms;", p.name, msf(d)/elapsed.Seconds())
	}
	fmt.Println()
	b.idleCPU = members.Seconds() / elapsed.Seconds()
	b.printEtcdRates("etcd members while idle, per second", etcd0, etcd1, elapsed.Seconds())
	return nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// profileEtcd starts a CPU profile of each etcd member (-etcd-cpu-profile)
// lasting about as long as the writes will; the function returned waits
// for them and writes them to files.
func (b *bench) profileEtcd(ctx context.Context) func() {
	if b.etcdProfile == "" || b.cluster == nil {
		return func() {}
	}
	// About 150 ms per write; at least a second.
	secs := max(1, b.writes*150/1000)
	var wg sync.WaitGroup
	for _, m := range b.cluster.Members {
		wg.Go(func() { // ends when the profile has been read, or with ctx
			url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", m.ClientURL, secs)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return
			}
			resp, err := (&http.Client{Timeout: time.Duration(secs)*time.Second + adminTimeout}).Do(req)
			if err != nil {
				fmt.Fprintf(os.Stderr, "habench: profile of etcd %s: %v\n", m.Name, err)
				return
			}
			defer resp.Body.Close()
			name := filepath.Join(b.etcdProfile, fmt.Sprintf("etcd-%s-%s.pprof", b.label(), m.Name))
			f, err := os.Create(name)
			if err != nil {
				fmt.Fprintf(os.Stderr, "habench: %v\n", err)
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, io.LimitReader(resp.Body, 64<<20)); err != nil {
				fmt.Fprintf(os.Stderr, "habench: profile of etcd %s: %v\n", m.Name, err)
				return
			}
			fmt.Printf("CPU profile of etcd %s over %d s of the writes: %s\n", m.Name, secs, name)
		})
	}
	return wg.Wait
}

// label names the setup in file names.
func (b *bench) label() string {
	return fmt.Sprintf("%s%d-m%d", b.kind, b.replicas, b.members)
}

// etcdCounters reads an etcd member's request counts by method (gRPC
// calls answered OK) and its WAL fsyncs and backend commits (count and
// seconds) from its /metrics; nil when it cannot be read.
func etcdCounters(clientURL string) map[string]float64 {
	resp, err := (&http.Client{Timeout: adminTimeout}).Get(clientURL + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_code="OK"`):
			i := strings.Index(line, `grpc_method="`)
			if i < 0 {
				continue
			}
			m := line[i+len(`grpc_method="`):]
			out["requests "+m[:strings.IndexByte(m, '"')]] += v
		case strings.HasPrefix(line, "etcd_disk_wal_fsync_duration_seconds_count"):
			out["WAL fsyncs"] = v
		case strings.HasPrefix(line, "etcd_disk_wal_fsync_duration_seconds_sum"):
			out["WAL fsync seconds"] = v
		case strings.HasPrefix(line, "etcd_disk_backend_commit_duration_seconds_count"):
			out["backend commits"] = v
		case strings.HasPrefix(line, "etcd_disk_backend_commit_duration_seconds_sum"):
			out["backend commit seconds"] = v
		}
	}
	return out
}

func (b *bench) scrapeEtcd() []map[string]float64 {
	if b.cluster == nil {
		return nil
	}
	var out []map[string]float64
	for _, m := range b.cluster.Members {
		out = append(out, etcdCounters(m.ClientURL))
	}
	return out
}

// printEtcd prints what the etcd members did per write between two
// scrapes: requests by method, WAL fsyncs and their time.
func (b *bench) printEtcd(before, after []map[string]float64, writes int) {
	b.printEtcdRates("etcd members during the writes, per write", before, after, float64(writes))
}

// printEtcdRates prints the members' counters' growth divided by per
// (writes, or seconds).
func (b *bench) printEtcdRates(title string, before, after []map[string]float64, div float64) {
	if len(before) == 0 || div <= 0 {
		return
	}
	unit := "per write"
	if !strings.HasSuffix(title, unit) {
		unit = "per second"
	}
	fmt.Println(title + " (all members together; gRPC calls answered OK):")
	var keys []string
	for k := range after[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var d float64
		var per []string
		for i := range after {
			if after[i] == nil || before[i] == nil {
				continue
			}
			x := after[i][k] - before[i][k]
			d += x
			if strings.HasSuffix(k, "seconds") {
				x *= 1000
			}
			per = append(per, strconv.FormatFloat(x/div, 'f', 2, 64))
		}
		if d == 0 {
			continue
		}
		if strings.HasSuffix(k, "seconds") {
			fmt.Printf("  %-28s %7.2f ms %s (members: %s)\n", k, 1000*d/div, unit, strings.Join(per, ", "))
			continue
		}
		fmt.Printf("  %-28s %7.2f %s (members: %s)\n", k, d/div, unit, strings.Join(per, ", "))
	}
}
