package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
)

// The mesh the writes change, and the App Mesh calls that make it.

// client is an App Mesh client of replica r's API that does not retry: a
// failed write fails the run.
func client(r *replica) *sdk.Client {
	return sdk.New(sdk.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + r.API),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: account, SecretAccessKey: "x"}, nil
		}),
		Retryer: retry.AddWithMaxAttempts(retry.NewStandard(), 1),
	})
}

func httpListener(port int32) []types.Listener {
	return []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(port), Protocol: types.PortProtocolHttp}}}
}

func dns(host string) types.ServiceDiscovery {
	return &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(host)}}
}

// setUpMesh: a router splitting between blue and green, its virtual
// service, and nodes front-000... using it as their backend, so that
// every route weight write changes every proxy's routes.
func setUpMesh(ctx context.Context, c *sdk.Client, nodes int) error {
	steps := []func() error{
		func() error {
			_, err := c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String(mesh)})
			return err
		},
		func() error {
			for _, n := range []string{"blue", "green"} {
				if _, err := c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String(n),
					Spec: &types.VirtualNodeSpec{Listeners: httpListener(8080), ServiceDiscovery: dns(n + ".ha.local")}}); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			_, err := c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
				Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}}})
			return err
		},
		func() error {
			_, err := c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"), RouteName: aws.String("split"),
				Spec: routeSpec(1, 1)})
			return err
		},
		func() error {
			_, err := c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: aws.String(mesh), VirtualServiceName: aws.String("color.ha.local"),
				Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("router")}}}})
			return err
		},
		func() error {
			for i := range nodes {
				n := fmt.Sprintf("front-%03d", i)
				if _, err := c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String(mesh), VirtualNodeName: aws.String(n),
					Spec: &types.VirtualNodeSpec{Listeners: httpListener(8080), ServiceDiscovery: dns(n + ".ha.local"),
						Backends: []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String("color.ha.local")}}}}}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("set up the mesh: %w", err)
		}
	}
	return nil
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

// setWeights makes the route's weights those of write n (split).
func setWeights(ctx context.Context, c *sdk.Client, n uint32) error {
	_, err := c.UpdateRoute(ctx, &sdk.UpdateRouteInput{MeshName: aws.String(mesh), VirtualRouterName: aws.String("router"),
		RouteName: aws.String("split"), Spec: routeSpec(split(n))})
	return err
}

// maxWrite is the highest write number split can carry: App Mesh weights
// are 0 to 100.
const maxWrite = 10000

// split is the route's blue and green weights for write n (1 to
// maxWrite), each 1 to 100, so that a proxy's routes say which write they
// come from (writeOf); write 1 is the route the mesh starts with, 1 and 1.
func split(n uint32) (blue, green int32) {
	return int32(1 + (n-1)/100), int32(1 + (n-1)%100)
}

// writeOf is the write whose weights are blue and green (split's
// inverse); 0 when a weight is missing.
func writeOf(blue, green uint32) uint32 {
	if blue == 0 || green == 0 {
		return 0
	}
	return (blue-1)*100 + green
}
