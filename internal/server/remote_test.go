package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/discovery/remote"
)

// TestCloudMapRemote runs weft server resolving namespace "apps" in a
// second weft that plays AWS Cloud Map (with a credentials file: the
// follower's requests are SigV4-signed by the SDK with credentials from
// the default chain, here the environment). A proxy of virtual node a,
// whose backend is node b discovered in "apps", sees its EDS follow
// instances registered, filtered by attributes, set unhealthy and
// deregistered remotely; when the remote goes away the last endpoints are
// kept, and /v1/discovery and /metrics say the service is unreachable.
func TestCloudMapRemote(t *testing.T) {
	// The remote: a weft with an auth file, playing AWS Cloud Map.
	aws1 := newAuthEnv(t, authFile)
	cm := aws1.cloudMap("AKIDADMIN", "admin-secret")
	ctx := t.Context()
	if _, err := cm.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String("apps")}); err != nil {
		t.Fatal(err)
	}
	nss, err := cm.ListNamespaces(ctx, &sd.ListNamespacesInput{})
	if err != nil || len(nss.Namespaces) != 1 {
		t.Fatalf("namespaces %v %v", nss, err)
	}
	svc, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("b"), NamespaceId: nss.Namespaces[0].Id,
		HealthCheckCustomConfig: &sdtypes.HealthCheckCustomConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	register := func(id, ip, stage string) {
		t.Helper()
		_, err := cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String(id),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080", "stage": stage}})
		if err != nil {
			t.Fatal(err)
		}
	}
	health := func(id string, s sdtypes.CustomHealthStatus) {
		t.Helper()
		if _, err := cm.UpdateInstanceCustomHealthStatus(ctx, &sd.UpdateInstanceCustomHealthStatusInput{ServiceId: svc.Service.Id, InstanceId: aws.String(id), Status: s}); err != nil {
			t.Fatal(err)
		}
	}
	register("i1", "10.0.0.1", "blue")

	// The credentials come from the SDK's default chain: the environment.
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDADMIN")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "admin-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	r, err := remote.ParseRemote("name=aws,region=us-east-1,namespace=apps,endpoint=" + aws1.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: filepath.Join(dir, "data"), Region: "us-east-1", AccountID: "111122223333",
		CloudMapRemote: remote.Config{Remotes: []remote.Remote{r}, Interval: 100 * time.Millisecond, Timeout: 2 * time.Second}}
	base := startServer(t, cfg)

	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	listener := []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}
	steps := []func() error{
		func() error {
			_, err := mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("b"),
				Spec: &types.VirtualNodeSpec{Listeners: listener, ServiceDiscovery: &types.ServiceDiscoveryMemberAwsCloudMap{Value: types.AwsCloudMapServiceDiscovery{
					NamespaceName: aws.String("apps"), ServiceName: aws.String("b"),
					Attributes: []types.AwsCloudMapInstanceAttribute{{Key: aws.String("stage"), Value: aws.String("blue")}}}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: aws.String("m"), VirtualServiceName: aws.String("b.apps"),
				Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualNode{Value: types.VirtualNodeServiceProvider{VirtualNodeName: aws.String("b")}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("a"),
				Spec: &types.VirtualNodeSpec{Listeners: listener,
					ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("a.m.local")}},
					Backends:         []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String("b.apps")}}}}})
			return err
		},
		func() error { // a service the remote does not have
			_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("c"),
				Spec: &types.VirtualNodeSpec{Listeners: listener, ServiceDiscovery: &types.ServiceDiscoveryMemberAwsCloudMap{Value: types.AwsCloudMapServiceDiscovery{
					NamespaceName: aws.String("apps"), ServiceName: aws.String("missing")}}}})
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	eds := watchEDS(t, cfg.XDSAddr, "mesh/m/virtualNode/a")
	eds.wait(t, "10.0.0.1:8080")
	register("i2", "10.0.0.2", "blue")
	register("i3", "10.0.0.3", "green") // left out by node b's attribute filter
	eds.wait(t, "10.0.0.1:8080", "10.0.0.2:8080")
	health("i1", sdtypes.CustomHealthStatusUnhealthy)
	eds.wait(t, "10.0.0.2:8080")
	if _, err := cm.DeregisterInstance(ctx, &sd.DeregisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String("i2")}); err != nil {
		t.Fatal(err)
	}
	health("i1", sdtypes.CustomHealthStatusHealthy)
	eds.wait(t, "10.0.0.1:8080")
	var st remote.Status
	getJSON(t, base+"/v1/discovery", &st)
	if len(st.Services) != 2 || st.Services[0].State != remote.StateOK || st.Services[1].Service != "missing" || st.Services[1].State != remote.StateNotFound {
		t.Fatalf("/v1/discovery %+v", st)
	}

	// The remote goes away: the status says so, the endpoints stay.
	aws1.srv.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		getJSON(t, base+"/v1/discovery", &st)
		if len(st.Services) == 2 && st.Services[0].State == remote.StateUnreachable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/v1/discovery never said unreachable: %+v", st)
		}
		eds.idle(t, 50*time.Millisecond)
	}
	// i1 and i3 are healthy (i3 is filtered out per node, not per service).
	if s := st.Services[0]; s.Remote != "aws" || s.Namespace != "apps" || s.Service != "b" || s.Instances != 2 || s.Healthy != 2 || s.LastError == "" || s.LastSuccess == nil {
		t.Fatalf("status %+v", s)
	}
	if got := metricLine(t, base, `weft_cloudmap_remote_services{remote="aws",state="unreachable"}`); got != "2" {
		t.Fatalf("unreachable services metric %q", got)
	}
	// A proxy connecting now gets the last-known endpoints.
	watchEDS(t, cfg.XDSAddr, "mesh/m/virtualNode/a").wait(t, "10.0.0.1:8080")
}

// startServer runs Run with cfg until the test ends and returns the API's
// base URL once it answers.
func startServer(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel at cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	base := "http://" + cfg.APIAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metricLine returns the value of one series on /metrics, "" if absent.
func metricLine(t *testing.T, base, series string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// edsWatch is an ADS stream of a node, following the endpoints of its
// EDS clusters.
type edsWatch struct {
	sets chan []string // every EDS response's endpoints, "ip:port" sorted
	errc chan error
}

// watchEDS connects as node, asks for its clusters and then for the
// endpoints of its EDS clusters, ACKing every response.
func watchEDS(t *testing.T, addr, node string) *edsWatch {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := &core.Node{Id: node, UserAgentName: "envoy"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	cds, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range cds.GetResources() {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			names = append(names, c.GetName())
		}
	}
	if len(names) == 0 {
		t.Fatalf("node %s has no EDS cluster", node)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	w := &edsWatch{sets: make(chan []string, 64), errc: make(chan error, 1)}
	go func() { // ends when the stream ends: its context is cancelled at cleanup
		for {
			resp, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			if resp.GetTypeUrl() != resource.EndpointType {
				continue
			}
			var eps []string
			for _, a := range resp.GetResources() {
				var cla endpointv3.ClusterLoadAssignment
				if err := a.UnmarshalTo(&cla); err != nil {
					w.errc <- err
					return
				}
				for _, l := range cla.GetEndpoints() {
					for _, e := range l.GetLbEndpoints() {
						sa := e.GetEndpoint().GetAddress().GetSocketAddress()
						eps = append(eps, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
					}
				}
			}
			slices.Sort(eps)
			select {
			case w.sets <- eps:
			case <-ctx.Done():
				return
			}
			if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
				w.errc <- err
				return
			}
		}
	}()
	return w
}

// wait reads EDS responses until one holds exactly want.
func (w *edsWatch) wait(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	timeout := time.After(20 * time.Second)
	var last []string
	for {
		select {
		case got := <-w.sets:
			if slices.Equal(got, want) {
				return
			}
			last = got
		case err := <-w.errc:
			t.Fatalf("ADS stream: %v", err)
		case <-timeout:
			t.Fatalf("EDS never became %v; last %v", want, last)
		}
	}
}

// idle waits d, failing if an EDS response arrives meanwhile: the
// endpoints must not move.
func (w *edsWatch) idle(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-w.sets:
		t.Fatalf("EDS changed to %v while the remote was down", got)
	case err := <-w.errc:
		t.Fatalf("ADS stream: %v", err)
	case <-time.After(d):
	}
}
