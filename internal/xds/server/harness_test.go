package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// wait is how long a test waits for an event before it fails. It is a
// deadline, not a duration anything is expected to take.
const wait = 20 * time.Second

const owner = "111122223333"

func ptr[T any](v T) *T { return &v }

func openStore(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func put(t testing.TB, st store.Store, key string, v any) store.Revision {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, b) })
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func del(t testing.TB, st store.Store, key string) {
	t.Helper()
	if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Delete(key) }); err != nil {
		t.Fatal(err)
	}
}

func ref(mesh string, kind appmesh.Kind, parent, name string) appmesh.Ref {
	return appmesh.Ref{Owner: owner, Mesh: mesh, Kind: kind, Parent: parent, Name: name}
}

// The App Mesh resources the tests write, in their Describe form.

func putMesh(t testing.TB, st store.Store, mesh string) {
	put(t, st, appmesh.MeshKey(owner, mesh), appmesh.MeshData{MeshName: ptr(mesh), Spec: &appmesh.MeshSpec{}})
}

func putNode(t testing.TB, st store.Store, mesh, name string, backends ...string) {
	put(t, st, ref(mesh, appmesh.KindVirtualNode, "", name).Key(), nodeData(mesh, name, backends...))
}

// nodeData is a virtual node with one HTTP listener on 8080, discovered in
// Cloud Map as <name> in colors.local, calling backends.
func nodeData(mesh, name string, backends ...string) appmesh.VirtualNodeData {
	vn := appmesh.VirtualNodeData{MeshName: ptr(mesh), VirtualNodeName: ptr(name), Spec: &appmesh.VirtualNodeSpec{
		Listeners:        []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: ptr(int64(8080)), Protocol: appmesh.PortProtocolHttp}}},
		ServiceDiscovery: &appmesh.ServiceDiscovery{AwsCloudMap: &appmesh.AwsCloudMapServiceDiscovery{NamespaceName: ptr("colors.local"), ServiceName: ptr(name)}},
	}}
	for _, b := range backends {
		vn.Spec.Backends = append(vn.Spec.Backends, appmesh.Backend{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: ptr(b)}})
	}
	return vn
}

func putService(t testing.TB, st store.Store, mesh, name, providerNode string) {
	vs := appmesh.VirtualServiceData{MeshName: ptr(mesh), VirtualServiceName: ptr(name), Spec: &appmesh.VirtualServiceSpec{}}
	if providerNode != "" {
		vs.Spec.Provider = &appmesh.VirtualServiceProvider{VirtualNode: &appmesh.VirtualNodeServiceProvider{VirtualNodeName: ptr(providerNode)}}
	}
	put(t, st, ref(mesh, appmesh.KindVirtualService, "", name).Key(), vs)
}

// Cloud Map records: one namespace "colors.local" (id ns-1), services by
// the node names, instances with an IPv4 address.

func putNamespace(t testing.TB, st store.Store) {
	put(t, st, cloudmap.NamespaceKey("ns-1"), cloudmap.NamespaceRecord{Namespace: cloudmap.Namespace{Id: ptr("ns-1"), Name: ptr("colors.local"), Type: cloudmap.NamespaceTypeHttp}})
}

func putCMService(t testing.TB, st store.Store, name string) {
	put(t, st, cloudmap.ServiceKey("srv-"+name), cloudmap.ServiceRecord{Service: cloudmap.Service{Id: ptr("srv-" + name), NamespaceId: ptr("ns-1"), Name: ptr(name)}})
}

func putInstance(t testing.TB, st store.Store, service, id, ip string) {
	putInstancePort(t, st, service, id, ip, 8080)
}

func putInstancePort(t testing.TB, st store.Store, service, id, ip string, port int) {
	put(t, st, cloudmap.InstanceKey("srv-"+service, id), cloudmap.InstanceRecord{
		Instance: cloudmap.Instance{Id: ptr(id), Attributes: map[string]string{cloudmap.AttrIPv4: ip, cloudmap.AttrPort: strconv.Itoa(port)}},
		Health:   cloudmap.HealthStatusHealthy,
	})
}

// fakeTranslate stands in for translate.Translate at the Options seam in
// the protocol tests, which are about the server, not about Envoy
// configuration. It reads what a real translation of a virtual node reads
// (the node, its backends, their providers' endpoints) and reports exactly
// that in Deps and EndpointsOf.
func fakeTranslate(v *translate.View, id translate.Identity, _ *translate.Memo) (*translate.Resources, error) {
	r := &translate.Resources{Deps: []appmesh.Ref{
		{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindMesh, Name: id.Mesh},
		{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: id.Kind, Name: id.Name},
	}}
	vn := v.VirtualNodes[id.Name]
	if vn == nil {
		return nil, errors.New("no such virtual node")
	}
	r.Listeners = append(r.Listeners, &listenerv3.Listener{Name: "lds_ingress_0.0.0.0_15000"})
	rc := &routev3.RouteConfiguration{Name: "rds_egress_http_80"}
	var backends []string
	for _, b := range vn.Spec.Backends {
		backends = append(backends, *b.VirtualService.VirtualServiceName)
	}
	sort.Strings(backends)
	for _, name := range backends {
		r.Deps = append(r.Deps, appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindVirtualService, Name: name})
		vs := v.VirtualServices[name]
		if vs == nil || vs.Spec.Provider == nil || vs.Spec.Provider.VirtualNode == nil {
			continue
		}
		provider := *vs.Spec.Provider.VirtualNode.VirtualNodeName
		r.Deps = append(r.Deps, appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: appmesh.KindVirtualNode, Name: provider})
		r.EndpointsOf = append(r.EndpointsOf, provider)
		cname := "cds_egress_" + id.Mesh + "_" + provider
		r.Clusters = append(r.Clusters, &clusterv3.Cluster{
			Name:                 cname,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}},
		})
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: cname}
		if eps := v.Endpoints[provider]; len(eps) > 0 {
			loc := &endpointv3.LocalityLbEndpoints{}
			for _, e := range eps {
				loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: e.IPv4, PortSpecifier: &core.SocketAddress_PortValue{PortValue: e.Port}}}},
				}}})
			}
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		r.Endpoints = append(r.Endpoints, cla)
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: name, Domains: []string{name}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cname}}},
		}}})
	}
	r.Routes = append(r.Routes, rc)
	slices.SortFunc(r.Deps, func(a, b appmesh.Ref) int { return strings.Compare(a.Key(), b.Key()) })
	r.Deps = slices.Compact(r.Deps)
	return r, nil
}

// withChecks validates every translation with translate's checks, as
// weft server does.
func withChecks(o *Options) {
	o.CheckResource, o.CheckRefs = translate.CheckResource, translate.CheckRefs
	o.CheckAssembled = (*translate.HostChecks).CheckAssembled
}

// testServer is a running xDS server on 127.0.0.1:0.
type testServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
	logs *logLines
	stop func() // stops the server and waits for Serve to return
}

func startServer(t *testing.T, st store.Store, tr TranslateFunc, opts ...func(*Options)) *testServer {
	t.Helper()
	return startServerAt(t, "127.0.0.1:0", st, tr, opts...)
}

// startServerAt is startServer on a given address, for a restart on the
// address of a stopped server.
func startServerAt(t *testing.T, addr string, st store.Store, tr TranslateFunc, opts ...func(*Options)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	lines := &logLines{}
	o := Options{
		Store:         st,
		LoadDiscovery: CloudMap,
		Translate:     tr,
		DefaultOwner:  owner,
		Log:           slog.New(slog.NewTextHandler(testWriter{t, lines}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:      reg,
	}
	for _, f := range opts {
		f(&o)
	}
	srv := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }() // ends with cancel in stop
	ts := &testServer{Server: srv, addr: ln.Addr().String(), reg: reg, logs: lines}
	stopped := false
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(ts.stop)
	return ts
}

// testWriter sends the server's log to the test's log, and keeps it.
type testWriter struct {
	t     *testing.T
	lines *logLines
}

func (w testWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	w.t.Log(line)
	w.lines.mu.Lock()
	w.lines.l = append(w.lines.l, line)
	w.lines.mu.Unlock()
	return len(p), nil
}

// logLines is what a server logged.
type logLines struct {
	mu sync.Mutex
	l  []string
}

// count returns how many lines contain s.
func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.l {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// adsClient is a scripted ADS client: the test says what it sends and
// checks what it receives.
type adsClient struct {
	t      *testing.T
	conn   *grpc.ClientConn
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	recv   chan *discovery.DiscoveryResponse // closed when the stream ends
	err    error                             // why the stream ended; read after recv closes
	cancel context.CancelFunc
}

func dialADS(t *testing.T, addr string, node *core.Node, opts ...grpc.DialOption) *adsClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, conn: conn, stream: stream, node: node, recv: make(chan *discovery.DiscoveryResponse, 64), cancel: cancel}
	go func() { // ends when the stream fails or is cancelled by close
		defer close(c.recv)
		for {
			resp, err := stream.Recv()
			if err != nil {
				c.err = err
				return
			}
			c.recv <- resp
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *adsClient) close() {
	c.cancel()
	for range c.recv {
	}
	c.conn.Close()
}

// request sends a request; the first one of the stream carries the node.
func (c *adsClient) request(typeURL, version, nonce string, names []string, nack string) {
	c.t.Helper()
	req := &discovery.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if c.node != nil {
		req.Node = c.node
		c.node = nil
	}
	if nack != "" {
		req.ErrorDetail = &status.Status{Code: 3, Message: nack}
	}
	// A failed send means the stream has ended; the test learns why from
	// next or ended.
	if err := c.stream.Send(req); err != nil {
		c.t.Logf("send: %v", err)
	}
}

// next returns the next response, failing the test if none comes.
func (c *adsClient) next() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.recv:
		if !ok {
			c.t.Fatalf("stream ended: %v", c.err)
		}
		return r
	case <-time.After(wait):
		c.t.Fatalf("no response within %v", wait)
	}
	return nil
}

// ack ACKs a response.
func (c *adsClient) ack(r *discovery.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.request(r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), names, "")
}

// ended waits for the stream to end and returns its error.
func (c *adsClient) ended() error {
	c.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case r, ok := <-c.recv:
			if !ok {
				return c.err
			}
			c.t.Logf("discarding %s version %s", r.GetTypeUrl(), r.GetVersionInfo())
		case <-deadline:
			c.t.Fatalf("stream did not end within %v", wait)
		}
	}
}

// names lists the resource names of a response.
func names(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *listenerv3.Listener:
			out = append(out, m.GetName())
		case *routev3.RouteConfiguration:
			out = append(out, m.GetName())
		case *clusterv3.Cluster:
			out = append(out, m.GetName())
		case *endpointv3.ClusterLoadAssignment:
			out = append(out, m.GetClusterName())
		}
	}
	return out
}
