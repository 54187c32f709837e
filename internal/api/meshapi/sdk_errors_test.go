package meshapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
)

func testErrors(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	c := newServer(t, nil).client(account, rec)
	m := aws.String("errs")
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)
	must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn"), Spec: nodeSpec()}))(t)
	must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("vr"), Spec: routerSpec()}))(t)

	t.Run("NotFound", func(t *testing.T) {
		_, err := c.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: aws.String("nope")})
		wantErr[*types.NotFoundException](t, err, "nope")
		_, err = c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("nope"), VirtualNodeName: aws.String("x"), Spec: nodeSpec()})
		wantErr[*types.NotFoundException](t, err, "nope")
		_, err = c.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("ghost")})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("vr"), RouteName: aws.String("r"), Spec: routeSpec("vn", "ghost")})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("novr"), RouteName: aws.String("r"), Spec: routeSpec("vn")})
		wantErr[*types.NotFoundException](t, err, "novr")
		_, err = c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("s.local"), Spec: serviceByNode("ghost")})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.UpdateVirtualRouter(ctx, &sdk.UpdateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("ghost"), Spec: routerSpec()})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.DeleteVirtualGateway(ctx, &sdk.DeleteVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("ghost")})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.ListRoutes(ctx, &sdk.ListRoutesInput{MeshName: m, VirtualRouterName: aws.String("ghost")})
		wantErr[*types.NotFoundException](t, err, "ghost")
		_, err = c.TagResource(ctx, &sdk.TagResourceInput{ResourceArn: aws.String(arnPrefix + "errs/virtualNode/ghost"), Tags: []types.TagRef{{Key: aws.String("k"), Value: aws.String("v")}}})
		wantErr[*types.NotFoundException](t, err, "ghost")
	})
	t.Run("BadRequest", func(t *testing.T) {
		_, err := c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String(strings.Repeat("m", 256))})
		wantErr[*types.BadRequestException](t, err, "'meshName' failed to satisfy constraint: Member must have length less than or equal to 255")
		spec := nodeSpec()
		spec.Listeners[0].PortMapping.Port = aws.Int32(70000)
		_, err = c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("x"), Spec: spec})
		wantErr[*types.BadRequestException](t, err, "spec.listeners.1.member.portMapping.port")
		two := routeSpec("vn")
		two.TcpRoute = &types.TcpRoute{Action: &types.TcpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: aws.String("vn"), Weight: 1}}}}
		_, err = c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("vr"), RouteName: aws.String("r"), Spec: two})
		wantErr[*types.BadRequestException](t, err, "exactly one")
		grpc := &types.RouteSpec{GrpcRoute: &types.GrpcRoute{Match: &types.GrpcRouteMatch{ServiceName: aws.String("s")},
			Action: &types.GrpcRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: aws.String("vn"), Weight: 1}}}}}
		_, err = c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("vr"), RouteName: aws.String("r"), Spec: grpc})
		wantErr[*types.BadRequestException](t, err, "protocol")
		_, err = c.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m, Limit: aws.Int32(101)})
		wantErr[*types.BadRequestException](t, err, "'limit'")
		_, err = c.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m, NextToken: aws.String("!!")})
		wantErr[*types.BadRequestException](t, err, "nextToken")
		_, err = c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceArn: aws.String("arn:aws:s3:::bucket")})
		wantErr[*types.BadRequestException](t, err, "ARN")
		_, err = c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String(strings.Repeat("s", 256)), Spec: &types.VirtualServiceSpec{}})
		wantErr[*types.BadRequestException](t, err, "virtualServiceName")
	})
	t.Run("Conflict", func(t *testing.T) {
		_, err := c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m})
		wantErr[*types.ConflictException](t, err, "errs")
		_, err = c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn"), Spec: nodeSpec()})
		wantErr[*types.ConflictException](t, err, "vn")
	})
	t.Run("ResourceInUse", func(t *testing.T) {
		must(c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("vr"), RouteName: aws.String("r"), Spec: routeSpec("vn")}))(t)
		must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("by-node.local"), Spec: serviceByNode("vn")}))(t)
		must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("by-router.local"), Spec: serviceByRouter("vr")}))(t)
		must(c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw"), Spec: gatewaySpec()}))(t)
		must(c.CreateGatewayRoute(ctx, &sdk.CreateGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("gr"), Spec: gatewayRouteSpec("by-node.local")}))(t)

		_, err := c.DeleteMesh(ctx, &sdk.DeleteMeshInput{MeshName: m})
		wantErr[*types.ResourceInUseException](t, err, "errs")
		_, err = c.DeleteVirtualRouter(ctx, &sdk.DeleteVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("vr")})
		wantErr[*types.ResourceInUseException](t, err, "VirtualService provider")
		_, err = c.DeleteVirtualGateway(ctx, &sdk.DeleteVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw")})
		wantErr[*types.ResourceInUseException](t, err, "gateway routes")
		_, err = c.DeleteVirtualNode(ctx, &sdk.DeleteVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn")})
		wantErr[*types.ResourceInUseException](t, err, "vn")
		_, err = c.DeleteVirtualService(ctx, &sdk.DeleteVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("by-node.local")})
		wantErr[*types.ResourceInUseException](t, err, "GATEWAY_ROUTE")

		// Remove the provider: the router is still blocked by its route.
		must(c.DeleteVirtualService(ctx, &sdk.DeleteVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("by-router.local")}))(t)
		_, err = c.DeleteVirtualRouter(ctx, &sdk.DeleteVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("vr")})
		wantErr[*types.ResourceInUseException](t, err, "routes")
		// The node stays blocked as a route target after the service that
		// it provides is gone.
		must(c.DeleteGatewayRoute(ctx, &sdk.DeleteGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("gr")}))(t)
		must(c.DeleteVirtualService(ctx, &sdk.DeleteVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("by-node.local")}))(t)
		_, err = c.DeleteVirtualNode(ctx, &sdk.DeleteVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn")})
		wantErr[*types.ResourceInUseException](t, err, "target of one or more routes")
		// An update that drops the target unblocks it.
		must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn2"), Spec: nodeSpec()}))(t)
		must(c.UpdateRoute(ctx, &sdk.UpdateRouteInput{MeshName: m, VirtualRouterName: aws.String("vr"), RouteName: aws.String("r"), Spec: routeSpec("vn2")}))(t)
		must(c.DeleteVirtualNode(ctx, &sdk.DeleteVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn")}))(t)
	})
	t.Run("LimitExceeded", func(t *testing.T) {
		for i := range 2 { // "gw" exists: App Mesh allows 3 gateways per mesh
			must(c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String(fmt.Sprint("gw", i)), Spec: gatewaySpec()}))(t)
		}
		_, err := c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw-too-many"), Spec: gatewaySpec()})
		wantErr[*types.LimitExceededException](t, err, "3")
		backends := make([]string, 51)
		for i := range backends {
			backends[i] = fmt.Sprintf("s%d.local", i)
		}
		_, err = c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("wide"), Spec: nodeSpec(backends...)})
		wantErr[*types.LimitExceededException](t, err, "backends")
	})
	t.Run("TooManyTags", func(t *testing.T) {
		arn := aws.String(arnPrefix + "errs/virtualNode/vn2")
		var tags []types.TagRef
		for i := range 50 {
			tags = append(tags, types.TagRef{Key: aws.String(fmt.Sprint("k", i)), Value: aws.String("v")})
		}
		must(c.TagResource(ctx, &sdk.TagResourceInput{ResourceArn: arn, Tags: tags}))(t)
		_, err := c.TagResource(ctx, &sdk.TagResourceInput{ResourceArn: arn, Tags: []types.TagRef{{Key: aws.String("one-more"), Value: aws.String("v")}}})
		wantErr[*types.TooManyTagsException](t, err, "50")
		var got []string
		p := sdk.NewListTagsForResourcePaginator(c, &sdk.ListTagsForResourceInput{ResourceArn: arn, Limit: aws.Int32(7)})
		for p.HasMorePages() {
			for _, tg := range must(p.NextPage(ctx))(t).Tags {
				got = append(got, aws.ToString(tg.Key))
			}
		}
		if len(got) != 50 || got[0] != "k0" || got[49] != "k49" {
			t.Fatalf("paged tags: %v", got)
		}
	})
}
