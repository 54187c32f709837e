// Package lrs is weft proxy's load reporting client
// (envoy.service.load_stats.v3, as Envoy speaks it): on a stream to the
// control plane it sends, every interval the server asks for, each
// cluster's load during the interval as Envoy's LoadStatsReporter reads
// it: per locality, the sums of its hosts' requests issued, succeeded,
// failed and in progress, and the cluster's requests dropped.
//
//	Source.LoadClusters ──deltas every interval──▶ StreamLoadStats ──▶ control plane
//	                                               ◀── clusters, interval
package lrs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// Bounds of the interval a server may ask for: a server cannot make the
// proxy report more often than MinInterval.
const (
	MinInterval = time.Second
	MaxInterval = 10 * time.Minute
)

// Config configures a client.
type Config struct {
	Server string // host:port of the control plane: the ADS server's
	Node   *corev3.Node
	// DialOptions are the ADS connection's (TLS, a join token), after
	// the same defaults.
	DialOptions []grpc.DialOption
	// BackoffBase and BackoffMax bound the reconnect delay; defaults are
	// Envoy's 500 ms and 30 s.
	BackoffBase, BackoffMax time.Duration
}

// Source reads the proxy's clusters: the proxy's cluster manager.
type Source interface {
	// LoadClusters returns every cluster's counters now; the client
	// keeps nothing of them but their values.
	LoadClusters() []Cluster
}

// Cluster is one cluster's counters at a moment.
type Cluster struct {
	Name string
	// ServiceName is the EDS service_name, reported as
	// cluster_service_name when set, as Envoy reports it.
	ServiceName string
	// Key identifies the cluster's instance (comparable): a cluster
	// rebuilt under the same name counts Dropped from zero, as Envoy's
	// ClusterInfo does.
	Key any
	// Hosts are the cluster's hosts now. A host removed since the last
	// report is not reported again, nor what it counted since then, as
	// in Envoy, whose report reads the hosts in the cluster's priority
	// set only.
	Hosts []Host
	// Dropped is upstream_rq_dropped since the instance was built: the
	// requests answered 503 without being sent, an overflow of the
	// circuit breakers (cluster.Stats.Dropped).
	Dropped int64
	// Latency is upstream_rq_time since the proxy started (it outlives
	// the cluster's instances).
	Latency stats.HistogramSnapshot
}

// Host is one host's counters since it was added, as Envoy's host stats
// (and /clusters) count them.
type Host struct {
	// Key identifies the host's instance (comparable): it outlives the
	// EDS updates that keep its address and locality.
	Key      any
	Locality Locality
	// RqTotal, RqSuccess and RqError are counters; RqActive a gauge.
	RqTotal, RqSuccess, RqError, RqActive int64
}

// Locality is an EDS locality.
type Locality struct{ Region, Zone, SubZone string }

// Run reports until ctx ends, reconnecting with backoff, and returns nil
// then. A server without LRS (Unimplemented) ends reporting: Run logs it
// and returns nil.
func Run(ctx context.Context, cfg Config, src Source, log *slog.Logger) error {
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
	}, cfg.DialOptions...)
	// The same address set as the ADS stream, with the same fail-over.
	target, topts, err := xdsclient.DialTarget(cfg.Server)
	if err != nil {
		return fmt.Errorf("lrs client: %w", err)
	}
	conn, err := grpc.NewClient(target, append(opts, topts...)...)
	if err != nil {
		return fmt.Errorf("lrs client for %s: %w", cfg.Server, err)
	}
	defer conn.Close()
	client := lrsv3.NewLoadReportingServiceClient(conn)
	delay := cfg.BackoffBase
	for {
		progressed, err := stream(ctx, client, cfg.Node, src)
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unimplemented:
			log.Info("the control plane has no load reporting service; not reporting load", "server", cfg.Server)
			return nil
		case codes.InvalidArgument, codes.PermissionDenied:
			// Asking again cannot help; ADS reports the same refusal.
			log.Warn("the control plane refused load reports", "server", cfg.Server, "err", err)
			return nil
		}
		if progressed {
			delay = cfg.BackoffBase
		}
		wait := time.Duration(rand.Int64N(int64(delay))) + delay/2
		log.Debug("lrs stream ended; reconnecting", "server", cfg.Server, "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, cfg.BackoffMax)
	}
}

// ask is what the server asked for: the clusters to report (all when
// all) and how often.
type ask struct {
	all      bool
	clusters map[string]bool
	interval time.Duration
}

// has reports whether a asks for the cluster.
func (a ask) has(cluster string) bool { return a.all || a.clusters[cluster] }

func parseAsk(r *lrsv3.LoadStatsResponse) ask {
	a := ask{all: r.GetSendAllClusters(), interval: r.GetLoadReportingInterval().AsDuration()}
	a.interval = min(max(a.interval, MinInterval), MaxInterval)
	if !a.all {
		a.clusters = make(map[string]bool, len(r.GetClusters()))
		for _, c := range r.GetClusters() {
			a.clusters[c] = true
		}
	}
	return a
}

// stream runs one LRS stream until it fails or ctx ends; progressed says
// whether the server answered, which resets the backoff.
func stream(ctx context.Context, client lrsv3.LoadReportingServiceClient, node *corev3.Node, src Source) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.StreamLoadStats(ctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: node}); err != nil {
		return false, recvErr(st, err)
	}
	first, err := st.Recv()
	if err != nil {
		return false, err
	}
	cur := parseAsk(first)
	asks := make(chan ask, 1)
	recvDone := make(chan error, 1)
	go func() { // ends when the stream does: its error, or cancel above
		for {
			r, err := st.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			select { // keep only the latest ask
			case <-asks:
			default:
			}
			asks <- parseAsk(r)
		}
	}()
	// What happened before the stream is not reported.
	rep := NewReporter(src.LoadClusters())
	last := time.Now()
	t := time.NewTicker(cur.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-recvDone:
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return true, err
		case a := <-asks:
			if a.interval != cur.interval {
				t.Reset(a.interval)
			}
			cur = a
		case now := <-t.C:
			req := &lrsv3.LoadStatsRequest{Node: node, ClusterStats: rep.Report(src.LoadClusters(), cur.has, now.Sub(last))}
			last = now
			if len(req.ClusterStats) == 0 {
				continue
			}
			if err := st.Send(req); err != nil {
				return true, recvErr(st, err)
			}
		}
	}
}

// recvErr returns the stream's status after a failed Send, which itself
// only says io.EOF.
func recvErr(st lrsv3.LoadReportingService_StreamLoadStatsClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := st.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// Reporter is the synchronous core of a stream: its successive reports,
// each the growth of the counters since the one before.
type Reporter struct{ prev baseline }

// NewReporter starts from the counts of clusters: what they counted
// before is not reported.
func NewReporter(clusters []Cluster) *Reporter {
	_, b := report(baseline{}, clusters, func(string) bool { return false }, 0)
	return &Reporter{prev: b}
}

// Report returns the stats of the clusters asked for over the interval
// since the last report (see report), and makes clusters the next one's
// baseline.
func (r *Reporter) Report(clusters []Cluster, asked func(cluster string) bool, interval time.Duration) []*endpointv3.ClusterStats {
	out, next := report(r.prev, clusters, asked, interval)
	r.prev = next
	return out
}

// baseline is what the last report read: the counts each interval's
// report is the growth from. It holds the hosts and clusters of that read
// only, so it is as large as the proxy's clusters are, whatever came and
// went before.
type baseline struct {
	hosts    map[any]Host           // by Host.Key
	clusters map[string]clusterBase // by name
}

type clusterBase struct {
	key     any
	dropped int64
	latency stats.HistogramSnapshot
	// busy: the cluster's last report said requests were in progress,
	// so the next one is sent even when idle, to say none is any more.
	busy bool
}

// localityKey groups hosts as Envoy's report does: per priority and
// locality. weft proxy balances over priority 0 only (it refuses other
// priorities), so every host is of priority 0.
type localityKey struct {
	priority uint32
	loc      Locality
}

// report builds the interval's cluster stats, for the clusters asked
// for, as Envoy's LoadStatsReporter::sendLoadStatsRequest does: for each
// locality, its hosts' growth of rq_success, rq_error and rq_total and
// their rq_active now, a locality with no success, error or request in
// progress left out; the cluster's dropped requests; the interval. It
// also returns the baseline of the next report. Unlike Envoy, an idle
// cluster (no locality reported, nothing dropped) is left out, once a
// report has said nothing is in progress any more.
func report(prev baseline, now []Cluster, asked func(string) bool, interval time.Duration) ([]*endpointv3.ClusterStats, baseline) {
	next := baseline{hosts: map[any]Host{}, clusters: make(map[string]clusterBase, len(now))}
	var out []*endpointv3.ClusterStats
	for _, c := range now {
		p, seen := prev.clusters[c.Name]
		nb := clusterBase{key: c.Key, dropped: c.Dropped, latency: c.Latency}
		// A cluster added since the last report counts from zero (Envoy
		// leaves out a new cluster's first interval), its latency too
		// (kept by name, it holds an earlier instance's as well if the
		// name was in use before the last report).
		if seen && p.key != c.Key {
			p.dropped = 0 // a new instance, counting from zero
		}
		locs := map[localityKey]*endpointv3.UpstreamLocalityStats{}
		for _, h := range c.Hosts {
			next.hosts[h.Key] = h
			ph := prev.hosts[h.Key] // zero for a host added since
			k := localityKey{loc: h.Locality}
			ls := locs[k]
			if ls == nil {
				ls = &endpointv3.UpstreamLocalityStats{
					Locality: &corev3.Locality{Region: h.Locality.Region, Zone: h.Locality.Zone, SubZone: h.Locality.SubZone},
					Priority: k.priority,
				}
				locs[k] = ls
			}
			ls.TotalSuccessfulRequests += delta(h.RqSuccess, ph.RqSuccess)
			ls.TotalErrorRequests += delta(h.RqError, ph.RqError)
			ls.TotalIssuedRequests += delta(h.RqTotal, ph.RqTotal)
			ls.TotalRequestsInProgress += uint64(max(h.RqActive, 0))
		}
		if !asked(c.Name) {
			next.clusters[c.Name] = nb
			continue
		}
		cs := &endpointv3.ClusterStats{ClusterName: c.Name, ClusterServiceName: c.ServiceName,
			TotalDroppedRequests: delta(c.Dropped, p.dropped), LoadReportInterval: durationpb.New(interval)}
		var inProgress uint64
		for _, ls := range locs {
			if ls.TotalSuccessfulRequests+ls.TotalErrorRequests+ls.TotalRequestsInProgress == 0 {
				continue
			}
			inProgress += ls.TotalRequestsInProgress
			cs.UpstreamLocalityStats = append(cs.UpstreamLocalityStats, ls)
		}
		nb.busy = inProgress > 0
		next.clusters[c.Name] = nb
		if len(cs.UpstreamLocalityStats) == 0 && cs.TotalDroppedRequests == 0 && !p.busy {
			continue // idle, and the server knows it has nothing in progress
		}
		slices.SortFunc(cs.UpstreamLocalityStats, func(x, y *endpointv3.UpstreamLocalityStats) int {
			return cmp.Or(cmp.Compare(x.Priority, y.Priority), cmp.Compare(x.Locality.Region, y.Locality.Region),
				cmp.Compare(x.Locality.Zone, y.Locality.Zone), cmp.Compare(x.Locality.SubZone, y.Locality.SubZone))
		})
		// Latency of the interval's requests, as load metrics the server
		// weighs by their count (internal/xds/lrs's MetricP50/MetricP99).
		// weft proxy's own addition: the cluster's, on its first
		// locality (the server sums the localities').
		if lat := c.Latency.Since(p.latency); lat.Count > 0 && len(cs.UpstreamLocalityStats) > 0 {
			ls := cs.UpstreamLocalityStats[0]
			for _, m := range []struct {
				name string
				q    float64
			}{{metricP50, 0.5}, {metricP99, 0.99}} {
				if v, ok := lat.Quantile(m.q); ok {
					ls.LoadMetricStats = append(ls.LoadMetricStats, &endpointv3.EndpointLoadMetricStats{
						MetricName: m.name, NumRequestsFinishedWithMetric: lat.Count, TotalMetricValue: v * float64(lat.Count),
					})
				}
			}
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(x, y *endpointv3.ClusterStats) int { return cmp.Compare(x.ClusterName, y.ClusterName) })
	return out, next
}

// The load metrics latency is reported under; the server reads them by
// these names.
const (
	metricP50 = "upstream_rq_time_p50_ms"
	metricP99 = "upstream_rq_time_p99_ms"
)

// delta is a counter's growth; a counter only grows while its host or
// cluster instance lives, so a decrease (none expected) reads as zero.
func delta(now, prev int64) uint64 {
	if now < prev {
		return 0
	}
	return uint64(now - prev)
}
