package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// window is the split over the last requests, and totals since the start.
type window struct {
	mu     sync.Mutex // protects everything below
	recent []string   // ring of the last len(recent) results; "" is an error
	next   int        // where the next result goes in recent
	filled int        // how many of recent are set
	total  map[string]int
	errors int
	sent   int
	lastEr string // the most recent error, to show why
}

func newWindow(size int) *window {
	return &window{recent: make([]string, size), total: map[string]int{}}
}

func (w *window) add(body string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent++
	if err != nil {
		body = ""
		w.errors++
		w.lastEr = err.Error()
	} else {
		w.total[body]++
	}
	w.recent[w.next] = body
	w.next = (w.next + 1) % len(w.recent)
	w.filled = min(w.filled+1, len(w.recent))
}

// snapshot is a copy of the window for drawing.
type snapshot struct {
	shares  map[string]float64 // percent of the recent requests, by body
	recent  int
	sent    int
	errors  int
	lastErr string
	total   map[string]int
}

func (w *window) snapshot() snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := snapshot{shares: map[string]float64{}, recent: w.filled, sent: w.sent, errors: w.errors, lastErr: w.lastEr, total: maps.Clone(w.total)}
	for _, b := range w.recent[:w.filled] {
		if b != "" {
			s.shares[b] += 100 / float64(w.filled)
		}
	}
	return s
}

// show sends requests at opt.Rate and draws the split until ctx ends.
func show(ctx context.Context, e *env, opt Options, ps *procs) error {
	win := newWindow(200)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // ends with ctx; Wait below
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(opt.Rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			body, err := get(ctx, e.client, e.target)
			if ctx.Err() != nil {
				return
			}
			win.add(body, err)
		}
	}()
	route := &liveRoute{}
	wg.Add(1)
	go func() { defer wg.Done(); route.follow(ctx, e.api) }() // ends with ctx; Wait below
	defer wg.Wait()
	lastRoute := ""

	every := time.Second
	if opt.TTY {
		every = 250 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	drawn := 0
	start := time.Now()
	var counts []proxyCount
	lastStats := time.Time{}
	for {
		select {
		case <-ctx.Done():
			// The proxies' final counts: ctx has ended, so ask with a
			// context of its own.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			counts = proxyCounts(sctx, e.proxies, counts)
			cancel()
			s := win.snapshot()
			fmt.Fprintf(opt.Out, "weft demo: %d requests in %s, %d errors; overall %s; through %s\n",
				s.sent, time.Since(start).Round(time.Second), s.errors, overall(s), formatProxies(counts))
			return nil
		case <-tick.C:
		}
		if err := ps.anyFailed(); err != nil {
			return err
		}
		if time.Since(lastStats) >= time.Second {
			counts = proxyCounts(ctx, e.proxies, counts)
			lastStats = time.Now()
		}
		s := win.snapshot()
		r := route.get()
		if opt.TTY {
			drawn = drawTTY(opt.Out, e, r, s, counts, drawn)
		} else {
			if r != lastRoute && r != "" {
				fmt.Fprintln(opt.Out, r)
				lastRoute = r
			}
			fmt.Fprintf(opt.Out, "split: %s | last %d of %d requests, %d errors | proxies: %s\n",
				formatShares(s.shares), s.recent, s.sent, s.errors, formatProxies(counts))
		}
	}
}

// drawTTY redraws the panel over the previous one (prev lines high).
func drawTTY(out io.Writer, e *env, route string, s snapshot, counts []proxyCount, prev int) int {
	var b strings.Builder
	if prev > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", prev)
	}
	lines := []string{
		fmt.Sprintf("weft demo (%s layout): GET %s from %s", e.layout, e.target, e.from),
		route,
		"",
	}
	const width = 50
	for _, body := range slices.Sorted(maps.Keys(s.shares)) {
		n := int(s.shares[body]/100*width + 0.5)
		lines = append(lines, fmt.Sprintf("  %-8s %s%s %5.1f%%", body, strings.Repeat("█", n), strings.Repeat("░", width-n), s.shares[body]))
	}
	lines = append(lines, "",
		fmt.Sprintf("  last %d requests · %d sent · %d errors", s.recent, s.sent, s.errors),
		"  requests each proxy handled: "+formatProxies(counts))
	if s.lastErr != "" {
		lines = append(lines, "  last error: "+s.lastErr)
	}
	lines = append(lines, "Ctrl-C stops the demo and removes everything it started.")
	for _, l := range lines {
		b.WriteString("\x1b[2K" + l + "\n")
	}
	// A shorter panel than the last leaves old lines below: clear them.
	for i := len(lines); i < prev; i++ {
		b.WriteString("\x1b[2K\n")
	}
	io.WriteString(out, b.String())
	return max(len(lines), prev)
}

func formatShares(shares map[string]float64) string {
	if len(shares) == 0 {
		return "none yet"
	}
	var parts []string
	for _, body := range slices.Sorted(maps.Keys(shares)) {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", body, shares[body]))
	}
	return strings.Join(parts, " ")
}

func overall(s snapshot) string {
	n := 0
	for _, c := range s.total {
		n += c
	}
	if n == 0 {
		return "no answers"
	}
	shares := map[string]float64{}
	for body, c := range s.total {
		shares[body] = 100 * float64(c) / float64(n)
	}
	return formatShares(shares)
}

// proxyCount is how many HTTP requests a proxy's listeners took in, by
// direction, from its /stats.
type proxyCount struct {
	name            string
	ingress, egress int64
	err             error
}

// proxyCounts reads every proxy's counters; for one that does not answer
// it keeps the count in last, if any, and notes the error.
func proxyCounts(ctx context.Context, proxies []proxyAdmin, last []proxyCount) []proxyCount {
	out := make([]proxyCount, len(proxies))
	for i, p := range proxies {
		out[i].name = p.name
		body, err := get(ctx, p.client, p.url+"/stats")
		if err != nil {
			if i < len(last) {
				out[i] = last[i]
			}
			out[i].err = err
			continue
		}
		out[i].ingress, out[i].egress = downstreamRequests(body)
	}
	return out
}

// downstreamRequests sums Envoy's http.<stat_prefix>.downstream_rq_total
// counters: ingress for the prefixes App Mesh names ingress*, egress for
// egress*.
func downstreamRequests(stats string) (ingress, egress int64) {
	sc := bufio.NewScanner(strings.NewReader(stats))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok || !strings.HasPrefix(name, "http.") || !strings.HasSuffix(name, ".downstream_rq_total") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			continue
		}
		switch prefix := strings.TrimPrefix(name, "http."); {
		case strings.HasPrefix(prefix, "ingress"):
			ingress += n
		case strings.HasPrefix(prefix, "egress"):
			egress += n
		}
	}
	return ingress, egress
}

func formatProxies(counts []proxyCount) string {
	if len(counts) == 0 {
		return "-"
	}
	var parts []string
	for _, c := range counts {
		switch {
		case c.err != nil && c.ingress == 0 && c.egress == 0:
			parts = append(parts, c.name+" (stats unavailable)")
		default:
			parts = append(parts, fmt.Sprintf("%s in=%d out=%d", c.name, c.ingress, c.egress))
		}
	}
	return strings.Join(parts, ", ")
}
