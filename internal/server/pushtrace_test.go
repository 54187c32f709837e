package server

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/otlptest"
)

// nackingClient is an xDS client (state of the world) that subscribes to
// every route configuration and NACKs every response with msg, but for
// the first when ackFirst. answered is closed after the first answer.
func nackingClient(t *testing.T, addr, node, msg string, ackFirst bool) (answered <-chan struct{}) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node, UserAgentName: "envoy"}, TypeUrl: resource.RouteType}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	go func() { // ends when the stream does: its context is cancelled at cleanup
		first, known := true, ""
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			req := &discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(), VersionInfo: resp.GetVersionInfo()}
			if !first || !ackFirst {
				req.VersionInfo = known
				req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: msg}
			}
			if err := stream.Send(req); err != nil {
				return
			}
			if first {
				first, known = false, resp.GetVersionInfo()
				close(ch)
			}
		}
	}()
	return ch
}

// TestWriteTraceReachesProxies: with an OTLP endpoint, one UpdateRoute is
// one trace holding the request, its validation and store commit, the
// recompute, and one "xds push" span per proxy the change reaches (two
// weft proxies on delta xDS, two state-of-the-world clients, one of which
// NACKed every configuration it was sent, the first too), each naming
// the proxy's node id, the type URL, version and nonce, and ended by the
// proxy's ACK, or by its NACK with an error status and its message.
func TestWriteTraceReachesProxies(t *testing.T) {
	col := otlptest.Start(t)
	cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: filepath.Join(t.TempDir(), "data"),
		Region: "us-east-1", AccountID: "111122223333", OTLPEndpoint: "http://" + col.Addr}
	base := startServer(t, cfg)
	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	ctx := t.Context()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	m := aws.String("m")
	http8080 := []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}
	must(mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))
	must(mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("target"),
		Spec: &types.VirtualNodeSpec{Listeners: http8080,
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("target.m.local")}}}}))
	must(mesh.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("r"),
		Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}}}))
	route := func(timeout int64) *types.RouteSpec {
		spec := &types.RouteSpec{HttpRoute: &types.HttpRoute{
			Match:  &types.HttpRouteMatch{Prefix: aws.String("/")},
			Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: aws.String("target"), Weight: 1}}},
		}}
		if timeout > 0 {
			spec.HttpRoute.Timeout = &types.HttpTimeout{PerRequest: &types.Duration{Unit: types.DurationUnitS, Value: aws.Int64(timeout)}}
		}
		return spec
	}
	must(mesh.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("r"), RouteName: aws.String("route"), Spec: route(0)}))
	must(mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("svc.m.local"),
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("r")}}}}))
	for _, n := range []string{"a", "b", "c", "d"} {
		must(mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String(n),
			Spec: &types.VirtualNodeSpec{Backends: []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String("svc.m.local")}}}}}))
	}

	for _, n := range []string{"a", "b"} {
		startProxy(t, "mesh/m/virtualNode/"+n, cfg.XDSAddr, freePort(t), freePort(t))
	}
	const nack = "route: c refuses every change"
	select {
	case <-nackingClient(t, cfg.XDSAddr, "mesh/m/virtualNode/c", nack, true):
	case <-time.After(20 * time.Second):
		t.Fatal("client c got no route configuration")
	}
	select {
	case <-nackingClient(t, cfg.XDSAddr, "mesh/m/virtualNode/d", nack, false):
	case <-time.After(20 * time.Second):
		t.Fatal("client d got no route configuration")
	}

	must(mesh.UpdateRoute(ctx, &sdk.UpdateRouteInput{MeshName: m, VirtualRouterName: aws.String("r"), RouteName: aws.String("route"), Spec: route(5)}))

	// The spans arrive in export batches: wait for the write's whole
	// trace, three pushes ended.
	var root *tracepb.Span
	var trace []*tracepb.Span
	pushes := map[string]*tracepb.Span{}
	col.WaitSpans(t, 30*time.Second, func(spans []*tracepb.Span) bool {
		for _, s := range spans {
			if s.GetName() == "appmesh.UpdateRoute" {
				root = s
			}
		}
		if root == nil {
			return false
		}
		trace = trace[:0]
		for _, s := range spans {
			if string(s.GetTraceId()) == string(root.GetTraceId()) {
				trace = append(trace, s)
				if s.GetName() == "xds push" {
					pushes[attr(s, "weft.xds.node_id")] = s
				}
			}
		}
		return len(pushes) >= 4
	})
	for _, want := range []string{"validate", "store commit", "recompute"} {
		i := slices.IndexFunc(trace, func(s *tracepb.Span) bool { return s.GetName() == want })
		if i < 0 {
			t.Errorf("no %q span in the write's trace: %v", want, names(trace))
			continue
		}
		if hex.EncodeToString(trace[i].GetParentSpanId()) != hex.EncodeToString(root.GetSpanId()) {
			t.Errorf("%q is not a child of the request span", want)
		}
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		s := pushes["mesh/m/virtualNode/"+n]
		if s == nil {
			t.Errorf("no push span for proxy %s; pushes: %v", n, pushes)
			continue
		}
		if hex.EncodeToString(s.GetParentSpanId()) != hex.EncodeToString(root.GetSpanId()) {
			t.Errorf("push to %s is not a child of the request span", n)
		}
		if got := attr(s, "weft.xds.type_url"); got != resource.RouteType {
			t.Errorf("push to %s: type URL %q, want %s", n, got, resource.RouteType)
		}
		if attr(s, "weft.xds.version") == "" || attr(s, "weft.xds.nonce") == "" {
			t.Errorf("push to %s: version %q, nonce %q: want both", n, attr(s, "weft.xds.version"), attr(s, "weft.xds.nonce"))
		}
		if s.GetEndTimeUnixNano() < s.GetStartTimeUnixNano() || s.GetStartTimeUnixNano() < root.GetStartTimeUnixNano() {
			t.Errorf("push to %s: from %d to %d, the write started at %d", n, s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano(), root.GetStartTimeUnixNano())
		}
		outcome, code := attr(s, "weft.xds.outcome"), s.GetStatus().GetCode()
		switch n {
		case "c", "d":
			if outcome != "nack" || code != tracepb.Status_STATUS_CODE_ERROR || s.GetStatus().GetMessage() != nack {
				t.Errorf("push to %s: outcome %q, status %v %q; want nack, error, %q", n, outcome, code, s.GetStatus().GetMessage(), nack)
			}
		default:
			if outcome != "ack" || code == tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("push to %s: outcome %q, status %v; want ack", n, outcome, code)
			}
		}
	}
	count := map[string]int{}
	for _, s := range trace {
		if s.GetName() == "xds push" {
			count[attr(s, "weft.xds.node_id")]++
		}
	}
	if len(count) != 4 || count["mesh/m/virtualNode/a"] != 1 || count["mesh/m/virtualNode/b"] != 1 || count["mesh/m/virtualNode/c"] != 1 || count["mesh/m/virtualNode/d"] != 1 {
		t.Errorf("push spans per node %v; want one each for a, b, c and d", count)
	}
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func names(spans []*tracepb.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.GetName())
	}
	return out
}
