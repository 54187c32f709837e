package lrs

import (
	"cmp"
	"math"
	"slices"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Load metric names weft proxy reports latency under. A load metric is a
// sum: num_requests_finished_with_metric is the requests the quantile was
// computed over in the interval, total_metric_value that count times the
// quantile in milliseconds, so the server's figure is the request-weighted
// mean of the reported quantiles (an approximation of the window's
// quantile; exact for one reporter and steady traffic).
const (
	MetricP50 = "upstream_rq_time_p50_ms"
	MetricP99 = "upstream_rq_time_p99_ms"
)

// Bounds of reported values: counts beyond maxCount (per report) are
// taken as maxCount, so that a client's sums cannot wrap around.
const (
	maxCount     = 1 << 40
	maxLatencyMs = 3600e3
)

// sat adds, saturating at maxCount.
func sat(a, b uint64) uint64 {
	if b >= maxCount || a+b >= maxCount {
		return maxCount
	}
	return a + b
}

// reporter is one LRS stream's reports. Fields are protected by
// Server.mu.
type reporter struct {
	id       uint64
	who      translate.Identity
	clusters map[string]*clusterWindow // by Envoy cluster name
	start    time.Time                 // the stream's start
	last     time.Time                 // last report, or the stream's start
	closed   bool
}

// clusterWindow holds one cluster's reports, oldest first, and their
// sums, so that reading the window costs one step per cluster.
type clusterWindow struct {
	target  string // virtual node
	samples []sample
	sum     sample // of samples' counts; end unused
}

// push appends a report, keeping at most max.
func (w *clusterWindow) push(smp sample, max int) {
	w.samples = append(w.samples, smp)
	w.sum.add(smp, 1)
	if over := len(w.samples) - max; over > 0 {
		w.drop(over)
	}
}

// drop forgets the n oldest reports.
func (w *clusterWindow) drop(n int) {
	for _, smp := range w.samples[:n] {
		w.sum.add(smp, -1)
	}
	w.samples = slices.Delete(w.samples, 0, n)
	if len(w.samples) == 0 {
		w.sum = sample{} // no rounding left over
	}
}

// add adds (sign 1) or subtracts (sign -1) o's counts.
func (a *sample) add(o sample, sign int) {
	if sign > 0 {
		a.issued, a.success, a.errors = a.issued+o.issued, a.success+o.success, a.errors+o.errors
	} else {
		a.issued, a.success, a.errors = a.issued-o.issued, a.success-o.success, a.errors-o.errors
	}
	f := float64(sign)
	a.p50Sum, a.p50N = max(a.p50Sum+f*o.p50Sum, 0), max(a.p50N+f*o.p50N, 0)
	a.p99Sum, a.p99N = max(a.p99Sum+f*o.p99Sum, 0), max(a.p99N+f*o.p99N, 0)
}

// sample is one report of one cluster: counts over the interval that
// ended at end. The interval the client states is not needed: rates are
// taken over the window (see Traffic).
type sample struct {
	end                        time.Time
	issued, success, errors    uint64
	inflight                   uint64
	p50Sum, p50N, p99Sum, p99N float64
}

type edgeKey struct {
	owner, mesh string
	kind        appmesh.Kind
	source      string
	target      string
}

// edgeTotal is an edge's running counts since the server started, for
// Prometheus counters.
type edgeTotal struct{ requests, errors uint64 }

// record adds one report's cluster stats of r, received at now.
func (s *Server) record(r *reporter, cs []*endpointv3.ClusterStats, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.last = now
	for _, c := range cs {
		target, ok := TargetNode(r.who.Mesh, c.GetClusterName())
		if !ok {
			continue
		}
		w := r.clusters[c.GetClusterName()]
		if w == nil {
			if len(r.clusters) >= s.limits.MaxClustersPerReporter {
				s.droppedClusters++
				continue
			}
			w = &clusterWindow{target: target}
			r.clusters[c.GetClusterName()] = w
		}
		smp := sample{end: now}
		for _, l := range c.GetUpstreamLocalityStats() {
			smp.issued = sat(smp.issued, l.GetTotalIssuedRequests())
			smp.success = sat(smp.success, l.GetTotalSuccessfulRequests())
			smp.errors = sat(smp.errors, l.GetTotalErrorRequests())
			smp.inflight = sat(smp.inflight, l.GetTotalRequestsInProgress())
			for _, m := range l.GetLoadMetricStats() {
				n, v := float64(m.GetNumRequestsFinishedWithMetric()), m.GetTotalMetricValue()
				// A quantile above an hour is not a latency; NaN
				// and Inf would not even encode as JSON.
				if n <= 0 || !(v >= 0 && v <= n*maxLatencyMs) {
					continue
				}
				switch m.GetMetricName() {
				case MetricP50:
					smp.p50Sum, smp.p50N = smp.p50Sum+v, smp.p50N+n
				case MetricP99:
					smp.p99Sum, smp.p99N = smp.p99Sum+v, smp.p99N+n
				}
			}
		}
		if smp.issued == 0 {
			// Clients that do not fill total_issued_requests (it came
			// later than the others) issued at least what completed.
			smp.issued = smp.success + smp.errors
		}
		// Requests the source's proxy answered 503 itself, its circuit
		// breakers' overflow (Envoy's upstream_rq_dropped): requests
		// from the source to the target that failed, which the
		// localities, the target's hosts' counts, leave out.
		if d := c.GetTotalDroppedRequests(); d > 0 {
			smp.issued, smp.errors = sat(smp.issued, d), sat(smp.errors, d)
		}
		w.push(smp, s.limits.MaxSamples)
		k := edgeKey{owner: r.who.MeshOwner, mesh: r.who.Mesh, kind: r.who.Kind, source: r.who.Name, target: target}
		t := s.totals[k]
		if t == nil {
			if len(s.totals) >= s.limits.MaxEdges {
				s.droppedEdges++
				continue
			}
			t = &edgeTotal{}
			s.totals[k] = t
		}
		t.requests = min(t.requests+smp.issued, math.MaxUint64-maxCount) // each < maxCount: no wrap
		t.errors = min(t.errors+smp.errors, math.MaxUint64-maxCount)
	}
}

// expireLocked forgets reports older than the window, and closed
// reporters left with none. Called with mu held.
func (s *Server) expireLocked(now time.Time) {
	cut := now.Add(-s.limits.Window)
	for _, r := range s.reporters {
		s.expireReporterLocked(r, cut)
	}
}

// expireReporterLocked forgets r's reports that ended at or before cut,
// and r itself when it is closed and has none left (then it returns
// false). Called with mu held.
func (s *Server) expireReporterLocked(r *reporter, cut time.Time) (kept bool) {
	for name, w := range r.clusters {
		i := 0
		for i < len(w.samples) && !w.samples[i].end.After(cut) {
			i++
		}
		if i == len(w.samples) {
			delete(r.clusters, name)
			continue
		}
		if i > 0 {
			w.drop(i)
		}
	}
	if r.closed && len(r.clusters) == 0 {
		delete(s.reporters, r.id)
		return false
	}
	return true
}

// Endpoint is one end of an Edge.
type Endpoint struct {
	Kind appmesh.Kind `json:"kind"`
	Name string       `json:"name"`
}

// Edge is the traffic from one virtual node or gateway to one virtual
// node over the window, summed over the source's replicas.
type Edge struct {
	Source Endpoint `json:"source"`
	// VirtualService is the service the source called the target
	// through, "" when unknown or ambiguous; the caller fills it.
	VirtualService    string    `json:"virtualService"`
	Target            Endpoint  `json:"target"`
	RequestsPerSecond float64   `json:"requestsPerSecond"`
	ErrorRatio        float64   `json:"errorRatio"`
	P50Ms             *float64  `json:"p50Ms"`
	P99Ms             *float64  `json:"p99Ms"`
	LastReport        time.Time `json:"lastReport"`
	// InFlight is the requests in progress at the latest report of each
	// open stream; not part of the JSON.
	InFlight uint64 `json:"-"`
}

// Window is the span rates are averaged over.
func (s *Server) Window() time.Duration { return s.limits.Window }

// Traffic returns the edges of a mesh seen in the window, sorted by
// source and target.
func (s *Server) Traffic(owner, mesh string) []Edge {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	cut := now.Add(-s.limits.Window)
	type acc struct {
		e                          Edge
		success, errors            uint64
		p50Sum, p50N, p99Sum, p99N float64
	}
	edges := map[edgeKey]*acc{}
	for _, r := range s.reporters {
		// Only this mesh's reports are expired here; the others' are
		// when a stream starts.
		if r.who.MeshOwner != owner || r.who.Mesh != mesh || !s.expireReporterLocked(r, cut) {
			continue
		}
		for _, w := range r.clusters {
			k := edgeKey{kind: r.who.Kind, source: r.who.Name, target: w.target}
			a := edges[k]
			if a == nil {
				a = &acc{e: Edge{Source: Endpoint{Kind: r.who.Kind, Name: r.who.Name},
					Target: Endpoint{Kind: appmesh.KindVirtualNode, Name: w.target}}}
				edges[k] = a
			}
			// Rates are over the window, or the part of it the stream
			// has been open: the same span for every cluster of a
			// stream, reported or idle.
			span := min(now.Sub(r.start), s.limits.Window)
			a.success += w.sum.success
			a.errors += w.sum.errors
			a.p50Sum, a.p50N = a.p50Sum+w.sum.p50Sum, a.p50N+w.sum.p50N
			a.p99Sum, a.p99N = a.p99Sum+w.sum.p99Sum, a.p99N+w.sum.p99N
			if span > 0 {
				a.e.RequestsPerSecond += float64(w.sum.issued) / span.Seconds()
			}
			last := w.samples[len(w.samples)-1]
			if !r.closed {
				a.e.InFlight += last.inflight
			}
			if last.end.After(a.e.LastReport) {
				a.e.LastReport = last.end
			}
		}
	}
	out := make([]Edge, 0, len(edges))
	for _, a := range edges {
		if done := a.success + a.errors; done > 0 {
			a.e.ErrorRatio = float64(a.errors) / float64(done)
		}
		if a.p50N > 0 {
			v := a.p50Sum / a.p50N
			a.e.P50Ms = &v
		}
		if a.p99N > 0 {
			v := a.p99Sum / a.p99N
			a.e.P99Ms = &v
		}
		a.e.LastReport = a.e.LastReport.UTC()
		out = append(out, a.e)
	}
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.Source.Kind, b.Source.Kind), cmp.Compare(a.Source.Name, b.Source.Name),
			cmp.Compare(a.Target.Name, b.Target.Name))
	})
	return out
}
