package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

// The h2c and HTTP/2-over-mutual-TLS paths take part as well (since round
// 36): with them in the same turns, no path's proxy sits idle between its
// slices, so a p99 compared there carries neither the machine's stalls
// on one path alone nor what a proxy left idle for tens of seconds pays
// on its next requests (its released pages faulted back: round 27).

// pairedRun runs every path of run at once (-paired) and prints their
// tail, their round-by-round comparison with haproxy, and how often they
// were slow when the direct path was.
func (b *bench) pairedRun(run []target, o opts) {
	var pnames []string
	for _, t := range run {
		pnames = append(pnames, t.name)
	}
	pSteal0, pStart, pGCs0 := stealTicks(), time.Now(), ownNumGC()
	pruns := b.runPaired(run, o.rate, o.paired, o.rounds, o.conns, o.h2cConns)
	pSteal := float64(stealTicks()-pSteal0) * 10 / time.Since(pStart).Seconds()
	pGCs := ownNumGC() - pGCs0
	direct := map[string][]runSlice{}
	for i, n := range pnames {
		if strings.HasPrefix(n, "app direct") {
			direct[n] = pruns[i]
		}
	}
	fmt.Printf("\nPaired run: the %d paths at once for %v, %d requests/s in total taking turns (request i to path i mod %d, each path's turn drawn anew every part; %d senders per path, over as many connections for HTTP/1.1, %d for HTTP/2), in %d parts; load average %s after, steal time %.1f ms per second, the generator's GC cycles %d:\n", len(run), o.paired, o.rate, len(run), o.conns, o.h2cConns, o.rounds, loadavg.OneMinute(), pSteal, pGCs)
	pown := gcWindows(ownPauseEnds(), gcWindowBefore, gcWindowAfter)
	var prows []tailRow
	for i, n := range pnames {
		var d []runSlice
		if !strings.HasPrefix(n, "app direct") {
			d = direct[directOf(n)]
		}
		prows = append(prows, tailTable(pnames[i:i+1], pruns[i:i+1], d, [][]window{nil}, pown)...)
	}
	printTail("paired run (a slice is a part)", prows)
	printVersus(versusHAProxy(pnames, pruns, 0.5))
	printVersus(versusHAProxy(pnames, pruns, 0.99))
	stalls := direct["app direct"]
	if stalls == nil {
		stalls = direct["app direct"+h2cSuffix]
	}
	printCoincidence(pnames, pruns, stalls)
}

// directOf is the direct path that path n's added latency is taken
// against: app direct h2c for the h2c and HTTP/2-over-mutual-TLS paths,
// app direct for the others (an HTTP/1.1 client's, to an HTTP/2 upstream
// too).
func directOf(n string) string {
	if isH2C(n) {
		return "app direct" + h2cSuffix
	}
	return "app direct"
}

// runPaired runs the targets at once for d in rounds parts (new
// connections in each, as the slices), rate requests/s in total, conns
// senders per path (an HTTP/1.1 connection each; the HTTP/2 paths' share
// h2cConns connections), and returns each path's parts.
func (b *bench) runPaired(ts []target, rate int, d time.Duration, rounds, conns, h2cConns int) [][]runSlice {
	out := make([][]runSlice, len(ts))
	p := len(ts)
	iv := time.Second / time.Duration(rate)
	perPath := int(d.Seconds()*float64(rate)) / rounds / p
	for range rounds {
		// A start a little ahead, so that every path's senders are up
		// before the first request is due.
		start := time.Now().Add(20 * time.Millisecond)
		// Each path's turn in the cycle is drawn anew every part. With a
		// fixed order the path whose requests follow the direct path's
		// by 1/rate reaches the shared app while it still serves that
		// request, every time: in round 36's first runs the path after
		// app direct had its p50 0.15 ms above haproxy's in 18 of 20
		// parts, the same code in the next turn 0.08 ms below.
		turn := rand.Perm(p)
		var wg sync.WaitGroup
		for k, t := range ts {
			clientOf, proto, done := pairedClients(t, conns, h2cConns)
			wg.Add(1)
			go func() { // one path's share of the part; ends when its requests are answered
				defer wg.Done()
				defer done()
				at := start.Add(time.Duration(turn[k]) * iv)
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

// pairedClients gives path t's senders their clients, the HTTP version its
// answers must have, and what closes the clients' connections: one
// HTTP/1.1 client of conns connections, or h2cConns HTTP/2 clients the
// senders take in turn, as the fixed-rate run's (constantRateH2C).
func pairedClients(t target, conns, h2cConns int) (clientOf func(w int) *http.Client, proto int, done func()) {
	if isH2C(t.name) {
		var dials atomic.Int64
		cs, done := h2cClients(h2cConns, &dials, t.tls)
		return func(w int) *http.Client { return cs[w%len(cs)] }, 2, done
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, TLSClientConfig: t.tls}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return func(int) *http.Client { return client }, 1, tr.CloseIdleConnections
}
