// Package lrs is weft proxy's load reporting client
// (envoy.service.load_stats.v3, as Envoy speaks it): on a stream to the
// control plane it sends, every interval the server asks for, each
// cluster's requests issued, completed, failed and in progress during the
// interval, read from the proxy's stats.
//
//	stats.Store.ClusterLoads ──deltas every interval──▶ StreamLoadStats ──▶ control plane
//	                                                    ◀── clusters, interval
package lrs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

// Loads reads the proxy's per-cluster counts (stats.Store).
type Loads interface {
	ClusterLoads() []stats.ClusterLoad
}

// Run reports until ctx ends, reconnecting with backoff, and returns nil
// then. A server without LRS (Unimplemented) ends reporting: Run logs it
// and returns nil.
func Run(ctx context.Context, cfg Config, loads Loads, log *slog.Logger) error {
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
		progressed, err := stream(ctx, client, cfg.Node, loads)
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
func stream(ctx context.Context, client lrsv3.LoadReportingServiceClient, node *corev3.Node, loads Loads) (progressed bool, err error) {
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
	prev := index(loads.ClusterLoads())
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
			now0 := index(loads.ClusterLoads())
			req := &lrsv3.LoadStatsRequest{Node: node, ClusterStats: report(prev, now0, cur, now.Sub(last))}
			prev, last = now0, now
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

func index(ls []stats.ClusterLoad) map[string]stats.ClusterLoad {
	m := make(map[string]stats.ClusterLoad, len(ls))
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

// report builds the interval's cluster stats: what changed between prev
// and now for the clusters a asks for, leaving out idle clusters (once
// their in-flight count has been reported back to zero).
func report(prev, now map[string]stats.ClusterLoad, a ask, interval time.Duration) []*endpointv3.ClusterStats {
	var out []*endpointv3.ClusterStats
	for name, n := range now {
		if !a.all && !a.clusters[name] {
			continue
		}
		p := prev[name]
		issued, done, failed := delta(n.RqTotal, p.RqTotal), delta(n.RqCompleted, p.RqCompleted), delta(n.Rq5xx, p.Rq5xx)
		active := uint64(max(n.RqActive, 0))
		if issued == 0 && done == 0 && active == 0 && p.RqActive <= 0 {
			continue // idle, and the server knows it has nothing in flight
		}
		ls := &endpointv3.UpstreamLocalityStats{
			Locality:                &corev3.Locality{},
			TotalIssuedRequests:     issued,
			TotalSuccessfulRequests: done - min(failed, done),
			TotalErrorRequests:      failed,
			TotalRequestsInProgress: active,
		}
		// Latency of the interval's requests, as load metrics the server
		// weighs by their count (internal/xds/lrs's MetricP50/MetricP99).
		if lat := n.Latency.Since(p.Latency); lat.Count > 0 {
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
		out = append(out, &endpointv3.ClusterStats{
			ClusterName:           name,
			UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{ls},
			LoadReportInterval:    durationpb.New(interval),
		})
	}
	return out
}

// The load metrics latency is reported under; the server reads them by
// these names.
const (
	metricP50 = "upstream_rq_time_p50_ms"
	metricP99 = "upstream_rq_time_p99_ms"
)

// delta is a counter's growth; counters live as long as the proxy, so a
// decrease (none expected) reads as zero.
func delta(now, prev int64) uint64 {
	if now < prev {
		return 0
	}
	return uint64(now - prev)
}
