package etcd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// How a replica learnt of a revision (label "via" of learn_seconds).
const (
	viaCommit = "commit" // its own write, from the commit's response
	viaWatch  = "watch"  // etcd's watch (another replica's write, or its own when the watch was first)
)

// metrics are the store's Prometheus series; the Store is their
// prometheus.Collector, registered by whoever serves /metrics.
type metrics struct {
	commit prometheus.Histogram
	learn  *prometheus.HistogramVec // by via
	stale  *prometheus.CounterVec   // by outcome
	// retried counts requests tried again through another member after
	// their first member did not answer in time, by request (read,
	// commit).
	retried *prometheus.CounterVec
	// conflicts counts commits that failed their compares: something
	// the attempt read changed after its snapshot, and it runs again.
	conflicts prometheus.Counter
	// seqGuarded counts commits that compared the sequence key instead
	// of what they read (more than MaxCompares reads): any write after
	// their snapshot makes them conflict.
	seqGuarded prometheus.Counter
}

// Outcomes of a write's serializable first read (label "outcome" of
// stale_first_reads_total).
const (
	staleUsed   = "used"   // the attempt went on with it
	staleBehind = "behind" // older than a revision the replica had seen: read again linearizably
	staleRerun  = "rerun"  // the attempt failed, wrote nothing or conflicted: run again linearizably
	staleMirror = "mirror" // read from the replica's mirror (mirror.go), not from a member
)

func newMetrics() *metrics {
	// 250 µs to about 8 s, in steps of 1.41 (half an octave), fine enough
	// to read a percentile off a benchmark's run.
	buckets := prometheus.ExponentialBuckets(0.00025, 1.4142, 31)
	return &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "commit_seconds",
			Help:    "Time from sending a write transaction to etcd to its successful response (the quorum's commit).",
			Buckets: buckets,
		}),
		learn: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "learn_seconds",
			Help: "Time from a weft replica sending a write to etcd to this replica's store watchers receiving it, per write and watcher it concerns, by how it was learnt (commit: this replica's own write, from the commit's response; watch: etcd's watch). " +
				"Measured against the writer's clock, carried in the write: across machines it includes their clock difference.",
			Buckets: buckets,
		}, []string{"via"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "stale_first_reads_total",
			Help: "Write attempts whose first read was serializable, by outcome: used (the attempt went on with it), behind (the member was behind a revision this replica had seen; read again linearizably), rerun (the attempt failed, wrote nothing or conflicted, and ran again on a linearizable snapshot; also counted as used or mirror), mirror (the attempt read from this replica's copy of the keys its watch keeps, with no request to etcd).",
		}, []string{"outcome"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "retried_requests_total",
			Help: "Requests sent once more through another etcd member after their first member did not answer within half the request timeout, by request (read; commit: only a commit whose compares make a second application impossible).",
		}, []string{"request"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "conflicts_total",
			Help: "Write attempts whose commit etcd refused because something they read had changed since their snapshot (a concurrent write); each runs again.",
		}),
		seqGuarded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "store_etcd", Name: "sequence_guarded_commits_total",
			Help: "Write attempts that read more keys and ranges than fit in one etcd transaction's compares, and so were committed only if nothing at all had been written since their snapshot.",
		}),
	}
}

// learned records one write reaching a watcher that it concerns (a change
// under the watcher's prefix): each such watcher counts it once.
func (m *metrics) learned(via string, d time.Duration) {
	if d < 0 {
		d = 0
	}
	m.learn.WithLabelValues(via).Observe(d.Seconds())
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	s.metrics.commit.Describe(ch)
	s.metrics.learn.Describe(ch)
	s.metrics.stale.Describe(ch)
	s.metrics.retried.Describe(ch)
	s.metrics.conflicts.Describe(ch)
	s.metrics.seqGuarded.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.metrics.commit.Collect(ch)
	s.metrics.learn.Collect(ch)
	s.metrics.stale.Collect(ch)
	s.metrics.retried.Collect(ch)
	s.metrics.conflicts.Collect(ch)
	s.metrics.seqGuarded.Collect(ch)
}
