// Package server is weft's xDS control plane: it serves each proxy the
// Envoy configuration of its virtual node or virtual gateway over ADS, and
// pushes every store change to exactly the proxies it affects.
//
//	store ──follow──▶ runner (runner.go) ──steps──▶ machine (core.go, compute.go)
//	                  owns the watch, time,         synchronous: per-mesh Views, Cloud Map
//	                  goroutines; hands Ready       index, dependency index, translate
//	                  to the hub                    (parallel as an input), intern, validate
//	                       │                        once per distinct resource; Ready lists
//	                       ▼                        each identity's new snapshot
//	                  hub (hub.go) ──wake──▶ streams (stream.go, ads.go)
//	                  one snapshot per       each owns its state: SotW or delta from the
//	                  identity               same snapshot; type order, ACK/NACK, status
//
// A stream's first request names its proxy (node.id, see ParseNodeID); the
// machine translates that identity once, however many replicas connect.
// A write recomputes only the identities whose last translation read what
// it changed; a type whose resources did not change keeps its version and
// is not sent, so an endpoint change sends EDS only. A change of Cloud Map
// endpoints alone is not even translated: the assignments built from them
// are rebuilt (translate.EndpointSources), once each per batch. There is
// no timer between a write and its push: the runner takes what the watch
// has queued and pushes.
package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TranslateFunc computes one proxy's resources, sharing what it can with
// the other translations of the same batch through the Memo (which it may
// ignore): translate.TranslateWith.
type TranslateFunc func(*translate.View, translate.Identity, *translate.Memo) (*translate.Resources, error)

// Options configure a Server. Store, Translate and Log are required.
type Options struct {
	Store store.Store
	// LoadDiscovery reads Cloud Map's endpoints; nil serves none.
	LoadDiscovery LoadDiscovery
	// Translate computes one proxy's resources (translate.TranslateWith).
	Translate TranslateFunc
	// CheckResource and CheckRefs validate every translation before it is
	// served (translate.CheckResource and translate.CheckRefs: deep PGV
	// validation and semantic rules, then references); a failure keeps the
	// proxy's previous configuration. CheckResource must depend only on
	// the resource's content and the gRPC flag (translate.ForGRPC): the
	// machine calls it once per distinct resource and keeps its Facts
	// with the interned resource. A nil CheckResource skips validation.
	CheckResource func(m proto.Message, grpc bool) (translate.Facts, error)
	CheckRefs     func(translate.Summary) error
	// CheckAssembled, when set with CheckResource, checks the route
	// tables of a batch instead, each with the batch's HostChecks: it
	// must give what CheckResource gives
	// ((*translate.HostChecks).CheckAssembled, for translate.CheckResource).
	CheckAssembled func(hosts *translate.HostChecks, rc *routev3.RouteConfiguration, grpc bool) (translate.Facts, error)
	// DefaultOwner is the mesh owner for node ids that name none.
	DefaultOwner string
	Log          *slog.Logger
	// Registry receives the server's metrics; nil registers none.
	Registry prometheus.Registerer
	// Skipped counts the stored records the server leaves out (logged
	// "skipping undecodable record"): they do not decode, or a route
	// breaks a rule of appmesh.CheckStored. A Cloud Map record set aside
	// while its namespace or service is missing (discovery.ErrOrphaned) is
	// logged "setting aside record until its parent is back" and not
	// counted. Nil: not counted.
	Skipped prometheus.Counter
	// GRPCOptions are added to the gRPC server's, e.g. TLS credentials.
	GRPCOptions []grpc.ServerOption
	// Limits bound streams and requests; zero fields take the defaults.
	Limits Limits

	// Secrets (secrets.go): the leaf certificates and trust bundle are
	// issued from the CA the store holds (internal/ca; none: no secret
	// is served, and /v1/proxies says so). TrustDomain is the SPIFFE
	// trust domain of the leaves (ca.DefaultTrustDomain when empty),
	// CertLifetime their validity (ca.DefaultLeafLifetime when 0),
	// renewed at two thirds of it by Clock (the system clock when nil).
	TrustDomain  string
	CertLifetime time.Duration
	Clock        Clock
	// Authorize is called once per ADS stream, with the stream's context,
	// once its node id is parsed and before anything is served. A non-nil
	// error (a gRPC status) closes the stream; proven says the stream
	// proved it is id. Nil: no stream is proven.
	Authorize func(ctx context.Context, id translate.Identity) (proven bool, err error)
	// InsecureSecrets sends leaf certificates and keys to streams that
	// proved nothing (an xDS listener on loopback, or --xds-insecure).
	// Otherwise only proven streams get them; trust bundles go to anyone.
	InsecureSecrets bool
	// Observer hears of every push and its ACK or NACK (observe.go);
	// nil: none.
	Observer Observer
}

// Server is an xDS server. Create it with New, run it with Serve.
type Server struct {
	opts   Options
	hub    *hub
	runner *runner
}

// New returns a server; it does nothing until Serve.
func New(opts Options) *Server {
	opts.Limits = opts.Limits.withDefaults()
	m := newMetrics(opts.Registry)
	c := newHub(opts.Log, m, opts.DefaultOwner)
	c.maxPerIdentity = opts.Limits.MaxStreamsPerIdentity
	c.win = newWindow(opts.Limits.MaxPushesInFlight, opts.Limits.PushTimeout, m)
	c.authorize, c.insecureSecrets = opts.Authorize, opts.InsecureSecrets
	r := newRunner(&opts, c, m)
	c.attach, c.detach = r.requestAttach, r.requestDetach
	return &Server{opts: opts, hub: c, runner: r}
}

// Serve serves ADS on ln until ctx ends or the store fails. It returns
// after the gRPC server and the runner have stopped. A Server serves
// once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gopts := append(s.opts.Limits.GRPCOptions(), s.opts.GRPCOptions...)
	codec, codecErr := newCodec()
	if codecErr == nil {
		gopts = append(gopts, grpc.ForceServerCodecV2(codec))
	}
	gs := grpc.NewServer(gopts...)
	// ctx ends every stream's loop: on shutdown, streams end with OK, as
	// App Mesh's periodic graceful disconnect did.
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, &ads{hub: s.hub, done: ctx.Done(), limits: s.opts.Limits, obs: s.opts.Observer,
		preEncode: codecErr == nil})

	loopErr := make(chan error, 1)
	go func() { loopErr <- s.runner.run(ctx) }() // ends with ctx
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(ln) }() // ends with gs.GracefulStop below
	s.opts.Log.Info("xds listening", "addr", ln.Addr().String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-loopErr:
		loopErr <- err
	case err = <-serveErr:
		serveErr <- err
		err = fmt.Errorf("serve xds: %w", err)
	}
	cancel()
	gs.GracefulStop()
	s.hub.win.stop()
	<-serveErr
	if lerr := <-loopErr; err == nil {
		err = lerr
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// ProxyStatus is one node id in GET /v1/proxies: every replica connected
// with that node id.
type ProxyStatus struct {
	NodeID         string       `json:"nodeId"`
	MeshOwner      string       `json:"meshOwner"`
	Mesh           string       `json:"mesh"`
	Kind           appmesh.Kind `json:"kind"`
	Name           string       `json:"name"`
	Proxyless      bool         `json:"proxyless"`
	Replicas       int          `json:"replicas"`
	ConnectedSince time.Time    `json:"connectedSince"` // the oldest replica's
	// Addresses are the replicas' addresses as the xDS listener sees
	// them (host:port, behind any NAT), sorted.
	Addresses []string `json:"addresses"`
	// Types holds the subscribed types: "sds", "cds", "eds", "lds", "rds".
	Types map[string]TypeStatus `json:"types"`
	// Certificate is the leaf certificate served to the proxy's replicas
	// (nil when none was sent); CertificateError says why a certificate
	// or secret it references is not served, to every replica or some.
	Certificate      *CertificateStatus `json:"certificate,omitempty"`
	CertificateError string             `json:"certificateError,omitempty"`
	// LastNack is the latest rejected push of any replica.
	LastNack *NackStatus `json:"lastNack,omitempty"`
	withheld int         // replicas not sent the certificate
	// Error is the latest translation or validation failure; the proxy
	// keeps its previous configuration meanwhile.
	Error string `json:"error,omitempty"`
}

// TypeStatus is one resource type of a ProxyStatus.
type TypeStatus struct {
	Version string `json:"version"` // what the server serves now
	// Acked is the version every replica last ACKed, "" if they differ.
	Acked         string    `json:"acked"`
	AckedReplicas int       `json:"ackedReplicas"` // replicas that ACKed Version
	LastPush      time.Time `json:"lastPush,omitzero"`
	LastAck       time.Time `json:"lastAck,omitzero"`
}

// Proxies returns the connected proxies, sorted by node id.
func (s *Server) Proxies() []ProxyStatus {
	c := s.hub
	c.mu.Lock()
	defer c.mu.Unlock()
	byNode := map[string]*ProxyStatus{}
	for _, st := range c.streams {
		is := st.is
		if is == nil {
			continue // not identified yet
		}
		snap := is.snap.Load()
		st.mu.Lock()
		ps := byNode[st.nodeID]
		if ps == nil {
			ps = &ProxyStatus{
				NodeID: st.nodeID, MeshOwner: st.ident.MeshOwner, Mesh: st.ident.Mesh,
				Kind: st.ident.Kind, Name: st.ident.Name, Proxyless: st.ident.Proxyless,
				ConnectedSince: st.connectedAt, Types: map[string]TypeStatus{},
			}
			ps.Error = is.err
			if snap != nil {
				ps.CertificateError = snap.certErr
			}
			byNode[st.nodeID] = ps
		}
		ps.Replicas++
		if st.addr != "" {
			ps.Addresses = append(ps.Addresses, st.addr)
		}
		if snap != nil && snap.cert != nil {
			if st.secretsOK {
				ps.Certificate = snap.cert
			} else {
				ps.withheld++
			}
		}
		if st.connectedAt.Before(ps.ConnectedSince) {
			ps.ConnectedSince = st.connectedAt
		}
		for t := range numTypes {
			stt := &st.types[t]
			if !stt.subscribed {
				continue
			}
			name := typeName(t)
			ts, seen := ps.Types[name]
			if snap != nil {
				ts.Version = snap.types[t].version
			}
			if !seen {
				ts.Acked = stt.acked
			} else if ts.Acked != stt.acked {
				ts.Acked = ""
			}
			if stt.acked != "" && stt.acked == ts.Version {
				ts.AckedReplicas++
			}
			if stt.lastPushAt.After(ts.LastPush) {
				ts.LastPush = stt.lastPushAt
			}
			if stt.ackedAt.After(ts.LastAck) {
				ts.LastAck = stt.ackedAt
			}
			ps.Types[name] = ts
			if n := stt.lastNack; n != nil && (ps.LastNack == nil || n.At.After(ps.LastNack.At)) {
				ps.LastNack = n
			}
		}
		st.mu.Unlock()
	}
	out := make([]ProxyStatus, 0, len(byNode))
	for _, ps := range byNode {
		if ps.withheld > 0 {
			msg := fmt.Sprintf("certificate withheld from %d of %d replicas: the stream did not prove its identity, and the xDS listener is neither on loopback nor started with --xds-insecure", ps.withheld, ps.Replicas)
			ps.CertificateError = strings.TrimPrefix(ps.CertificateError+"; "+msg, "; ")
		}
		out = append(out, *ps)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return cmp.Compare(a.NodeID, b.NodeID) })
	for i := range out {
		slices.Sort(out[i].Addresses)
	}
	return out
}

// Revision is the store revision that the served configuration reflects:
// every write up to it has been pushed to the proxies it affects (their
// ACKs are in Proxies).
func (s *Server) Revision() store.Revision { return store.Revision(s.runner.applied.Load()) }

// StatusChanged returns a channel that is closed at the next change of
// what Proxies or Revision reports.
func (s *Server) StatusChanged() <-chan struct{} { return s.hub.statusChanged() }

// ProxiesHandler serves GET /v1/proxies:
// {"revision": Revision, "proxies": [ProxyStatus...]}.
func (s *Server) ProxiesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Revision store.Revision `json:"revision"`
			Proxies  []ProxyStatus  `json:"proxies"`
		}{s.Revision(), s.Proxies()})
	})
}
