//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
)

// meshAPI is an App Mesh client of weft server's API (the AWS SDK's, as a
// user's tooling would call it).
type meshAPI struct{ c *sdk.Client }

func newMeshAPI(addr string) *meshAPI {
	return &meshAPI{sdk.New(sdk.Options{
		Region:       mbRegion,
		BaseEndpoint: aws.String("http://" + addr),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: mbAccount, SecretAccessKey: "bench"}, nil
		}),
		Retryer: retry.AddWithMaxAttempts(retry.NewStandard(), 1),
	})}
}

// createMesh creates, as the App Mesh tutorial does: the mesh (egress
// ALLOW_ALL, so the client's egress listener has its default chain as
// well), virtual node server (HTTP listener on the app's port, DNS service
// discovery to the server task's address), the virtual router and its
// route to server, the virtual service server.bench.local provided by the
// router, and virtual node client with that service as backend. With logs,
// both nodes log to /dev/stdout.
func (m *meshAPI) createMesh(ctx context.Context, mesh string, client, server netip.Addr, logs bool) error {
	port := &types.PortMapping{Port: aws.Int32(mbAppPort), Protocol: types.PortProtocolHttp}
	var logging *types.Logging
	if logs {
		logging = &types.Logging{AccessLog: &types.AccessLogMemberFile{Value: types.FileAccessLog{Path: aws.String("/dev/stdout")}}}
	}
	dns := func(a netip.Addr) types.ServiceDiscovery {
		return &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(a.String())}}
	}
	if _, err := m.c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String(mesh),
		Spec: &types.MeshSpec{EgressFilter: &types.EgressFilter{Type: types.EgressFilterTypeAllowAll}}}); err != nil {
		return fmt.Errorf("create mesh %s: %w", mesh, err)
	}
	if _, err := m.c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String("server"),
		Spec: &types.VirtualNodeSpec{Listeners: []types.Listener{{PortMapping: port}}, ServiceDiscovery: dns(server), Logging: logging}}); err != nil {
		return fmt.Errorf("create virtual node server: %w", err)
	}
	if _, err := m.c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("server-router"),
		Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: port}}}}); err != nil {
		return fmt.Errorf("create virtual router: %w", err)
	}
	if _, err := m.c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("server-router"), RouteName: aws.String("server-route"),
		Spec: &types.RouteSpec{HttpRoute: &types.HttpRoute{Match: &types.HttpRouteMatch{Prefix: aws.String("/")},
			Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: aws.String("server"), Weight: 1}}}}}}); err != nil {
		return fmt.Errorf("create route: %w", err)
	}
	if _, err := m.c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: aws.String(mesh), VirtualServiceName: aws.String(mbService),
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("server-router")}}}}); err != nil {
		return fmt.Errorf("create virtual service: %w", err)
	}
	if _, err := m.c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String("client"),
		Spec: &types.VirtualNodeSpec{ServiceDiscovery: dns(client), Logging: logging,
			Backends: []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String(mbService)}}}}}); err != nil {
		return fmt.Errorf("create virtual node client: %w", err)
	}
	return nil
}
