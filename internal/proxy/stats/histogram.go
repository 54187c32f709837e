package stats

import (
	"math"
	"strconv"
	"strings"
	"sync/atomic"
)

// DefaultBuckets are Envoy's default histogram bucket bounds (stats_config
// histogram_bucket_settings unset), in the histogram's unit (milliseconds
// for every *_time and *_ms histogram).
var DefaultBuckets = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
	10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Quantiles are the quantiles Envoy's /stats shows for each histogram.
var Quantiles = [...]float64{0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1}

// Bins. Values are whole units (milliseconds, as Envoy records them). A
// value is counted in the bin whose upper bound is the value rounded up to
// two significant digits: 0..100 exactly, then 90 bins per decade up to
// 10^8. Every default bucket bound is a bin bound, so Prometheus buckets
// are exact sums of bins, and quantiles are within 10 % of the value.
const (
	exactBins  = 101 // values 0..100
	binDecades = 6   // (10^2, 10^8]
	numBins    = exactBins + binDecades*90 + 1
	overflow   = numBins - 1
)

// binOf returns the bin of v.
func binOf(v uint64) int {
	if v <= 100 {
		return int(v)
	}
	p := uint64(10)
	for k := 0; k < binDecades; k++ {
		if v <= 100*p {
			m := (v + p - 1) / p // 11..100
			return exactBins + k*90 + int(m-11)
		}
		p *= 10
	}
	return overflow
}

// binUpper is the upper bound of bin i; +Inf for the overflow bin.
func binUpper(i int) float64 {
	if i < exactBins {
		return float64(i)
	}
	if i == overflow {
		return math.Inf(1)
	}
	i -= exactBins
	k, m := i/90, i%90+11
	return float64(m) * math.Pow10(k+1)
}

// binLower is the bound below bin i (its values are above it).
func binLower(i int) float64 {
	switch {
	case i == 0:
		return 0
	case i < exactBins:
		return float64(i - 1)
	case i == overflow:
		return binUpper(overflow - 1)
	}
	return binUpper(i - 1)
}

type histo struct {
	name   string // Envoy name
	family string // Prometheus family
	dog    string // tag-extracted dotted name
	labels []Label
	bins   atomic.Pointer[[numBins]atomic.Uint64] // allocated on first record
	sum    atomic.Uint64
	store  *Store
}

// Histogram records values (milliseconds) as Envoy's histograms do.
type Histogram struct{ h *histo }

// Record adds one value. It is cheap (two atomic adds once the bins
// exist) and never blocks: a StatsD sink gets the value through a bounded
// queue that drops when full.
func (h *Histogram) Record(v uint64) {
	b := h.h.bins.Load()
	if b == nil {
		nb := new([numBins]atomic.Uint64)
		if !h.h.bins.CompareAndSwap(nil, nb) {
			nb = h.h.bins.Load()
		}
		b = nb
	}
	b[binOf(v)].Add(1)
	h.h.sum.Add(v)
	if sk := h.h.store.sink.Load(); sk != nil {
		sk.sample(h.h, v)
	}
}

// HistogramSnapshot is a copy of one histogram's counts.
type HistogramSnapshot struct {
	Count uint64
	Sum   uint64
	bins  *[numBins]uint64 // nil when nothing was recorded
}

func (h *histo) snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Sum: h.sum.Load()}
	b := h.bins.Load()
	if b == nil {
		return s
	}
	s.bins = new([numBins]uint64)
	for i := range b {
		n := b[i].Load()
		s.bins[i] = n
		s.Count += n
	}
	return s
}

// Since returns what was recorded after prev, an earlier snapshot of the
// same histogram: the counts of an interval.
func (s HistogramSnapshot) Since(prev HistogramSnapshot) HistogramSnapshot {
	if s.bins == nil || prev.bins == nil {
		if prev.bins == nil {
			return s
		}
		return HistogramSnapshot{}
	}
	d := HistogramSnapshot{bins: new([numBins]uint64)}
	if s.Sum > prev.Sum {
		d.Sum = s.Sum - prev.Sum
	}
	for i := range s.bins {
		if s.bins[i] > prev.bins[i] {
			d.bins[i] = s.bins[i] - prev.bins[i]
			d.Count += d.bins[i]
		}
	}
	return d
}

// Quantile estimates the q quantile (0..1), interpolating inside the bin
// it falls in; false when nothing was recorded.
func (s HistogramSnapshot) Quantile(q float64) (float64, bool) {
	if s.Count == 0 || s.bins == nil {
		return 0, false
	}
	rank := q * float64(s.Count)
	var cum float64
	for i, n := range s.bins {
		if n == 0 {
			continue
		}
		next := cum + float64(n)
		if next >= rank {
			lo, hi := binLower(i), binUpper(i)
			if i == 0 || i < exactBins {
				// whole numbers: the bin holds exactly one value
				return hi, true
			}
			if math.IsInf(hi, 1) {
				return lo, true
			}
			return lo + (hi-lo)*(rank-cum)/float64(n), true
		}
		cum = next
	}
	return binUpper(overflow - 1), true
}

// Buckets returns the cumulative counts at each DefaultBuckets bound.
func (s HistogramSnapshot) Buckets() [len(DefaultBuckets)]uint64 {
	var out [len(DefaultBuckets)]uint64
	if s.bins == nil {
		return out
	}
	var cum uint64
	bi := 0
	for i, n := range s.bins {
		for bi < len(DefaultBuckets) && binUpper(i) > DefaultBuckets[bi] {
			out[bi] = cum
			bi++
		}
		cum += n
	}
	for ; bi < len(DefaultBuckets); bi++ {
		out[bi] = cum
	}
	return out
}

// quantileText renders Envoy's /stats line value: "P0(nan,1) P25(nan,2) ...".
// The first number of each pair is the interval value, which weft proxy
// does not keep (nan, as Envoy shows before its first flush).
func (s HistogramSnapshot) quantileText() string {
	if s.Count == 0 {
		return "No recorded values"
	}
	var b strings.Builder
	for i, q := range Quantiles {
		if i > 0 {
			b.WriteByte(' ')
		}
		v, _ := s.Quantile(q)
		b.WriteByte('P')
		b.WriteString(strconv.FormatFloat(q*100, 'f', -1, 64))
		b.WriteString("(nan,")
		b.WriteString(strconv.FormatFloat(v, 'g', 4, 64))
		b.WriteByte(')')
	}
	return b.String()
}

// Histogram returns the histogram named prefix+name.
func (sc Scope) Histogram(name string) *Histogram {
	s := sc.store
	full := sc.envoy + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.h[full]; ok {
		return &Histogram{h}
	}
	h := &histo{name: full, family: sc.prom + promSafe(name), dog: sc.dogName(name), labels: s.withTags(sc.labels), store: s}
	s.h[full] = h
	return &Histogram{h}
}
