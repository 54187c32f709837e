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
	mu sync.Mutex
	m  map[string]*metric // by Envoy name; protected by mu
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{m: make(map[string]*metric)} }

func (s *Store) get(name, family string, labels []Label, k kind) *metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.m[name]; ok {
		return m
	}
	m := &metric{name: name, family: family, labels: renderLabels(labels), kind: k}
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

// Counter returns the counter named prefix+name.
func (sc Scope) Counter(name string) *Counter {
	return &Counter{sc.store.get(sc.envoy+name, sc.prom+promSafe(name), sc.labels, counterKind)}
}

// Gauge returns the gauge named prefix+name.
func (sc Scope) Gauge(name string) *Gauge {
	return &Gauge{sc.store.get(sc.envoy+name, sc.prom+promSafe(name), sc.labels, gaugeKind)}
}

// TaggedCounter returns the counter whose Envoy name is prefix+name and
// whose Prometheus name is family with extra labels, as Envoy's tag
// extraction turns cluster.x.upstream_rq_503 into
// envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="x"}.
func (sc Scope) TaggedCounter(name, family string, extra ...Label) *Counter {
	labels := append(append([]Label(nil), extra...), sc.labels...)
	return &Counter{sc.store.get(sc.envoy+name, sc.prom+family, labels, counterKind)}
}

// GaugeFunc registers a gauge whose value is computed when stats are read.
// A later registration under the same name replaces fn.
func (sc Scope) GaugeFunc(name string, fn func() int64) {
	m := sc.store.get(sc.envoy+name, sc.prom+promSafe(name), sc.labels, gaugeKind)
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

// WriteText writes "name: value" lines sorted by name, as Envoy's /stats.
// filter, when non-nil, keeps only names it matches; usedOnly drops zero
// counters that were never touched (approximated by value 0).
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
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes {"stats":[{"name":..,"value":..}]} as Envoy's
// /stats?format=json does for counters and gauges.
func (s *Store) WriteJSON(w io.Writer, filter *regexp.Regexp, usedOnly bool) error {
	ss := s.snapshot(filter)
	sort.Slice(ss, func(i, j int) bool { return ss[i].m.name < ss[j].m.name })
	type entry struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	out := struct {
		Stats []entry `json:"stats"`
	}{Stats: make([]entry, 0, len(ss))}
	for _, x := range ss {
		if usedOnly && x.v == 0 {
			continue
		}
		out.Stats = append(out.Stats, entry{x.m.name, x.v})
	}
	return json.NewEncoder(w).Encode(out)
}

// WritePrometheus writes the Prometheus text exposition format, one
// "# TYPE" line per family, families sorted.
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
		b.WriteString(l.Name)
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
