package main

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

// The paired tail run (-paired). The fixed-rate run gives each path
// slices of its own, seconds apart: that evens out the machine's slow
// minutes, not its stalls of a few milliseconds, which come a few times
// a second on this shared 2-core machine and are what a p99 of 10,000
// requests is made of. A path whose slices caught two more stalls than
// another's shows a p99 a millisecond higher without being slower. Here
// every path runs at once and the requests take turns: of rate requests
// per second in total (the machine's load as in the fixed-rate run),
// request i goes to path i mod P, so a stall falls on every path within
// the same few milliseconds and the paths' tails differ only by what
// the paths themselves add.

// pairedRun runs the HTTP/1.1 paths of run at once (-paired) and prints
// their tail, their round-by-round comparison with haproxy, and how often
// they were slow when the direct path was.
func (b *bench) pairedRun(run []target, o opts) {
	var pts []target
	var pnames []string
	for _, t := range run {
		if !isH2C(t.name) {
			pts = append(pts, t)
			pnames = append(pnames, t.name)
		}
	}
	pSteal0, pStart, pGCs0 := stealTicks(), time.Now(), ownNumGC()
	pruns := b.runPaired(pts, o.rate, o.paired, o.rounds, o.conns)
	pSteal := float64(stealTicks()-pSteal0) * 10 / time.Since(pStart).Seconds()
	pGCs := ownNumGC() - pGCs0
	var pdirect []runSlice
	for i, n := range pnames {
		if n == "app direct" {
			pdirect = pruns[i]
		}
	}
	fmt.Printf("\nPaired run: the %d HTTP/1.1 paths at once for %v, %d requests/s in total taking turns (request i to path i mod %d, %d connections per path), in %d parts; load average %s after, steal time %.1f ms per second, the generator's GC cycles %d:\n", len(pts), o.paired, o.rate, len(pts), o.conns, o.rounds, loadavg.OneMinute(), pSteal, pGCs)
	pown := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
	var prows []tailRow
	for i, n := range pnames {
		d := pdirect
		if n == "app direct" {
			d = nil
		}
		prows = append(prows, tailTable(pnames[i:i+1], pruns[i:i+1], d, [][]window{nil}, pown)...)
	}
	printTail("paired run (a slice is a part)", prows)
	printVersus(versusHAProxy(pnames, pruns, 0.5))
	printVersus(versusHAProxy(pnames, pruns, 0.99))
	printCoincidence(pnames, pruns, pdirect)
}

// runPaired runs the targets at once for d in rounds parts (new
// connections in each, as the slices), rate requests/s in total, conns
// connections per path, and returns each path's parts.
func (b *bench) runPaired(ts []target, rate int, d time.Duration, rounds, conns int) [][]runSlice {
	out := make([][]runSlice, len(ts))
	p := len(ts)
	iv := time.Second / time.Duration(rate)
	perPath := int(d.Seconds()*float64(rate)) / rounds / p
	for range rounds {
		// A start a little ahead, so that every path's senders are up
		// before the first request is due.
		start := time.Now().Add(20 * time.Millisecond)
		var wg sync.WaitGroup
		for k, t := range ts {
			tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, TLSClientConfig: t.tls}
			client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			wg.Add(1)
			go func() { // one path's share of the part; ends when its requests are answered
				defer wg.Done()
				defer tr.CloseIdleConnections()
				at := start.Add(time.Duration(k) * iv)
				lat, errs, _ := sendAt(t.url, at, time.Duration(p)*iv, perPath, conns, func(int) *http.Client { return client }, 1)
				if errs > 0 {
					fmt.Printf("%s: %d errors in the paired run\n", t.name, errs)
				}
				out[k] = append(out[k], runSlice{at, time.Duration(p) * iv, lat})
			}()
		}
		wg.Wait()
	}
	return out
}
