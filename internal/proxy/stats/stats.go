// Package stats keeps weft proxy's counters and gauges under Envoy's names and
// writes them in Envoy's /stats text and JSON formats and as Prometheus text
// with Envoy's tag-extracted names (envoy_cluster_upstream_rq_total{envoy_cluster_name="x"}).
//
// Metrics are created when configuration is built and then updated on the
// hot path with single atomic operations; nothing is looked up per request.
package stats

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Label is one Prometheus label that Envoy's tag extraction produces.
type Label struct{ Name, Value string }

type kind uint8

const (
	counterKind kind = iota
	gaugeKind
)

type metric struct {
	name   string // Envoy name, e.g. cluster.x.upstream_rq_total
	family string // Prometheus name, e.g. envoy_cluster_upstream_rq_total
	labels string // rendered {a="b",...} or ""
	tags   []Label
	dog    string // tag-extracted dotted name for DogStatsD, e.g. cluster.upstream_rq_total
	kind   kind
	v      atomic.Int64
	fn     func() int64 // gauges computed when read; nil otherwise
}

// Counter only goes up.
type Counter struct{ m *metric }

// Inc adds one.
func (c *Counter) Inc() { c.m.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n int64) { c.m.v.Add(n) }

// Value is the current count.
func (c *Counter) Value() int64 { return c.m.v.Load() }

// Gauge goes up and down.
type Gauge struct{ m *metric }

// Inc adds one.
func (g *Gauge) Inc() { g.m.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.m.v.Add(-1) }

// Set replaces the value.
func (g *Gauge) Set(v int64) { g.m.v.Store(v) }

// Add adds n, which may be negative.
func (g *Gauge) Add(n int64) { g.m.v.Add(n) }

// Value is the current value.
func (g *Gauge) Value() int64 { return g.m.v.Load() }

// Store holds every metric of one proxy. Metrics live as long as the store:
// a cluster that is removed and added again keeps counting, as Envoy's do
// while their stats are still referenced.
type Store struct {
	mu   sync.Mutex
	m    map[string]*metric // by Envoy name; protected by mu
	h    map[string]*histo  // by Envoy name; protected by mu
	tags []Label            // fixed tags added to every metric; set at creation
	sink atomic.Pointer[Sink]
}

// NewStore returns an empty store.
func NewStore() *Store { return NewStoreWithTags() }

// NewStoreWithTags returns an empty store whose every metric carries the
// fixed tags, as Envoy's stats_config.stats_tags with fixed_value do (App
// Mesh's ENABLE_ENVOY_STATS_TAGS adds appmesh.mesh and
// appmesh.virtual_node or appmesh.virtual_gateway). Tag names are Envoy's
// (with dots); Prometheus labels replace the dots with underscores.
func NewStoreWithTags(tags ...Label) *Store {
	return &Store{m: make(map[string]*metric), h: make(map[string]*histo), tags: tags}
}

// withTags appends the store's fixed tags to labels.
func (s *Store) withTags(labels []Label) []Label {
	if len(s.tags) == 0 {
		return labels
	}
	out := make([]Label, 0, len(labels)+len(s.tags))
	out = append(out, labels...)
	return append(out, s.tags...)
}

func (s *Store) get(name, family string, labels []Label, k kind) *metric {
	return s.getDog(name, family, "", labels, k)
}

func (s *Store) getDog(name, family, dog string, labels []Label, k kind) *metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.m[name]; ok {
		return m
	}
	tags := s.withTags(labels)
	m := &metric{name: name, family: family, labels: renderLabels(tags), tags: tags, dog: dog, kind: k}
	s.m[name] = m
	return m
}

// Scope names metrics the way one Envoy stats scope does: an Envoy prefix
// ("cluster.x."), the Prometheus family prefix it maps to ("envoy_cluster_")
// and the labels the prefix's tags turn into.
type Scope struct {
	store  *Store
	envoy  string
	prom   string
	labels []Label
}

// Scope returns a scope; envoyPrefix and promPrefix end with "." and "_".
func (s *Store) Scope(envoyPrefix, promPrefix string, labels ...Label) Scope {
	return Scope{store: s, envoy: envoyPrefix, prom: promPrefix, labels: labels}
}

// dogName is the tag-extracted name of a metric of this scope whose
// Prometheus family ends in suffix: cluster.upstream_rq_total for
// envoy_cluster_ + upstream_rq_total.
func (sc Scope) dogName(suffix string) string {
	p := strings.TrimSuffix(strings.TrimPrefix(sc.prom, "envoy_"), "_")
	if p == "" {
		return suffix
	}
	return p + "." + suffix
}

// Counter returns the counter named prefix+name.
func (sc Scope) Counter(name string) *Counter {
	return &Counter{sc.store.getDog(sc.envoy+name, sc.prom+promSafe(name), sc.dogName(name), sc.labels, counterKind)}
}

// Gauge returns the gauge named prefix+name.
func (sc Scope) Gauge(name string) *Gauge {
	return &Gauge{sc.store.getDog(sc.envoy+name, sc.prom+promSafe(name), sc.dogName(name), sc.labels, gaugeKind)}
}

// TaggedCounter returns the counter whose Envoy name is prefix+name and
// whose Prometheus name is family with extra labels, as Envoy's tag
// extraction turns cluster.x.upstream_rq_503 into
// envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="x"}.
func (sc Scope) TaggedCounter(name, family string, extra ...Label) *Counter {
	labels := append(append([]Label(nil), extra...), sc.labels...)
	return &Counter{sc.store.getDog(sc.envoy+name, sc.prom+family, sc.dogName(family), labels, counterKind)}
}

// GaugeFunc registers a gauge whose value is computed when stats are read.
// A later registration under the same name replaces fn.
func (sc Scope) GaugeFunc(name string, fn func() int64) {
	m := sc.store.getDog(sc.envoy+name, sc.prom+promSafe(name), sc.dogName(name), sc.labels, gaugeKind)
	sc.store.mu.Lock()
	m.fn = fn
	sc.store.mu.Unlock()
}

// Value returns the current value of the metric with the Envoy name, and
// whether it exists. Tests and the admin endpoints use it.
func (s *Store) Value(name string) (int64, bool) {
	s.mu.Lock()
	m, ok := s.m[name]
	var fn func() int64
	if ok {
		fn = m.fn
	}
	s.mu.Unlock()
	if !ok {
		return 0, false
	}
	if fn != nil {
		return fn(), true
	}
	return m.v.Load(), true
}

type sample struct {
	m *metric
	v int64
}

func (s *Store) snapshot(filter *regexp.Regexp) []sample {
	s.mu.Lock()
	out := make([]sample, 0, len(s.m))
	fns := make([]func() int64, 0, len(s.m))
	for _, m := range s.m {
		if filter != nil && !filter.MatchString(m.name) {
			continue
		}
		out = append(out, sample{m: m})
		fns = append(fns, m.fn)
	}
	s.mu.Unlock()
	for i := range out {
		if fns[i] != nil {
			out[i].v = fns[i]()
		} else {
			out[i].v = out[i].m.v.Load()
		}
	}
	return out
}

func (s *Store) histos(filter *regexp.Regexp) []*histo {
	s.mu.Lock()
	out := make([]*histo, 0, len(s.h))
	for _, h := range s.h {
		if filter == nil || filter.MatchString(h.name) {
			out = append(out, h)
		}
	}
	s.mu.Unlock()
	return out
}

// WriteText writes "name: value" lines sorted by name, as Envoy's /stats,
// then one line per histogram with Envoy's quantiles. filter, when
// non-nil, keeps only names it matches; usedOnly drops zero counters that
// were never touched (approximated by value 0) and empty histograms.
func (s *Store) WriteText(w io.Writer, filter *regexp.Regexp, usedOnly bool) error {
	ss := s.snapshot(filter)
	sort.Slice(ss, func(i, j int) bool { return ss[i].m.name < ss[j].m.name })
	var b strings.Builder
	for _, x := range ss {
		if usedOnly && x.v == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s: %d\n", x.m.name, x.v)
	}
	hs := s.histos(filter)
	sort.Slice(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	for _, h := range hs {
		snap := h.snapshot()
		if usedOnly && snap.Count == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", h.name, snap.quantileText())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes {"stats":[{"name":..,"value":..}, ...,
// {"histograms":{"supported_quantiles":[...],"computed_quantiles":[...]}}]}
// as Envoy's /stats?format=json does.
func (s *Store) WriteJSON(w io.Writer, filter *regexp.Regexp, usedOnly bool) error {
	ss := s.snapshot(filter)
	sort.Slice(ss, func(i, j int) bool { return ss[i].m.name < ss[j].m.name })
	type entry struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	type qv struct {
		Interval   *float64 `json:"interval"`
		Cumulative *float64 `json:"cumulative"`
	}
	type computed struct {
		Name   string `json:"name"`
		Values []qv   `json:"values"`
	}
	out := struct {
		Stats []any `json:"stats"`
	}{Stats: make([]any, 0, len(ss)+1)}
	for _, x := range ss {
		if usedOnly && x.v == 0 {
			continue
		}
		out.Stats = append(out.Stats, entry{x.m.name, x.v})
	}
	hs := s.histos(filter)
	sort.Slice(hs, func(i, j int) bool { return hs[i].name < hs[j].name })
	var cq []computed
	for _, h := range hs {
		snap := h.snapshot()
		if usedOnly && snap.Count == 0 {
			continue
		}
		c := computed{Name: h.name, Values: make([]qv, len(Quantiles))}
		for i, q := range Quantiles {
			if v, ok := snap.Quantile(q); ok {
				c.Values[i].Cumulative = &v
			}
		}
		cq = append(cq, c)
	}
	if len(cq) > 0 {
		sq := make([]float64, len(Quantiles))
		for i, q := range Quantiles {
			sq[i] = q * 100
		}
		out.Stats = append(out.Stats, map[string]any{"histograms": map[string]any{
			"supported_quantiles": sq, "computed_quantiles": cq}})
	}
	return json.NewEncoder(w).Encode(out)
}

// WritePrometheus writes the Prometheus text exposition format, one
// "# TYPE" line per family, families sorted; histograms as
// <family>_bucket{le=...}, <family>_sum and <family>_count with Envoy's
// default buckets.
func (s *Store) WritePrometheus(w io.Writer, filter *regexp.Regexp, usedOnly bool) error {
	ss := s.snapshot(filter)
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].m.family != ss[j].m.family {
			return ss[i].m.family < ss[j].m.family
		}
		return ss[i].m.labels < ss[j].m.labels
	})
	var b strings.Builder
	last := ""
	for _, x := range ss {
		if usedOnly && x.v == 0 {
			continue
		}
		if x.m.family != last {
			typ := "counter"
			if x.m.kind == gaugeKind {
				typ = "gauge"
			}
			fmt.Fprintf(&b, "# TYPE %s %s\n", x.m.family, typ)
			last = x.m.family
		}
		fmt.Fprintf(&b, "%s%s %d\n", x.m.family, x.m.labels, x.v)
	}
	hs := s.histos(filter)
	type rendered struct {
		h      *histo
		labels string
	}
	rs := make([]rendered, len(hs))
	for i, h := range hs {
		rs[i] = rendered{h, renderLabels(h.labels)}
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].h.family != rs[j].h.family {
			return rs[i].h.family < rs[j].h.family
		}
		return rs[i].labels < rs[j].labels
	})
	last = ""
	for _, r := range rs {
		snap := r.h.snapshot()
		if usedOnly && snap.Count == 0 {
			continue
		}
		if r.h.family != last {
			fmt.Fprintf(&b, "# TYPE %s histogram\n", r.h.family)
			last = r.h.family
		}
		inner := ""
		if r.labels != "" {
			inner = r.labels[1:len(r.labels)-1] + ","
		}
		for i, n := range snap.Buckets() {
			fmt.Fprintf(&b, "%s_bucket{%sle=\"%s\"} %d\n", r.h.family, inner, strconv.FormatFloat(DefaultBuckets[i], 'f', -1, 64), n)
		}
		fmt.Fprintf(&b, "%s_bucket{%sle=\"+Inf\"} %d\n", r.h.family, inner, snap.Count)
		fmt.Fprintf(&b, "%s_sum%s %d\n", r.h.family, r.labels, snap.Sum)
		fmt.Fprintf(&b, "%s_count%s %d\n", r.h.family, r.labels, snap.Count)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func renderLabels(ls []Label) string {
	if len(ls) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(promSafe(l.Name))
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(l.Value))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// promSafe turns an Envoy stat suffix into Prometheus name characters, as
// Envoy does: anything outside [a-zA-Z0-9_] becomes '_'.
func promSafe(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if !isPromChar(s[i]) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i := range b {
		if !isPromChar(b[i]) {
			b[i] = '_'
		}
	}
	return string(b)
}

func isPromChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
