package main

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Each replica runs with GODEBUG=gctrace=1 (-replica-gc, on by default):
// the Go runtime prints one line on stderr at the end of every GC cycle,
// with the cycle's start (seconds since the process started) and its wall
// time per phase. habench reads those lines as they come, so that every
// run says how many writes a GC cycle of each replica landed in, without
// scraping the replicas between writes (-timeline does that, at a cost in
// replica CPU).

// gcLine matches a gctrace line: "gc 12 @3.456s 2%: 0.018+1.2+0.003 ms
// clock, ..."; the groups are the start and the three clock phases.
var gcLine = regexp.MustCompile(`^gc \d+ @([0-9.]+)s \d+%: ([0-9.]+)\+([0-9.]+)\+([0-9.]+) ms clock`)

// gcCycle is one GC cycle of a replica, as offsets from its start.
type gcCycle struct {
	at, dur time.Duration
}

// gcTrace collects one replica's GC cycles. Its line method runs on the
// goroutine reading the replica's stderr; the others after the writes.
type gcTrace struct {
	mu     sync.Mutex
	cycles []gcCycle
	// base is the estimate of the process's start on this clock: the
	// earliest (line read - cycle end) over every line, the one read with
	// the least delay.
	base time.Time
}

// line takes one stderr line read at at.
func (g *gcTrace) line(at time.Time, line string) {
	c, ok := parseGCLine(line)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cycles = append(g.cycles, c)
	if base := at.Add(-(c.at + c.dur)); g.base.IsZero() || base.Before(g.base) {
		g.base = base
	}
}

// parseGCLine reads the start and the wall time of one gctrace line.
func parseGCLine(line string) (gcCycle, bool) {
	m := gcLine.FindStringSubmatch(line)
	if m == nil {
		return gcCycle{}, false
	}
	var v [4]float64
	for i := range v {
		f, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return gcCycle{}, false
		}
		v[i] = f
	}
	return gcCycle{
		at:  time.Duration(v[0] * float64(time.Second)),
		dur: time.Duration((v[1] + v[2] + v[3]) * float64(time.Millisecond)),
	}, true
}

// during is how many of the replica's GC cycles overlap [from, to], and
// their wall time inside it.
func (g *gcTrace) during(from, to time.Time) (n int, inside time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.cycles {
		s, e := g.base.Add(c.at), g.base.Add(c.at+c.dur)
		if !s.Before(to) || !e.After(from) {
			continue
		}
		n++
		inside += minTime(e, to).Sub(maxTime(s, from))
	}
	return n, inside
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// printReplicaGC prints, per replica and for any replica, how many writes
// one of its GC cycles landed in (between the API call's start and the
// last proxy applied), and those writes' times against the others'.
func (b *bench) printReplicaGC(ws []writeTimes) {
	if len(b.gcs) == 0 {
		return
	}
	num := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	anyHit := make([]bool, len(ws))
	hitBy := make([][]string, len(ws)) // the replicas whose GC landed in each write
	fmt.Printf("writes during which a replica ran a GC cycle (its GODEBUG=gctrace=1 lines; a write lasts from the API call's start to the last proxy applied):\n")
	for i, g := range b.gcs {
		var hit, clean []float64
		var cycles int
		var inside time.Duration
		for k, w := range ws {
			n, in := g.during(w.start, w.start.Add(w.total()))
			cycles += n
			inside += in
			if n > 0 {
				anyHit[k] = true
				hitBy[k] = append(hitBy[k], b.procs[i].Name)
				hit = append(hit, msf(w.total()))
			} else {
				clean = append(clean, msf(w.total()))
			}
		}
		fmt.Printf("  %-4s %d of %d writes (%d cycles, %.1f ms of GC wall time inside writes), their median %s ms; the others' %s ms\n",
			b.procs[i].Name, len(hit), len(ws), cycles, msf(inside), num(median(hit)), num(median(clean)))
	}
	if len(b.gcs) > 1 {
		var hit, clean []float64
		for k, w := range ws {
			if anyHit[k] {
				hit = append(hit, msf(w.total()))
			} else {
				clean = append(clean, msf(w.total()))
			}
		}
		slices.Sort(hit)
		fmt.Printf("  any  %d of %d writes, their median %s ms (%s); the others' %s ms\n",
			len(hit), len(ws), num(median(hit)), strings.Join(strings.Fields(strings.Trim(fmt.Sprintf("%.0f", hit), "[]")), " "), num(median(clean)))
	}
	// The slowest writes (with 50 writes, the p99 is the second slowest).
	totals := make([]time.Duration, len(ws))
	for k, w := range ws {
		totals[k] = w.total()
	}
	order := slowest(totals, 5)
	var parts []string
	for _, k := range order[:len(order)-1] {
		by := "no GC"
		if len(hitBy[k]) > 0 {
			by = "GC of " + strings.Join(hitBy[k], ", ")
		}
		parts = append(parts, fmt.Sprintf("%.1f ms (%s)", msf(totals[k]), by))
	}
	fmt.Printf("  slowest writes: %s\n", strings.Join(parts, "; "))
}
