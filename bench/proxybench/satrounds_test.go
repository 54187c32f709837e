package main

import (
	"math"
	"testing"
)

func TestHAProxyTwin(t *testing.T) {
	for n, want := range map[string]string{
		"one weft proxy":                 "haproxy",
		"two weft proxies":               "two haproxies",
		"one weft proxy B":               "haproxy",
		"two weft proxies, mTLS in":      "two haproxies, mTLS in",
		"one weft proxy" + h2cSuffix:     "haproxy" + h2cSuffix,
		"two weft proxies" + h2tlsSuffix: "two haproxies" + h2tlsSuffix,
		"one weft proxy, tracing 1%":     "",
		"one weft proxy" + h1ToH2Suffix:  "",
		"haproxy":                        "",
		"app direct":                     "",
	} {
		got, ok := haproxyTwin(n)
		if ok != (want != "") || got != want {
			t.Errorf("haproxyTwin(%q) = %q, %v; want %q", n, got, ok, want)
		}
	}
}

func TestSatVersusHAProxy(t *testing.T) {
	nan := math.NaN()
	runs := []satRun{
		{name: "app direct", rps: []float64{50, 50, 50}},
		{name: "two weft proxies", rps: []float64{90, nan, 120}},
		{name: "two haproxies", rps: []float64{100, 100, 100}},
		{name: "one weft proxy", rps: []float64{1, 2}}, // no twin in the run
	}
	vs := satVersusHAProxy(runs)
	if len(vs) != 1 {
		t.Fatalf("got %d comparisons, want 1 (only two weft proxies has its twin): %+v", len(vs), vs)
	}
	v := vs[0]
	if v.a != "two weft proxies" || v.b != "two haproxies" {
		t.Fatalf("paired %q with %q", v.a, v.b)
	}
	// The failed round is left out; the others are each round's ratio.
	if len(v.ratios) != 2 || v.ratios[0] != 0.9 || v.ratios[1] != 1.2 {
		t.Fatalf("ratios %v, want [0.9 1.2]", v.ratios)
	}
	if m := median([]float64{3, nan, 1, 2}); m != 2 {
		t.Fatalf("median without the failed run = %v, want 2", m)
	}
	if m := median([]float64{nan}); !math.IsNaN(m) {
		t.Fatalf("median of failed runs only = %v, want NaN", m)
	}
}
