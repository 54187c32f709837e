package stats

import (
	"slices"
	"strings"
)

// ClusterLoad is one cluster's upstream request counts since the proxy
// started, as load reports need them.
type ClusterLoad struct {
	Name      string
	Issued    int64 // upstream_rq_total
	Completed int64 // upstream_rq_completed
	Errors    int64 // upstream_rq_5xx
	Active    int64 // upstream_rq_active
}

// ClusterLoads returns the counts of every cluster that has request
// stats, sorted by name.
func (s *Store) ClusterLoads() []ClusterLoad {
	const pre, suf = "cluster.", ".upstream_rq_total"
	s.mu.Lock()
	var names []string
	for n := range s.m {
		if strings.HasPrefix(n, pre) && strings.HasSuffix(n, suf) && len(n) > len(pre)+len(suf) {
			names = append(names, n[len(pre):len(n)-len(suf)])
		}
	}
	s.mu.Unlock()
	slices.Sort(names)
	out := make([]ClusterLoad, 0, len(names))
	for _, n := range names {
		p := pre + n + "."
		l := ClusterLoad{Name: n}
		l.Issued, _ = s.Value(p + "upstream_rq_total")
		l.Completed, _ = s.Value(p + "upstream_rq_completed")
		l.Errors, _ = s.Value(p + "upstream_rq_5xx")
		l.Active, _ = s.Value(p + "upstream_rq_active")
		out = append(out, l)
	}
	return out
}
