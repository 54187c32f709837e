package main

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
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

// pairedRuns runs the paired tail run twice: the HTTP/1.1 paths against
// app direct, then, when there are any, the HTTP/2 paths (h2c and h2 over
// mutual TLS) against app direct h2c, each over h2cConns connections per
// path shared by its conns senders, as in the fixed-rate run.
func (b *bench) pairedRuns(run []target, rate int, d time.Duration, rounds, conns, h2cConns int) {
	for _, h2 := range []bool{false, true} {
		var pts []target
		var pnames []string
		for _, t := range run {
			if isH2C(t.name) == h2 {
				pts = append(pts, t)
				pnames = append(pnames, t.name)
			}
		}
		direct, kind := "app direct", "HTTP/1.1"
		if h2 {
			direct, kind = "app direct"+h2cSuffix, "HTTP/2"
		}
		if len(pts) < 2 {
			continue
		}
		pSteal0, pStart, pGCs0 := stealTicks(), time.Now(), ownNumGC()
		pruns := b.runPaired(pts, rate, d, rounds, conns, h2, h2cConns)
		pSteal := float64(stealTicks()-pSteal0) * 10 / time.Since(pStart).Seconds()
		pGCs := ownNumGC() - pGCs0
		var pdirect []runSlice
		for i, n := range pnames {
			if n == direct {
				pdirect = pruns[i]
			}
		}
		perPath := fmt.Sprintf("%d connections per path", conns)
		if h2 {
			perPath = fmt.Sprintf("%d senders sharing %d HTTP/2 connections per path", conns, h2cConns)
		}
		fmt.Printf("\nPaired run: the %d %s paths at once for %v, %d requests/s in total taking turns (request i to path i mod %d, %s), in %d parts; added latency against %s; load average %s after, steal time %.1f ms per second, the generator's GC cycles %d:\n", len(pts), kind, d, rate, len(pts), perPath, rounds, direct, loadavg(), pSteal, pGCs)
		pown := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
		var prows []tailRow
		for i, n := range pnames {
			dr := pdirect
			if n == direct {
				dr = nil
			}
			prows = append(prows, tailTable(pnames[i:i+1], pruns[i:i+1], dr, [][]window{nil}, pown)...)
		}
		printTail("paired run (a slice is a part)", prows)
		printVersus(versusHAProxy(pnames, pruns))
		printCoincidence(pnames, pruns, pdirect)
	}
}

// runPaired runs the targets at once for d in rounds parts (new
// connections in each, as the slices), rate requests/s in total, conns
// connections per path (with h2, conns senders sharing h2cConns HTTP/2
// connections), and returns each path's parts.
func (b *bench) runPaired(ts []target, rate int, d time.Duration, rounds, conns int, h2 bool, h2cConns int) [][]runSlice {
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
			clientOf, proto, done := pairedClients(t, conns, h2, h2cConns)
			wg.Add(1)
			go func() { // one path's share of the part; ends when its requests are answered
				defer wg.Done()
				defer done()
				at := start.Add(time.Duration(k) * iv)
				lat, errs, _ := sendAt(t.url, at, time.Duration(p)*iv, perPath, conns, clientOf, proto)
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

// pairedClients returns a path's clients for the paired run: conns
// HTTP/1.1 connections, or with h2 h2cConns HTTP/2 connections that the
// senders share (sender w uses connection w mod h2cConns); the protocol
// every answer must have; and what closes them.
func pairedClients(t target, conns int, h2 bool, h2cConns int) (func(int) *http.Client, int, func()) {
	if h2 {
		var dials atomic.Int64
		cs, done := h2cClients(h2cConns, &dials, t.tls)
		return func(w int) *http.Client { return cs[w%len(cs)] }, 2, done
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, TLSClientConfig: t.tls}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return func(int) *http.Client { return client }, 1, tr.CloseIdleConnections
}
