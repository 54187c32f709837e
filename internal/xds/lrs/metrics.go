package lrs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the Prometheus series of the server: per edge (at most
// Limits.MaxEdges label sets; further edges are counted as dropped)
//
//	weft_traffic_requests_total{mesh_owner,mesh,source_kind,source,target}
//	weft_traffic_errors_total{...}
//	weft_traffic_requests_in_flight{...}
//
// counting the requests the sources reported since this server started
// (rate() of them is requests per second) and those in flight at the
// open streams' latest reports, and the server's own state:
// weft_lrs_reporters, weft_lrs_dropped_total{reason} and
// weft_lrs_refused_streams_total.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

var (
	edgeLabels    = []string{"mesh_owner", "mesh", "source_kind", "source", "target"}
	requestsDesc  = prometheus.NewDesc("weft_traffic_requests_total", "Requests from a virtual node or gateway to a virtual node, as its proxies reported them over LRS: sent to the target's hosts (retries included), or dropped by the source's circuit breakers.", edgeLabels, nil)
	errorsDesc    = prometheus.NewDesc("weft_traffic_errors_total", "Requests of weft_traffic_requests_total that failed (5xx, reset or timed out, a failed gRPC status, retried, or dropped by the source's circuit breakers).", edgeLabels, nil)
	inFlightDesc  = prometheus.NewDesc("weft_traffic_requests_in_flight", "Requests in flight from a virtual node or gateway to a virtual node at its open LRS streams' latest reports.", edgeLabels, nil)
	reportersDesc = prometheus.NewDesc("weft_lrs_reporters", "LRS streams whose reports are held (open, or closed and still in the window).", nil, nil)
	droppedDesc   = prometheus.NewDesc("weft_lrs_dropped_total", "Cluster stats not kept: reason cluster_limit (a stream's clusters), edge_limit (edges on /metrics).", []string{"reason"}, nil)
	refusedDesc   = prometheus.NewDesc("weft_lrs_refused_streams_total", "LRS streams refused: not authorized, another node's report, the reporter limit, or no first request in time.", nil, nil)
)

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{requestsDesc, errorsDesc, inFlightDesc, reportersDesc, droppedDesc, refusedDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	type row struct {
		k edgeKey
		t edgeTotal
	}
	rows := make([]row, 0, len(s.totals))
	for k, t := range s.totals {
		rows = append(rows, row{k, *t})
	}
	// In flight, for the edges exported only (their number is bounded).
	inflight := map[edgeKey]uint64{}
	for _, r := range s.reporters {
		if r.closed {
			continue
		}
		for _, w := range r.clusters {
			k := edgeKey{owner: r.who.MeshOwner, mesh: r.who.Mesh, kind: r.who.Kind, source: r.who.Name, target: w.target}
			if _, ok := s.totals[k]; ok {
				inflight[k] += w.samples[len(w.samples)-1].inflight
			}
		}
	}
	reporters, dc, de, refused := len(s.reporters), s.droppedClusters, s.droppedEdges, s.refused
	s.mu.Unlock()
	for _, r := range rows {
		lv := []string{r.k.owner, r.k.mesh, string(r.k.kind), r.k.source, r.k.target}
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(r.t.requests), lv...)
		ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(r.t.errors), lv...)
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(inflight[r.k]), lv...)
	}
	ch <- prometheus.MustNewConstMetric(reportersDesc, prometheus.GaugeValue, float64(reporters))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(dc), "cluster_limit")
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(de), "edge_limit")
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(refused))
}
