package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// The lean client and the grpc-go client, against go-control-plane's
// ADS server (grpc-go's transport), in plaintext and over TLS as -tls
// serves: each subscribes as Envoy does
// (CDS, LDS, then the EDS and RDS names they hold), ACKs every type's
// first version and then a new route table, and the two report the
// same ACKs. A lean client that framed a message wrongly, missed one
// split across DATA frames or stopped at the server's settings would
// report none, or fewer.
func TestLeanClientAsGRPCClient(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) { testLeanClient(t, false) })
	t.Run("TLS", func(t *testing.T) { testLeanClient(t, true) })
}

func testLeanClient(t *testing.T, withTLS bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	creds := insecure.NewCredentials()
	var serverOpts []grpc.ServerOption
	var leanTLS *tls.Config
	if withTLS {
		// -tls's certificate, given to the server as weft server takes it.
		env, cfg, err := benchTLS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			files[k] = v
		}
		sc, err := credentials.NewServerTLSFromFile(files[tlsCertEnv], files[tlsKeyEnv])
		if err != nil {
			t.Fatal(err)
		}
		serverOpts, creds, leanTLS = []grpc.ServerOption{grpc.Creds(sc)}, credentials.NewTLS(cfg), cfg
	}
	g := grpc.NewServer(serverOpts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, cache, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln) // ends when g stops
	defer g.Stop()

	set := func(node, version string, routes int) {
		t.Helper()
		hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "l", RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{
			Rds: &hcmv3.Rds{RouteConfigName: "r1", ConfigSource: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{}}}}})
		if err != nil {
			t.Fatal(err)
		}
		// A route table large enough to take more than one DATA frame
		// (16 KiB each) when routes is large.
		var vhs []*routev3.VirtualHost
		for i := range routes {
			vhs = append(vhs, &routev3.VirtualHost{Name: fmt.Sprintf("vh-%d-%0200d", i, i), Domains: []string{fmt.Sprintf("h%d.example", i)}})
		}
		snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
			resource.ClusterType: {&clusterv3.Cluster{Name: "c1", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{}}}}},
			resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "c1"}},
			resource.ListenerType: {&listenerv3.Listener{Name: "l1", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}},
			resource.RouteType: {&routev3.RouteConfiguration{Name: "r1", VirtualHosts: vhs}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.SetSnapshot(ctx, node, snap); err != nil {
			t.Fatal(err)
		}
	}
	// acks waits for want ACKs and returns them as "type version".
	acks := func(events <-chan ackEvent, want int) []string {
		t.Helper()
		var got []string
		for len(got) < want {
			select {
			case e := <-events:
				got = append(got, e.typ[len("type.googleapis.com/envoy."):]+" "+e.version)
			case <-time.After(10 * time.Second):
				t.Fatalf("%d ACKs, want %d: %v", len(got), want, got)
			}
		}
		return got
	}
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	results := map[string][]string{}
	for _, kind := range []string{"grpc", "lean"} {
		node := "node-" + kind
		set(node, "1", 1)
		events := make(chan ackEvent, 16)
		c := &client{id: 0, events: events}
		if kind == "lean" {
			lc, err := c.startLean(ctx, ln.Addr().String(), leanTLS, node)
			if err != nil {
				t.Fatal(err)
			}
			defer lc.conn.Close()
		} else if err := c.start(ctx, cc, node); err != nil {
			t.Fatal(err)
		}
		first := acks(events, 4)
		set(node, "2", 200) // about 50 KiB: four DATA frames
		results[kind] = append(first, acks(events, 4)...)
		if c.version(resource.RouteType) != "2" {
			t.Errorf("%s client: route version %q after the second snapshot, want 2", kind, c.version(resource.RouteType))
		}
	}
	g1, l1 := fmt.Sprint(sorted(results["grpc"])), fmt.Sprint(sorted(results["lean"]))
	if g1 != l1 {
		t.Errorf("ACKs differ:\ngrpc-go: %s\nlean:    %s", g1, l1)
	}
	t.Logf("ACKs: %s", l1)
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
