package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestConvergenceUnderRandomWrites: Envoy-like proxies (two replicas per
// node) follow a few hundred random writes made as fast as the store takes
// them, ACKing as they go; when the writes stop, every replica has ACKed
// exactly the versions the server holds for it, of every type, and
// nothing was NACKed. Ordering, parking, subscription changes and
// coalesced batches all race here; and, with a push window of 2 slots for
// 10 streams, pushes queued and granted as answers come back.
func TestConvergenceUnderRandomWrites(t *testing.T) {
	t.Run("default window", func(t *testing.T) { convergeUnderRandomWrites(t) })
	t.Run("window of 2", func(t *testing.T) {
		srv := convergeUnderRandomWrites(t, windowOf(2, time.Minute))
		if testutil.ToFloat64(srv.hub.metrics.pushesQueued) == 0 {
			t.Fatal("no push waited for a slot of the window")
		}
	})
}

func convergeUnderRandomWrites(t *testing.T, opts ...func(*Options)) *testServer {
	st := openStore(t)
	putNamespace(t, st)
	putMesh(t, st, "m")
	for i := range 5 {
		putNode(t, st, "m", fmt.Sprintf("n%d", i))
	}
	srv := startServer(t, st, translate.TranslateWith, append(opts, withChecks)...)
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i := range 10 {
		s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := &envoyLike{stream: s, names: map[string][]string{}, nonces: map[string]string{}, versions: map[string]string{}}
		if err := p.start(fmt.Sprintf("mesh/m/virtualNode/n%d", i/2)); err != nil {
			t.Fatal(err)
		}
		go p.run() // ends with ctx (cancel above)
	}
	converged := func() {
		t.Helper()
		for i := range 5 {
			waitStatus(t, srv.Server, fmt.Sprintf("mesh/m/virtualNode/n%d", i), func(p ProxyStatus) bool {
				if p.Replicas != 2 || p.LastNack != nil || p.Error != "" || p.Types["cds"].Version == "" || p.Types["lds"].Version == "" {
					return false
				}
				// Every replica subscribes to CDS and LDS. EDS and RDS
				// follow the names a replica was sent: one that was not
				// sent a short-lived version (coalesced, or queued for the
				// push window) may never have subscribed, and Acked counts
				// only the replicas that did.
				for name, ts := range p.Types {
					if (name == "cds" || name == "lds") && ts.AckedReplicas != 2 || ts.Acked != ts.Version {
						return false
					}
				}
				return true
			})
		}
	}
	pushes := func() (n float64) {
		for _, typ := range []string{"cds", "eds", "lds", "rds"} {
			n += testutil.ToFloat64(srv.hub.metrics.pushes.WithLabelValues(typ))
		}
		return n
	}
	converged()
	before := pushes()
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		// Never kind 0, deleting a node: its proxies would be refused.
		randomWriteKind(rnd, t, st, 1+rnd.IntN(9))
	}
	// The push loop has seen every write, then the proxies ACK.
	waitRevision(t, srv.Server, st.Revision())
	converged()
	if pushes() == before {
		t.Fatal("300 writes pushed nothing")
	}
	t.Logf("%v pushes to 10 proxies over 300 writes", pushes()-before)
	return srv
}

// waitRevision waits until the server has pushed every write up to rev.
func waitRevision(t *testing.T, s *Server, rev store.Revision) {
	t.Helper()
	deadline := time.After(wait)
	for {
		changed := s.StatusChanged()
		if s.Revision() >= rev {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("server at revision %d, never reached %d", s.Revision(), rev)
		}
	}
}

// envoyLike is an autonomous Envoy-like ADS client: wildcard CDS and LDS,
// EDS for the EDS clusters, RDS for the route tables its listeners name,
// every response ACKed with its current subscription.
type envoyLike struct {
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	names    map[string][]string
	nonces   map[string]string
	versions map[string]string
}

func (p *envoyLike) start(nodeID string) error {
	if err := p.stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: nodeID, UserAgentName: "envoy"}, TypeUrl: cdsType}); err != nil {
		return err
	}
	return p.stream.Send(&discovery.DiscoveryRequest{TypeUrl: ldsType})
}

func (p *envoyLike) request(typ string) error {
	return p.stream.Send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: p.versions[typ], ResponseNonce: p.nonces[typ], ResourceNames: p.names[typ]})
}

func (p *envoyLike) run() {
	for {
		r, err := p.stream.Recv()
		if err != nil {
			return
		}
		typ := r.GetTypeUrl()
		p.versions[typ], p.nonces[typ] = r.GetVersionInfo(), r.GetNonce()
		var follow string
		var names []string
		switch typ {
		case cdsType:
			follow = edsType
			for _, a := range r.GetResources() {
				var cl clusterv3.Cluster
				if a.UnmarshalTo(&cl) == nil && cl.GetType() == clusterv3.Cluster_EDS {
					names = append(names, cl.GetName())
				}
			}
		case ldsType:
			follow = rdsType
			for _, a := range r.GetResources() {
				var l listenerv3.Listener
				if a.UnmarshalTo(&l) != nil {
					continue
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						var hcm hcmv3.HttpConnectionManager
						if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
							names = append(names, hcm.GetRds().GetRouteConfigName())
						}
					}
				}
			}
		}
		if p.request(typ) != nil {
			return
		}
		if follow == "" {
			continue
		}
		slices.Sort(names)
		names = slices.Compact(names)
		// Envoy subscribes once it has names, and then follows them, to
		// none if need be (which is no longer a wildcard).
		if old, subscribed := p.names[follow]; subscribed && !slices.Equal(names, old) || !subscribed && len(names) > 0 {
			p.names[follow] = names
			if p.request(follow) != nil {
				return
			}
		}
	}
}
