package proxy

import (
	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/lrs"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// loadSource is what the load report (lrs) reads: the clusters in force,
// their hosts' request counters (those /clusters shows), their dropped
// requests, and their upstream_rq_time.
type loadSource struct {
	clusters *cluster.Manager
	stats    *stats.Store
}

func (s loadSource) LoadClusters() []lrs.Cluster {
	all := s.clusters.All()
	out := make([]lrs.Cluster, 0, len(all))
	for name, c := range all {
		lc := lrs.Cluster{Name: name, ServiceName: c.PB.GetEdsClusterConfig().GetServiceName(), Key: c,
			Dropped: c.Stats.DroppedTotal()}
		lc.Latency, _ = s.stats.HistogramValue("cluster." + name + ".upstream_rq_time")
		hosts := c.Hosts()
		lc.Hosts = make([]lrs.Host, 0, len(hosts))
		for _, h := range hosts {
			hs := h.Snapshot()
			region, zone, subZone := h.Locality()
			lc.Hosts = append(lc.Hosts, lrs.Host{Key: h, Locality: lrs.Locality{Region: region, Zone: zone, SubZone: subZone},
				RqTotal: hs.RqTotal, RqSuccess: hs.RqSuccess, RqError: hs.RqError, RqActive: hs.RqActive})
		}
		out = append(out, lc)
	}
	return out
}
