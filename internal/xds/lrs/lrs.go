// Package lrs is weft's Load Reporting Service (envoy.service.load_stats.v3):
// proxies (Envoy and weft proxy) report per-cluster request counts on it,
// and it keeps a short window of them in memory to tell which virtual node
// or gateway calls which virtual node, how often and how well.
//
//	proxy ──StreamLoadStats──▶ Server.StreamLoadStats (authorized as ADS is)
//	                              │ first request: node id -> identity,
//	                              │ reply send_all_clusters + interval
//	                              ▼
//	        window: reporter (one stream) -> cluster -> samples (bounded)
//	                              │
//	           Traffic(mesh) ─────┴──── Collector (Prometheus, /metrics)
//
// Cluster names map back to App Mesh the way the translator names them:
// cds_egress_<mesh>_<node>_<protocol>_<port> is a call to virtual node
// <node>; every other cluster (the node's own app, a gateway's
// self-redirect, the mesh's passthrough) is not an edge and is ignored.
package lrs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// Method is the full gRPC method of the service's one call.
const Method = "/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats"

// Defaults of Limits.
const (
	// DefaultInterval is the load reporting interval told to every
	// client: short enough for a live graph, long enough that a
	// thousand proxies cost the server little.
	DefaultInterval = 5 * time.Second
	// DefaultWindow is how long reports are kept: rates are averaged
	// over it.
	DefaultWindow = 30 * time.Second
	// DefaultMaxReporters caps the LRS streams whose reports are kept
	// (open ones and closed ones still in the window).
	DefaultMaxReporters = 20000
	// DefaultFirstRequestTimeout: a stream that names no node within it
	// is closed with DeadlineExceeded, so silence holds no reporter slot.
	DefaultFirstRequestTimeout = 10 * time.Second
	// DefaultMaxReportersPerNode caps the open LRS streams of one node
	// id (its replicas), as the xDS server caps its ADS streams, so that
	// one proxy cannot take every reporter slot.
	DefaultMaxReportersPerNode = 1000
	// DefaultMaxClustersPerReporter caps the clusters kept per stream;
	// the stats of further clusters are dropped and counted.
	DefaultMaxClustersPerReporter = 1000
	// DefaultMaxSamples caps the reports kept per cluster of a stream,
	// however often a client reports.
	DefaultMaxSamples = 64
	// DefaultMaxEdges caps the edges exported on /metrics: the label
	// sets of weft_traffic_* series.
	DefaultMaxEdges = 10000
)

// Limits bound the server's memory; zero fields take the defaults.
type Limits struct {
	Interval               time.Duration
	Window                 time.Duration
	MaxReporters           int
	MaxReportersPerNode    int
	MaxClustersPerReporter int
	MaxSamples             int
	MaxEdges               int
	// FirstRequestTimeout bounds the wait for a stream's first request
	// (the one naming its node), as the ADS server's does.
	FirstRequestTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.Interval <= 0 {
		l.Interval = DefaultInterval
	}
	if l.Window <= 0 {
		l.Window = DefaultWindow
	}
	if l.Window < 2*l.Interval {
		l.Window = 2 * l.Interval
	}
	if l.MaxReporters <= 0 {
		l.MaxReporters = DefaultMaxReporters
	}
	if l.MaxReportersPerNode <= 0 {
		l.MaxReportersPerNode = DefaultMaxReportersPerNode
	}
	if l.MaxClustersPerReporter <= 0 {
		l.MaxClustersPerReporter = DefaultMaxClustersPerReporter
	}
	if l.MaxSamples <= 0 {
		l.MaxSamples = DefaultMaxSamples
	}
	if l.MaxEdges <= 0 {
		l.MaxEdges = DefaultMaxEdges
	}
	if l.FirstRequestTimeout <= 0 {
		l.FirstRequestTimeout = DefaultFirstRequestTimeout
	}
	return l
}

// Options configure a Server. ParseNodeID is required.
type Options struct {
	// ParseNodeID turns a node id into an identity (the xDS server's
	// ParseNodeID with the default owner).
	ParseNodeID func(id string) (translate.Identity, error)
	// Authorize is the xDS server's hook (Options.Authorize there): a
	// non-nil error, a gRPC status, closes the stream. Nil: every stream
	// is served unproven, as ADS streams are.
	Authorize func(ctx context.Context, id translate.Identity) (proven bool, err error)
	Limits    Limits
	Log       *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Server is the LRS server. Register it on the xDS gRPC server.
type Server struct {
	opts   Options
	limits Limits

	mu        sync.Mutex
	reporters map[uint64]*reporter       // by stream; protected by mu
	open      map[translate.Identity]int // open streams by node; protected by mu
	nextID    uint64                     // protected by mu
	totals    map[edgeKey]*edgeTotal
	// Counters for /metrics; protected by mu.
	droppedClusters, droppedEdges, refused uint64
}

// New returns a server.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{opts: opts, limits: opts.Limits.withDefaults(),
		reporters: map[uint64]*reporter{}, open: map[translate.Identity]int{}, totals: map[edgeKey]*edgeTotal{}}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	lrsv3.RegisterLoadReportingServiceServer(r, service{s})
}

// UnknownServiceHandler returns a server option that serves LRS on a gRPC
// server this package cannot register on (one built inside the xDS
// server): calls of services the server does not know come here, and any
// other method than Method gets Unimplemented, as it would without the
// option.
func (s *Server) UnknownServiceHandler() grpc.ServerOption {
	return grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(stream)
		if m != Method {
			return status.Errorf(codes.Unimplemented, "unknown method %s", m)
		}
		return s.stream(&grpc.GenericServerStream[lrsv3.LoadStatsRequest, lrsv3.LoadStatsResponse]{ServerStream: stream})
	})
}

type service struct{ s *Server }

func (v service) StreamLoadStats(st lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	return v.s.stream(st)
}

// stream serves one LRS stream: the first request names the node, which
// must pass Authorize; the server answers with the clusters to report
// (all) and the interval, then takes reports until the client ends.
func (s *Server) stream(st lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	ctx := st.Context()
	// The first request, which names the node, within FirstRequestTimeout:
	// a stream that says nothing is closed (returning ends the stream and
	// with it the Recv below).
	type first struct {
		req *lrsv3.LoadStatsRequest
		err error
	}
	got := make(chan first, 1)
	go func() { // ends when Recv returns: a request, or the stream's end
		req, err := st.Recv()
		got <- first{req, err}
	}()
	timer := time.NewTimer(s.limits.FirstRequestTimeout)
	defer timer.Stop()
	var req *lrsv3.LoadStatsRequest
	select {
	case f := <-got:
		if f.err != nil {
			return nil
		}
		req = f.req
	case <-timer.C:
		s.count(&s.refused)
		return status.Errorf(codes.DeadlineExceeded, "no load stats request naming the node within %s of the stream's start", s.limits.FirstRequestTimeout)
	}
	node := req.GetNode()
	if node.GetId() == "" {
		return status.Error(codes.InvalidArgument, "node.id: the first load stats request must name the node")
	}
	id, err := s.opts.ParseNodeID(node.GetId())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "node.id: %v", err)
	}
	if s.opts.Authorize != nil {
		if _, err := s.opts.Authorize(ctx, id); err != nil {
			s.count(&s.refused)
			return err
		}
	}
	r, err := s.attach(id)
	if err != nil {
		return err
	}
	defer s.detach(r)
	log := s.opts.Log.With("node", node.GetId())
	log.Debug("lrs stream open")
	if err := st.Send(&lrsv3.LoadStatsResponse{
		SendAllClusters:       true,
		LoadReportingInterval: durationpb.New(s.limits.Interval),
	}); err != nil {
		return nil
	}
	for {
		if err := s.take(r, node, req); err != nil {
			return err
		}
		req, err = st.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// take records one request's cluster stats. A request may repeat the
// stream's node or leave it out; naming another node is refused: a proxy
// reports for itself only.
func (s *Server) take(r *reporter, first *corev3.Node, req *lrsv3.LoadStatsRequest) error {
	if n := req.GetNode(); n != nil && n.GetId() != first.GetId() {
		s.count(&s.refused)
		return status.Errorf(codes.PermissionDenied, "node.id: this stream reports for %q, not %q", clip(first.GetId()), clip(n.GetId()))
	}
	if len(req.GetClusterStats()) == 0 {
		return nil
	}
	s.record(r, req.GetClusterStats(), s.opts.Now())
	return nil
}

func (s *Server) count(c *uint64) {
	s.mu.Lock()
	*c++
	s.mu.Unlock()
}

// attach makes room for a new stream's reports: a full table evicts the
// closed reporter seen last the longest ago, or refuses the stream.
func (s *Server) attach(id translate.Identity) (*reporter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.expireLocked(now)
	if s.open[id] >= s.limits.MaxReportersPerNode {
		s.refused++
		return nil, status.Errorf(codes.ResourceExhausted, "node %s has %d load reporting streams open, the limit", id.Name, s.limits.MaxReportersPerNode)
	}
	if len(s.reporters) >= s.limits.MaxReporters {
		var victim *reporter
		for _, r := range s.reporters {
			if r.closed && (victim == nil || r.last.Before(victim.last)) {
				victim = r
			}
		}
		if victim == nil {
			s.refused++
			return nil, status.Errorf(codes.ResourceExhausted, "the load reporting service has %d reporters, its limit", s.limits.MaxReporters)
		}
		delete(s.reporters, victim.id)
	}
	s.nextID++
	r := &reporter{id: s.nextID, who: id, clusters: map[string]*clusterWindow{}, start: now, last: now}
	s.reporters[r.id] = r
	s.open[id]++
	return r, nil
}

// detach marks the stream closed; its reports stay until the window has
// passed them.
func (s *Server) detach(r *reporter) {
	s.mu.Lock()
	r.closed = true
	if s.open[r.who]--; s.open[r.who] <= 0 {
		delete(s.open, r.who)
	}
	s.mu.Unlock()
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
