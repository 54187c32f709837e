// Package ha runs several `weft server` replicas on a three-member etcd
// cluster (Debian's etcd-server) and checks what a user of a highly
// available control plane relies on: a write through any replica reaches
// proxies on every replica, a killed replica's proxies are configured
// again through another, and etcd faults under a steady write load lose
// no acknowledged write. The fault test is long: -short skips it.
package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/store/etcdtest"
	"github.com/weftmesh/weft/internal/weftbin"
)

const (
	account = "111122223333"
	mesh    = "ha"
)

// replica is one running `weft server`.
type replica = weftbin.Server

func etcdURL(c *etcdtest.Cluster) string {
	var hosts []string
	for _, e := range c.Endpoints() {
		hosts = append(hosts, strings.TrimPrefix(e, "http://"))
	}
	return "etcd://" + strings.Join(hosts, ",")
}

// startReplica runs weft server on store until the test ends.
// weftBinary is the weft binary the tests run: $WEFT_BIN when set (a
// binary built beforehand, so that a timed run builds nothing), otherwise
// one built from this tree.
func weftBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("WEFT_BIN"); bin != "" {
		return bin
	}
	return weftbin.Build(t)
}

func startReplica(t *testing.T, bin, name, store string) *replica {
	t.Helper()
	r, err := weftbin.StartServer(t.Context(), bin, name, "--store", store,
		"--region", "us-east-1", "--account-id", account, "--appmesh-limits", "virtualNodesPerMesh=100000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Kill)
	return r
}

func client(r *replica) *sdk.Client {
	return sdk.New(sdk.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + r.API),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: account, SecretAccessKey: "x"}, nil
		}),
		// One attempt: an error is an unacknowledged write.
		Retryer: retry.AddWithMaxAttempts(retry.NewStandard(), 1),
	})
}

// proxy is a real xDS client (the one weft proxy runs) recording the
// route weights it was configured with.
type proxy struct {
	node string
	mu   sync.Mutex
	// weights is the sorted weighted-cluster weights of the last accepted
	// route configurations; routesAt is when each was accepted.
	weights  []string
	routesAt []time.Time
	// blueHistory is blue's weight in every accepted route configuration.
	blueHistory []uint32
	changed     chan struct{} // closed and replaced on every accepted update
	c           *xdsclient.Client
}

func startProxy(t *testing.T, node string, servers []string) *proxy {
	p := &proxy{node: node, changed: make(chan struct{})}
	p.c = xdsclient.New(xdsclient.Config{Server: strings.Join(servers, ","), Node: &corev3.Node{Id: "mesh/" + mesh + "/virtualNode/" + node, Cluster: node},
		BackoffBase: 100 * time.Millisecond}, p, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.c.Run(ctx) }() // ends at the test's cleanup
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p
}

func (p *proxy) Clusters(context.Context, string, []*clusterv3.Cluster) ([]string, error) {
	return nil, nil
}

func (p *proxy) Endpoints(context.Context, string, []*endpointv3.ClusterLoadAssignment) error {
	return nil
}

func (p *proxy) Listeners(_ context.Context, _ string, ls []*listenerv3.Listener) ([]string, error) {
	var rds []string
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds().GetRouteConfigName() != "" {
					rds = append(rds, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	slices.Sort(rds)
	return slices.Compact(rds), nil
}

func (p *proxy) Routes(_ context.Context, _ string, rs []*routev3.RouteConfiguration) error {
	var ws []string
	var blue []uint32
	for _, rc := range rs {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					ws = append(ws, fmt.Sprint(wc.GetWeight().GetValue()))
					if strings.Contains(wc.GetName(), "blue") {
						blue = append(blue, wc.GetWeight().GetValue())
					}
				}
			}
		}
	}
	slices.Sort(ws)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.weights = ws
	p.blueHistory = append(p.blueHistory, blue...)
	p.routesAt = append(p.routesAt, time.Now())
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

// waitWeights waits until the proxy's routes carry exactly these weights.
func (p *proxy) waitWeights(t *testing.T, within time.Duration, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		got, ch := p.weights, p.changed
		p.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("proxy %s: route weights %v, want %v within %v", p.node, got, want, within)
		}
	}
}

// waitRoutesAfter waits for a route configuration accepted after since
// and returns when it was.
func (p *proxy) waitRoutesAfter(t *testing.T, since time.Time, within time.Duration) time.Time {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		for _, at := range p.routesAt {
			if at.After(since) {
				p.mu.Unlock()
				return at
			}
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("proxy %s: no route configuration within %v", p.node, within)
		}
	}
}

func httpListener() []types.Listener {
	return []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}
}

func dnsDiscovery(host string) types.ServiceDiscovery {
	return &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(host)}}
}

// setUpMesh creates a router splitting traffic between blue and green, a
// virtual service on it, and front nodes using it as their backend.
func setUpMesh(t *testing.T, c *sdk.Client, fronts ...string) {
	t.Helper()
	setUpMeshApps(t, c, nil, fronts...)
}

// setUpMeshApps is setUpMesh with blue and green served by apps on
// 127.0.0.1 at these ports (nil: names that resolve nowhere, port 8080).
func setUpMeshApps(t *testing.T, c *sdk.Client, apps map[string]int32, fronts ...string) {
	t.Helper()
	ctx := t.Context()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String(mesh)}))
	for _, n := range []string{"blue", "green"} {
		listeners, host := httpListener(), n+".ha.local"
		if port, ok := apps[n]; ok {
			listeners[0].PortMapping.Port, host = aws.Int32(port), "127.0.0.1"
		}
		must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String(n),
			Spec: &types.VirtualNodeSpec{Listeners: listeners, ServiceDiscovery: dnsDiscovery(host)}}))
	}
	must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
		Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}}}))
	must(c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"), RouteName: aws.String("split"),
		Spec: routeSpec(1, 1)}))
	must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: aws.String(mesh), VirtualServiceName: aws.String("color.ha.local"),
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("router")}}}}))
	for _, n := range fronts {
		must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String(n),
			Spec: &types.VirtualNodeSpec{Listeners: httpListener(), ServiceDiscovery: dnsDiscovery(n + ".ha.local"),
				Backends: []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String("color.ha.local")}}}}}))
	}
}

func routeSpec(blue, green int32) *types.RouteSpec {
	return &types.RouteSpec{HttpRoute: &types.HttpRoute{
		Match: &types.HttpRouteMatch{Prefix: aws.String("/")},
		Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{
			{VirtualNode: aws.String("blue"), Weight: blue},
			{VirtualNode: aws.String("green"), Weight: green},
		}},
	}}
}

func setWeights(t *testing.T, c *sdk.Client, blue, green int32) {
	t.Helper()
	if _, err := c.UpdateRoute(t.Context(), &sdk.UpdateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
		RouteName: aws.String("split"), Spec: routeSpec(blue, green)}); err != nil {
		t.Fatal(err)
	}
}

// connectedTo returns the replica whose /v1/proxies lists virtual node
// node.
func connectedTo(t *testing.T, rs []*replica, node string) *replica {
	t.Helper()
	return connectedAs(t, rs, "/virtualNode/"+node)
}

// connectedAs returns the live replica whose /v1/proxies lists a node id
// ending in suffix.
func connectedAs(t *testing.T, rs []*replica, suffix string) *replica {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	for _, r := range rs {
		if r.Killed() {
			continue
		}
		resp, err := c.Get("http://" + r.API + "/v1/proxies")
		if err != nil {
			continue
		}
		var out struct {
			Proxies []struct {
				NodeID string `json:"nodeId"`
			} `json:"proxies"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range out.Proxies {
			if strings.HasSuffix(p.NodeID, suffix) {
				return r
			}
		}
	}
	return nil
}

func startReplicas(t *testing.T, c *etcdtest.Cluster, n int) []*replica {
	return startReplicasOf(t, weftBinary(t), c, n)
}

func startReplicasOf(t *testing.T, bin string, c *etcdtest.Cluster, n int) []*replica {
	var rs []*replica
	for i := 0; i < n; i++ {
		rs = append(rs, startReplica(t, bin, string(rune('A'+i)), etcdURL(c)))
	}
	return rs
}

// TestWriteThroughOneReplicaReachesAll: proxies on replicas B and C see a
// route weight written through replica A.
func TestWriteThroughOneReplicaReachesAll(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rs := startReplicas(t, c, 3)
	setUpMesh(t, client(rs[0]), "front-b", "front-c")
	pb := startProxy(t, "front-b", []string{rs[1].XDS})
	pc := startProxy(t, "front-c", []string{rs[2].XDS})
	pb.waitWeights(t, 30*time.Second, "1", "1")
	pc.waitWeights(t, 30*time.Second, "1", "1")

	setWeights(t, client(rs[0]), 3, 7)
	pb.waitWeights(t, 30*time.Second, "3", "7")
	pc.waitWeights(t, 30*time.Second, "3", "7")
}

// TestReplicaKilledProxiesFailOver: a proxy given every replica's address
// is configured again through another when its replica is SIGKILLed, and
// later writes reach it there.
func TestReplicaKilledProxiesFailOver(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rs := startReplicas(t, c, 3)
	setUpMesh(t, client(rs[0]), "front")
	var addrs []string
	for _, r := range rs {
		addrs = append(addrs, r.XDS)
	}
	p := startProxy(t, "front", addrs)
	p.waitWeights(t, 30*time.Second, "1", "1")
	victim := connectedTo(t, rs, "front")
	if victim == nil {
		t.Fatal("no replica lists the proxy")
	}
	killed := time.Now()
	victim.Kill()
	at := p.waitRoutesAfter(t, killed, 30*time.Second)
	// The goal is under 5 s; a loaded machine may miss it, so it is
	// reported rather than asserted (docs/bench/ha.md has the figures).
	t.Logf("proxy configured again %v after replica %s was killed", at.Sub(killed).Round(time.Millisecond), victim.Name)
	var survivor *replica
	for _, r := range rs {
		if r != victim {
			survivor = r
		}
	}
	setWeights(t, client(survivor), 2, 8)
	p.waitWeights(t, 30*time.Second, "2", "8")
	if now := connectedTo(t, rs, "front"); now == nil || now == victim {
		t.Fatalf("proxy not listed by a surviving replica")
	}
}
