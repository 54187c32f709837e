package stats

import (
	"sort"
	"strings"
)

// ClusterLoad is a snapshot of one upstream cluster's request stats.
//
// This is the stable read API other parts of weft proxy (the load
// reporter) use; it reads the Envoy stats below and nothing else:
//
//	RqTotal   cluster.<name>.upstream_rq_total (requests sent, retries included)
//	RqCompleted cluster.<name>.upstream_rq_completed less upstream_rq_1xx
//	          (requests answered: Envoy's router counts an upstream's 1xx
//	          there too, besides the final response, and the proxy's own
//	          503, 502 or 504 to a request it gave up on before a
//	          response, as the next)
//	Rq5xx     cluster.<name>.upstream_rq_5xx (upstream 5xx responses a
//	          request was answered with, not those retried, which count in
//	          retry.upstream_rq_5xx; and
//	          the 5xx the proxy answered a request whose upstream attempt
//	          failed, not retried: a connect failure, a reset, a protocol
//	          error, an overflow, the route or per-try timeout, or no
//	          healthy host; Envoy's router charges those so,
//	          Filter::chargeUpstreamAbort, sendNoHealthyUpstreamResponse)
//	RqError   Rq5xx (the failures without a response counted there
//	          already; a retried attempt's failure is no request's error)
//	RqActive  cluster.<name>.upstream_rq_active (in flight)
//	Latency   cluster.<name>.upstream_rq_time (ms, from first byte sent to
//	          response headers), cumulative since the proxy started
//
// Counters are cumulative: a reader computes rates from two snapshots.
type ClusterLoad struct {
	Name        string
	RqTotal     int64
	RqCompleted int64
	Rq5xx       int64
	RqError     int64
	RqActive    int64
	Latency     HistogramSnapshot
}

// LatencyQuantile returns the q quantile (0..1) of upstream_rq_time in
// milliseconds, false when no request completed.
func (c ClusterLoad) LatencyQuantile(q float64) (float64, bool) { return c.Latency.Quantile(q) }

// ClusterLoads returns every cluster's load, sorted by name.
func (s *Store) ClusterLoads() []ClusterLoad {
	s.mu.Lock()
	var names []string
	for n := range s.m {
		if strings.HasPrefix(n, "cluster.") && strings.HasSuffix(n, ".upstream_rq_total") {
			names = append(names, n[len("cluster."):len(n)-len(".upstream_rq_total")])
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := make([]ClusterLoad, 0, len(names))
	for _, n := range names {
		if l, ok := s.ClusterLoad(n); ok {
			out = append(out, l)
		}
	}
	return out
}

// ClusterLoad returns one cluster's load; false when the cluster never
// existed.
func (s *Store) ClusterLoad(name string) (ClusterLoad, bool) {
	p := "cluster." + name + "."
	total, ok := s.Value(p + "upstream_rq_total")
	if !ok {
		return ClusterLoad{}, false
	}
	l := ClusterLoad{Name: name, RqTotal: total}
	l.RqCompleted, _ = s.Value(p + "upstream_rq_completed")
	interim, _ := s.Value(p + "upstream_rq_1xx")
	l.RqCompleted -= interim
	l.Rq5xx, _ = s.Value(p + "upstream_rq_5xx")
	l.RqActive, _ = s.Value(p + "upstream_rq_active")
	l.RqError = l.Rq5xx
	l.Latency, _ = s.HistogramValue(p + "upstream_rq_time")
	return l, true
}

// HistogramValue returns a snapshot of the histogram with the Envoy name,
// and whether it exists.
func (s *Store) HistogramValue(name string) (HistogramSnapshot, bool) {
	s.mu.Lock()
	h, ok := s.h[name]
	s.mu.Unlock()
	if !ok {
		return HistogramSnapshot{}, false
	}
	return h.snapshot(), true
}
