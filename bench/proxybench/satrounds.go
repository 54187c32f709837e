package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

// satRun is one path's saturation runs, one per round.
type satRun struct {
	name string
	rps  []float64 // NaN where a run failed
	load []string  // the one-minute load average after each run
}

// interleavedSaturation runs every path's saturation run (wrk, or h2load
// on the h2c paths) rounds times, the paths in turn and their order
// reversed every other round, so that a path and its haproxy twin are
// measured minutes apart at most and the machine's slow minutes fall on
// both. One 5 s run per path, as saturation and h2cSaturation make,
// placed two weft proxies chained at 0.81-1.04 × two haproxies across
// rounds 31-34 of docs/bench/proxy.md; the rounds' ratios place it.
// Paths over TLS are left out (wrk and h2load have no client
// certificate).
func interleavedSaturation(run []target, o opts) []satRun {
	var paths []target
	for _, t := range run {
		if t.tls == nil {
			paths = append(paths, t)
		}
	}
	out := make([]satRun, len(paths))
	for i, t := range paths {
		out[i].name = t.name
	}
	for r := range o.satRounds {
		for k := range paths {
			i := k
			if r%2 == 1 {
				i = len(paths) - 1 - k
			}
			var rps string
			if isH2C(paths[i].name) {
				rps = h2load(paths[i].url, o.satDur, o.h2cSatConns, o.h2cSatStreams).rps
			} else {
				rps = wrk(paths[i].url, o.satDur, o.satConns).rps
			}
			v, err := strconv.ParseFloat(rps, 64)
			if err != nil {
				v = math.NaN()
			}
			out[i].rps = append(out[i].rps, v)
			out[i].load = append(out[i].load, loadavg.OneMinute())
		}
	}
	return out
}

// satRatio is a weft proxy path's saturation over its haproxy twin's,
// round by round.
type satRatio struct {
	a, b   string
	ratios []float64 // rounds where both ran
}

// satVersusHAProxy pairs each weft proxy path with its haproxy twin
// (haproxyTwin) and divides their rates round by round.
func satVersusHAProxy(runs []satRun) []satRatio {
	by := map[string]satRun{}
	for _, r := range runs {
		by[r.name] = r
	}
	var out []satRatio
	for _, r := range runs {
		h, ok := haproxyTwin(r.name)
		if !ok {
			continue
		}
		hr, ok := by[h]
		if !ok {
			continue
		}
		v := satRatio{a: r.name, b: h}
		for k := range min(len(r.rps), len(hr.rps)) {
			if q := r.rps[k] / hr.rps[k]; !math.IsNaN(q) && !math.IsInf(q, 0) {
				v.ratios = append(v.ratios, q)
			}
		}
		out = append(out, v)
	}
	return out
}

// median is spread's median of xs's runs that did not fail (NaN: none).
func median(xs []float64) float64 {
	var s []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	_, m, _ := spread(s)
	return m
}

// printInterleavedSaturation prints the rounds' rates and each weft proxy
// path's ratios to haproxy's.
func printInterleavedSaturation(runs []satRun, o opts) {
	if len(runs) == 0 {
		return
	}
	fmt.Printf("\nSaturation in %d interleaved rounds (wrk -t2 -c%d -d%v --latency; h2c paths: h2load -t2 -c%d -m%d; order reversed every other round):\n\n",
		o.satRounds, o.satConns, o.satDur, o.h2cSatConns, o.h2cSatStreams)
	fmt.Println("| path | requests/s, round by round | median | load after each |")
	fmt.Println("|---|---|---|---|")
	for _, r := range runs {
		rates := make([]string, len(r.rps))
		for k, v := range r.rps {
			rates[k] = strconv.FormatFloat(v, 'f', 0, 64)
		}
		fmt.Printf("| %s | %s | %.0f | %s |\n", r.name, strings.Join(rates, " "), median(r.rps), strings.Join(r.load, " "))
	}
	vs := satVersusHAProxy(runs)
	if len(vs) == 0 {
		return
	}
	fmt.Println("\nSaturation against haproxy round by round (each round's rate of the path over its haproxy twin's in the same round):")
	fmt.Println()
	fmt.Println("| path | against | ratio min / median / max | rounds at or over 0.9 | ratio of the medians |")
	fmt.Println("|---|---|---|---|---|")
	for _, v := range vs {
		lo, med, hi := spread(v.ratios)
		over := 0
		for _, q := range v.ratios {
			if q >= 0.9 {
				over++
			}
		}
		var a, b []float64
		for _, r := range runs {
			switch r.name {
			case v.a:
				a = r.rps
			case v.b:
				b = r.rps
			}
		}
		fmt.Printf("| %s | %s | %.3f / %.3f / %.3f | %d of %d | %.3f |\n", v.a, v.b, lo, med, hi, over, len(v.ratios), median(a)/median(b))
	}
}
