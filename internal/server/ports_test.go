package server

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/proxy"
)

// TestProxyListenerPorts: weft proxy with --ingress-port/--egress-port
// (Config.IngressPort, EgressPort) says so in its node metadata, and weft
// server gives it its ingress and egress listeners on those ports; node
// metadata naming one port for both is refused with InvalidArgument.
func TestProxyListenerPorts(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: filepath.Join(dir, "data"), Region: "us-east-1", AccountID: "111122223333"}
	base := startServer(t, cfg)
	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	ctx := t.Context()
	if _, err := mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	if _, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("a"),
		Spec: &types.VirtualNodeSpec{
			Listeners:        []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("a.m.local")}}}}); err != nil {
		t.Fatal(err)
	}

	in, out := freePort(t), freePort(t)
	p := startProxy(t, "mesh/m/virtualNode/a", cfg.XDSAddr, in, out)
	for _, l := range []struct {
		name string
		port uint32
	}{{"lds_ingress_0.0.0.0_", in}, {"lds_egress_0.0.0.0_", out}} {
		name := l.name + strconv.Itoa(int(l.port))
		addr := p.ListenerAddr(name)
		if !strings.HasSuffix(addr, ":"+strconv.Itoa(int(l.port))) {
			t.Errorf("listener %s bound at %q", name, addr)
		}
	}
	if a := p.ListenerAddr("lds_egress_0.0.0.0_15001"); a != "" {
		t.Errorf("the default egress listener is bound too: %s", a)
	}

	// One port for both: refused, naming the metadata.
	conn, err := grpc.NewClient(cfg.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"weft.ingress_port": 16000, "weft.egress_port": 16000})
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "mesh/m/virtualNode/a", UserAgentName: "envoy", Metadata: md}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "weft.egress_port") {
		t.Fatalf("same port for both: %v, want InvalidArgument naming the metadata", err)
	}
}

// startProxy runs a weft proxy for the resource arn, with its listeners
// on ports ingress and egress, against the xDS server at xdsAddr until
// the test ends, and waits until it is LIVE.
func startProxy(t *testing.T, arn, xdsAddr string, ingress, egress uint32) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{ResourceARN: arn, XDS: xdsAddr, AdminAddr: "127.0.0.1:0",
		XDSBackoffBase: 20 * time.Millisecond, IngressPort: ingress, EgressPort: egress}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }() // ends with cancel at cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy %s Run: %v", arn, err)
		}
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := p.WaitLive(wctx); err != nil {
		t.Fatalf("proxy %s not LIVE: %v", arn, err)
	}
	return p
}

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return uint32(n)
}
