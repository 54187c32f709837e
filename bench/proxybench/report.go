package main

import (
	"fmt"
	"time"
)

// The report of the fixed-rate run: its table (rate, latency, CPU and
// memory per path), the -mem table, the latency each path adds to app
// direct, the B builds' ratios to A, and the tail rows (tail.go).

// tailSet is the fixed-rate run's tail (tail.go), path by path in run's
// order.
type tailSet struct {
	names []string
	runs  [][]runSlice
	gcs   [][]window // with -profile or -gc-times, the path's weft proxies' GCs
	own   []window   // the generator's GCs
	rows  []tailRow
}

// tails reads the fixed-rate run's tail: it must come before
// fixedReport, whose summarize sorts the pooled latencies. conns is the
// generator's connections (-conns), the requests that open a slice.
func (b *bench) tails(run []target, accs []pathRun, conns int) tailSet {
	var tailNames []string
	var tailRuns [][]runSlice
	var tailGCs [][]window
	var directSlices []runSlice
	for i, t := range run {
		if t.name == "app direct" {
			directSlices = accs[i].slices
		}
	}
	for i, t := range run {
		tailNames = append(tailNames, t.name)
		tailRuns = append(tailRuns, accs[i].slices)
		var ws []window
		if _, weft := b.admin[t.procs[0].Pid]; weft && b.pprof {
			ws = gcWindows(b.proxyPauseEnds(t.procs), gcWindowBefore, gcWindowAfter)
		}
		tailGCs = append(tailGCs, ws)
	}
	firstN = conns
	ownGC := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
	var tails []tailRow
	for i, t := range run {
		d := directSlices
		if isH2C(t.name) || t.name == "app direct" {
			d = nil // h2c's direct path is another row; the direct row has no added column
		}
		tr := tailTable(tailNames[i:i+1], tailRuns[i:i+1], d, tailGCs[i:i+1], ownGC)[0]
		tr.sched, tr.gen, tr.app, tr.requests = accs[i].sched, accs[i].gen, accs[i].app, len(accs[i].lat)
		tails = append(tails, tr)
	}
	return tailSet{tailNames, tailRuns, tailGCs, ownGC, tails}
}

// added is the latency a path adds to app direct's (app direct h2c's for
// the HTTP/2 paths), ms.
type added struct {
	name     string
	p50, p99 float64
}

// summary is one path's fixed-rate result and its vCPU per 1,000
// requests/s.
type summary struct {
	r     result
	perK  float64
	rssMB float64 // per proxy, at the end of the path's last slice
}

// report is the fixed-rate run's tables, formatted.
type report struct {
	lines   []string // the table's rows
	memRows []string // -mem's
	adds    []added
	rows    map[string]summary // by path name, for the B / A ratios
}

// fixedReport summarizes each path's fixed-rate slices into the tables'
// rows. With -mem and -profile or -gc-times, it prints each weft path's
// GC cycles during its slices.
func (b *bench) fixedReport(run []target, accs []pathRun) report {
	var fixed, memRows []string
	var direct, directH2C result
	var adds []added
	rows := map[string]summary{}
	for i, t := range run {
		r := summarize(accs[i].lat, accs[i].errors, accs[i].wall)
		mem := accs[i].mem
		if accs[i].memRow != "" {
			memRows = append(memRows, accs[i].memRow)
			if _, weft := b.admin[t.procs[0].Pid]; weft && b.pprof {
				fmt.Printf("GC cycles of %s during its fixed-rate slices (%v, %.0f requests/s): %d\n", t.name, accs[i].wall.Round(time.Millisecond), r.achieved, accs[i].gcs)
			}
		}
		switch {
		case t.name == "app direct":
			direct = r
		case t.name == "app direct"+h2cSuffix:
			directH2C = r
		case isH2C(t.name) && directH2C.achieved > 0:
			adds = append(adds, added{t.name, r.p50 - directH2C.p50, r.p99 - directH2C.p99})
		case !isH2C(t.name) && direct.achieved > 0:
			adds = append(adds, added{t.name, r.p50 - direct.p50, r.p99 - direct.p99})
		}
		n := float64(len(t.procs))
		perK := accs[i].cpu.Seconds() / accs[i].wall.Seconds() / n / (r.achieved / 1000)
		mb := func(kb int64) float64 { return float64(kb) / 1024 / n }
		rows[t.name] = summary{r, perK, mb(mem.rss)}
		fixed = append(fixed, fmt.Sprintf("| %s | %.0f | %.3f | %.3f | %.3f | %d | %.3f | %.1f | %.1f | %.1f |",
			t.name, r.achieved, r.p50, r.p99, r.max, r.errors, perK, mb(mem.rss), mb(mem.pss), mb(mem.private)))
	}
	return report{fixed, memRows, adds, rows}
}

// printFixed prints the fixed-rate run's tables.
func printFixed(o opts, f fixedRun, rep report) {
	order := "the paths' order drawn anew each round"
	if o.fixedOrder {
		order = "the paths in the same order each round"
	}
	fmt.Printf("\nFixed rate %d requests/s for %v per path, in %d interleaved slices of %v (%s), %d connections (latency in ms from the scheduled send time).\n", o.rate, o.dur, o.rounds, o.slice(), order, o.conns)
	fmt.Printf("CPU and memory are the proxy's (each, for two); on the direct row the app's. Load average after the fixed-rate runs: %s; steal time during them (both vCPUs): %s.\n", f.load, f.steal)
	if o.h2() {
		fmt.Printf("On the h2c (and h2 mTLS) paths the %d senders share %d HTTP/2 connections (at most %d streams in flight per connection); added latency is against app direct h2c.\n", o.conns, o.h2cConns, (o.conns+o.h2cConns-1)/o.h2cConns)
	}
	fmt.Println()
	fmt.Println("| path | achieved rps | p50 ms | p99 ms | max ms | errors | vCPU per 1,000 rps | RSS MB | PSS MB | private MB |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, l := range rep.lines {
		fmt.Println(l)
	}
	if len(rep.memRows) > 0 {
		fmt.Printf("\nMemory at the end of each path's last fixed-rate slice, MB per proxy (file-backed: the executable's and shared libraries' pages and other mapped files; the Go columns from weft proxy's admin /memory, runtime/metrics, read after smaps; n/a for a build without it):\n\n")
		fmt.Println("| path | RSS | anonymous | file-backed | private | Go heap objects | Go heap free, not released | runtime, the rest (stacks, span slack, GC metadata), less released |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
		for _, l := range rep.memRows {
			fmt.Println(l)
		}
	}
	if len(rep.adds) > 0 {
		fmt.Printf("\nAdded latency at %d requests/s (path minus app direct, same run):\n\n", o.rate)
		fmt.Println("| path | added p50 ms | added p99 ms |")
		fmt.Println("|---|---|---|")
		for _, a := range rep.adds {
			fmt.Printf("| %s | %.3f | %.3f |\n", a.name, a.p50, a.p99)
		}
	}
	for _, sfx := range []string{"", h2cSuffix, h2tlsSuffix} {
		if a, ok := rep.rows["one weft proxy"+sfx]; ok {
			if b, ok := rep.rows["one weft proxy B"+sfx]; ok {
				fmt.Printf("\nB / A (one weft proxy B%s over one weft proxy%s, same run): vCPU per 1,000 rps %.3f, p50 %.3f, p99 %.3f\n",
					sfx, sfx, b.perK/a.perK, b.r.p50/a.r.p50, b.r.p99/a.r.p99)
			}
		}
	}
}
