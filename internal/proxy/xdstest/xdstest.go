// Package xdstest runs a real go-control-plane ADS server on 127.0.0.1 for
// weft proxy's tests: set a snapshot, watch the ACKs and NACKs that come
// back, stop the server and start it again on the same address.
package xdstest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// Request is one DiscoveryRequest the server received, or one
// DeltaDiscoveryRequest told the same way: Names is the stream's whole
// subscription of the type after the request (sorted), Version of an ACK
// the version of the response it answers, of a NACK the type's version
// last ACKed on the stream.
type Request struct {
	TypeURL, Version, Nonce string
	Names                   []string
	Error                   string // error_detail message of a NACK
	// Delta: initial_resource_versions of a type's first request.
	Delta   bool
	Initial map[string]string
}

// Server is a go-control-plane ADS server for one node.
type Server struct {
	t     testing.TB
	Addr  string
	Node  string
	cache cachev3.SnapshotCache

	mu       sync.Mutex
	reqs     []Request     // protected by mu
	changed  chan struct{} // closed and replaced on every request; protected by mu
	version  int
	grpc     *grpc.Server
	served   chan struct{}
	snapshot *cachev3.Snapshot
	delta    map[int64]*deltaStream // protected by mu
}

// deltaStream is what the server knows of one delta stream, to tell its
// requests as Requests.
type deltaStream struct {
	sent  map[string]string          // response nonce -> version
	acked map[string]string          // type -> version last ACKed
	subs  map[string]map[string]bool // type -> subscribed names
}

// Start starts a server for node on 127.0.0.1:0. It stops at test end.
func Start(t testing.TB, node string) *Server {
	t.Helper()
	s := &Server{t: t, Node: node, changed: make(chan struct{})}
	// Non-ADS mode: the ADS-mode cache only answers requests naming every
	// resource of a type, and proxies request what they use.
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	s.listen("127.0.0.1:0")
	t.Cleanup(s.Stop)
	return s
}

// parking stops go-control-plane's cache from answering a NACK with the
// same resources again at once (go-control-plane#962): a NACK of the
// current version waits for the next snapshot.
type parking struct {
	cachev3.SnapshotCache
	s *Server
}

func (p parking) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		p.s.mu.Lock()
		snap := p.s.snapshot
		p.s.mu.Unlock()
		if snap != nil {
			r := proto.Clone(req).(*cachev3.Request)
			r.VersionInfo = snap.GetVersion(req.GetTypeUrl())
			req = r
		}
	}
	return p.SnapshotCache.CreateWatch(req, sub, out)
}

func (s *Server) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("xdstest: listen %s: %v", addr, err)
	}
	s.Addr = ln.Addr().String()
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		q := Request{TypeURL: r.GetTypeUrl(), Version: r.GetVersionInfo(), Nonce: r.GetResponseNonce(), Names: r.GetResourceNames()}
		if r.GetErrorDetail() != nil {
			q.Error = r.GetErrorDetail().GetMessage()
		}
		s.record(q)
		return nil
	}, StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		ds := s.deltaStream(id)
		url := r.GetTypeUrl()
		if ds.subs[url] == nil {
			ds.subs[url] = map[string]bool{}
		}
		for _, n := range r.GetResourceNamesSubscribe() {
			ds.subs[url][n] = true
		}
		for _, n := range r.GetResourceNamesUnsubscribe() {
			delete(ds.subs[url], n)
		}
		q := Request{TypeURL: url, Nonce: r.GetResponseNonce(), Names: slices.Sorted(maps.Keys(ds.subs[url])), Delta: true, Initial: r.GetInitialResourceVersions()}
		switch {
		case q.Nonce == "":
		case r.GetErrorDetail() != nil:
			q.Error = r.GetErrorDetail().GetMessage()
			q.Version = ds.acked[url]
		default:
			q.Version = ds.sent[q.Nonce]
			ds.acked[url] = q.Version
		}
		s.record(q)
		return nil
	}, StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.deltaStream(id).sent[r.GetNonce()] = r.GetSystemVersionInfo()
	}}
	xds := serverv3.NewServer(context.Background(), parking{s.cache, s}, cb)
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xds)
	served := make(chan struct{})
	go func() { // the gRPC server; ends when Stop calls g.Stop
		defer close(served)
		_ = g.Serve(ln)
	}()
	s.mu.Lock()
	s.grpc, s.served = g, served
	s.delta = nil // stream ids start again with the new server
	s.mu.Unlock()
}

// record appends a request and signals it. Called with mu held.
func (s *Server) record(q Request) {
	s.reqs = append(s.reqs, q)
	close(s.changed)
	s.changed = make(chan struct{})
}

// deltaStream returns the state of delta stream id. Called with mu held.
func (s *Server) deltaStream(id int64) *deltaStream {
	if s.delta == nil {
		s.delta = map[int64]*deltaStream{}
	}
	ds := s.delta[id]
	if ds == nil {
		ds = &deltaStream{sent: map[string]string{}, acked: map[string]string{}, subs: map[string]map[string]bool{}}
		s.delta[id] = ds
	}
	return ds
}

// Stop stops the server, closing every stream. Idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	g, served := s.grpc, s.served
	s.grpc = nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	<-served
}

// Restart starts the server again on the same address, with the same
// snapshot.
func (s *Server) Restart() {
	s.Stop()
	s.listen(s.Addr)
}

// Set publishes a new snapshot version holding resources, of any xDS
// type: clusters, listeners, routes, endpoints and TLS secrets (served by
// name on the ADS stream, as weft server serves them).
func (s *Server) Set(resources ...types.Resource) string {
	s.t.Helper()
	byType := map[string][]types.Resource{}
	for _, r := range resources {
		url := resourcev3.APITypePrefix + string(r.ProtoReflect().Descriptor().FullName())
		byType[url] = append(byType[url], r)
	}
	s.mu.Lock()
	s.version++
	v := "v" + strconv.Itoa(s.version)
	s.mu.Unlock()
	snap, err := cachev3.NewSnapshot(v, byType)
	if err != nil {
		s.t.Fatalf("xdstest: snapshot: %v", err)
	}
	s.mu.Lock()
	s.snapshot = snap
	s.mu.Unlock()
	if err := s.cache.SetSnapshot(context.Background(), s.Node, snap); err != nil {
		s.t.Fatalf("xdstest: set snapshot: %v", err)
	}
	return v
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Mark returns the number of requests received so far, for WaitSince.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// WaitFor waits until a received request satisfies ok, or fails the test
// after timeout.
func (s *Server) WaitFor(timeout time.Duration, what string, ok func(Request) bool) Request {
	s.t.Helper()
	return s.WaitSince(0, timeout, what, ok)
}

// WaitSince is WaitFor looking only at requests after mark.
func (s *Server) WaitSince(mark int, timeout time.Duration, what string, ok func(Request) bool) Request {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := mark
	for {
		s.mu.Lock()
		reqs, ch := s.reqs, s.changed
		s.mu.Unlock()
		for _, r := range reqs[seen:] {
			if ok(r) {
				return r
			}
		}
		seen = len(reqs)
		select {
		case <-ch:
		case <-deadline.C:
			s.t.Fatalf("xdstest: no request %s within %v; got %s", what, timeout, fmt.Sprint(reqs))
			return Request{}
		}
	}
}

// WaitACK waits for an ACK of version for typeURL.
func (s *Server) WaitACK(typeURL, version string) {
	s.t.Helper()
	s.WaitFor(10*time.Second, "ACK "+version+" of "+typeURL, func(r Request) bool {
		return r.TypeURL == typeURL && r.Version == version && r.Error == "" && r.Nonce != ""
	})
}
