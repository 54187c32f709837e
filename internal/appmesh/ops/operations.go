package ops

// One method per App Mesh operation: each names the resource its input is
// about and hands it to the generic operations of generic.go.

import (
	"context"

	"github.com/weftmesh/weft/internal/appmesh"
)

// owner is the account that owns the mesh a request is about: meshOwner
// when the client names one, else the caller.
func (c Caller) owner(meshOwner *string) string {
	if meshOwner != nil && *meshOwner != "" {
		return *meshOwner
	}
	return c.Account
}

// ref names a resource; parent is nil except for routes and gateway routes.
func ref(owner string, mesh *string, k appmesh.Kind, parent, name *string) appmesh.Ref {
	return appmesh.Ref{Owner: owner, Mesh: str(mesh), Kind: k, Parent: str(parent), Name: str(name)}
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// CreateMesh implements the CreateMesh operation.
func (s *Service) CreateMesh(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateMeshInput]) (*appmesh.CreateMeshOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateMesh", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.mesh.create(ctx, s, c, ref(c.Account, in.MeshName, appmesh.KindMesh, nil, in.MeshName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateMeshOutput{Mesh: d}, nil
}

// DescribeMesh implements the DescribeMesh operation.
func (s *Service) DescribeMesh(ctx context.Context, c Caller, in *appmesh.DescribeMeshInput) (*appmesh.DescribeMeshOutput, error) {
	d, err := s.k.mesh.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindMesh, nil, in.MeshName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeMeshOutput{Mesh: d}, nil
}

// UpdateMesh implements the UpdateMesh operation.
func (s *Service) UpdateMesh(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateMeshInput]) (*appmesh.UpdateMeshOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateMesh", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.mesh.update(ctx, s, c, ref(c.Account, in.MeshName, appmesh.KindMesh, nil, in.MeshName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateMeshOutput{Mesh: d}, nil
}

// DeleteMesh implements the DeleteMesh operation.
func (s *Service) DeleteMesh(ctx context.Context, c Caller, in *appmesh.DeleteMeshInput) (*appmesh.DeleteMeshOutput, error) {
	d, err := s.k.mesh.delete(ctx, s, ref(c.Account, in.MeshName, appmesh.KindMesh, nil, in.MeshName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteMeshOutput{Mesh: d}, nil
}

// ListMeshes implements the ListMeshes operation.
func (s *Service) ListMeshes(ctx context.Context, c Caller, in *appmesh.ListMeshesInput) (*appmesh.ListMeshesOutput, error) {
	p, err := s.k.mesh.list(ctx, s, appmesh.Ref{Owner: c.Account}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListMeshesOutput{Meshes: p.items, NextToken: p.next}, nil
}

// CreateVirtualNode implements the CreateVirtualNode operation.
func (s *Service) CreateVirtualNode(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateVirtualNodeInput]) (*appmesh.CreateVirtualNodeOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateVirtualNode", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.node.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualNode, nil, in.VirtualNodeName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateVirtualNodeOutput{VirtualNode: d}, nil
}

// DescribeVirtualNode implements the DescribeVirtualNode operation.
func (s *Service) DescribeVirtualNode(ctx context.Context, c Caller, in *appmesh.DescribeVirtualNodeInput) (*appmesh.DescribeVirtualNodeOutput, error) {
	d, err := s.k.node.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualNode, nil, in.VirtualNodeName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeVirtualNodeOutput{VirtualNode: d}, nil
}

// UpdateVirtualNode implements the UpdateVirtualNode operation.
func (s *Service) UpdateVirtualNode(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateVirtualNodeInput]) (*appmesh.UpdateVirtualNodeOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateVirtualNode", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.node.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualNode, nil, in.VirtualNodeName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateVirtualNodeOutput{VirtualNode: d}, nil
}

// DeleteVirtualNode implements the DeleteVirtualNode operation.
func (s *Service) DeleteVirtualNode(ctx context.Context, c Caller, in *appmesh.DeleteVirtualNodeInput) (*appmesh.DeleteVirtualNodeOutput, error) {
	d, err := s.k.node.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualNode, nil, in.VirtualNodeName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteVirtualNodeOutput{VirtualNode: d}, nil
}

// ListVirtualNodes implements the ListVirtualNodes operation.
func (s *Service) ListVirtualNodes(ctx context.Context, c Caller, in *appmesh.ListVirtualNodesInput) (*appmesh.ListVirtualNodesOutput, error) {
	p, err := s.k.node.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListVirtualNodesOutput{VirtualNodes: p.items, NextToken: p.next}, nil
}

// CreateVirtualService implements the CreateVirtualService operation.
func (s *Service) CreateVirtualService(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateVirtualServiceInput]) (*appmesh.CreateVirtualServiceOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateVirtualService", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.service.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualService, nil, in.VirtualServiceName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateVirtualServiceOutput{VirtualService: d}, nil
}

// DescribeVirtualService implements the DescribeVirtualService operation.
func (s *Service) DescribeVirtualService(ctx context.Context, c Caller, in *appmesh.DescribeVirtualServiceInput) (*appmesh.DescribeVirtualServiceOutput, error) {
	d, err := s.k.service.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualService, nil, in.VirtualServiceName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeVirtualServiceOutput{VirtualService: d}, nil
}

// UpdateVirtualService implements the UpdateVirtualService operation.
func (s *Service) UpdateVirtualService(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateVirtualServiceInput]) (*appmesh.UpdateVirtualServiceOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateVirtualService", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.service.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualService, nil, in.VirtualServiceName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateVirtualServiceOutput{VirtualService: d}, nil
}

// DeleteVirtualService implements the DeleteVirtualService operation.
func (s *Service) DeleteVirtualService(ctx context.Context, c Caller, in *appmesh.DeleteVirtualServiceInput) (*appmesh.DeleteVirtualServiceOutput, error) {
	d, err := s.k.service.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualService, nil, in.VirtualServiceName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteVirtualServiceOutput{VirtualService: d}, nil
}

// ListVirtualServices implements the ListVirtualServices operation.
func (s *Service) ListVirtualServices(ctx context.Context, c Caller, in *appmesh.ListVirtualServicesInput) (*appmesh.ListVirtualServicesOutput, error) {
	p, err := s.k.service.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListVirtualServicesOutput{VirtualServices: p.items, NextToken: p.next}, nil
}

// CreateVirtualRouter implements the CreateVirtualRouter operation.
func (s *Service) CreateVirtualRouter(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateVirtualRouterInput]) (*appmesh.CreateVirtualRouterOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateVirtualRouter", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.router.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualRouter, nil, in.VirtualRouterName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateVirtualRouterOutput{VirtualRouter: d}, nil
}

// DescribeVirtualRouter implements the DescribeVirtualRouter operation.
func (s *Service) DescribeVirtualRouter(ctx context.Context, c Caller, in *appmesh.DescribeVirtualRouterInput) (*appmesh.DescribeVirtualRouterOutput, error) {
	d, err := s.k.router.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualRouter, nil, in.VirtualRouterName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeVirtualRouterOutput{VirtualRouter: d}, nil
}

// UpdateVirtualRouter implements the UpdateVirtualRouter operation.
func (s *Service) UpdateVirtualRouter(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateVirtualRouterInput]) (*appmesh.UpdateVirtualRouterOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateVirtualRouter", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.router.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualRouter, nil, in.VirtualRouterName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateVirtualRouterOutput{VirtualRouter: d}, nil
}

// DeleteVirtualRouter implements the DeleteVirtualRouter operation.
func (s *Service) DeleteVirtualRouter(ctx context.Context, c Caller, in *appmesh.DeleteVirtualRouterInput) (*appmesh.DeleteVirtualRouterOutput, error) {
	d, err := s.k.router.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualRouter, nil, in.VirtualRouterName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteVirtualRouterOutput{VirtualRouter: d}, nil
}

// ListVirtualRouters implements the ListVirtualRouters operation.
func (s *Service) ListVirtualRouters(ctx context.Context, c Caller, in *appmesh.ListVirtualRoutersInput) (*appmesh.ListVirtualRoutersOutput, error) {
	p, err := s.k.router.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListVirtualRoutersOutput{VirtualRouters: p.items, NextToken: p.next}, nil
}

// CreateRoute implements the CreateRoute operation.
func (s *Service) CreateRoute(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateRouteInput]) (*appmesh.CreateRouteOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateRoute", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.route.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindRoute, in.VirtualRouterName, in.RouteName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateRouteOutput{Route: d}, nil
}

// DescribeRoute implements the DescribeRoute operation.
func (s *Service) DescribeRoute(ctx context.Context, c Caller, in *appmesh.DescribeRouteInput) (*appmesh.DescribeRouteOutput, error) {
	d, err := s.k.route.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindRoute, in.VirtualRouterName, in.RouteName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeRouteOutput{Route: d}, nil
}

// UpdateRoute implements the UpdateRoute operation.
func (s *Service) UpdateRoute(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateRouteInput]) (*appmesh.UpdateRouteOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateRoute", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.route.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindRoute, in.VirtualRouterName, in.RouteName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateRouteOutput{Route: d}, nil
}

// DeleteRoute implements the DeleteRoute operation.
func (s *Service) DeleteRoute(ctx context.Context, c Caller, in *appmesh.DeleteRouteInput) (*appmesh.DeleteRouteOutput, error) {
	d, err := s.k.route.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindRoute, in.VirtualRouterName, in.RouteName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteRouteOutput{Route: d}, nil
}

// ListRoutes implements the ListRoutes operation.
func (s *Service) ListRoutes(ctx context.Context, c Caller, in *appmesh.ListRoutesInput) (*appmesh.ListRoutesOutput, error) {
	p, err := s.k.route.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName), Name: str(in.VirtualRouterName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListRoutesOutput{Routes: p.items, NextToken: p.next}, nil
}

// CreateVirtualGateway implements the CreateVirtualGateway operation.
func (s *Service) CreateVirtualGateway(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateVirtualGatewayInput]) (*appmesh.CreateVirtualGatewayOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateVirtualGateway", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.gateway.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualGateway, nil, in.VirtualGatewayName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateVirtualGatewayOutput{VirtualGateway: d}, nil
}

// DescribeVirtualGateway implements the DescribeVirtualGateway operation.
func (s *Service) DescribeVirtualGateway(ctx context.Context, c Caller, in *appmesh.DescribeVirtualGatewayInput) (*appmesh.DescribeVirtualGatewayOutput, error) {
	d, err := s.k.gateway.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualGateway, nil, in.VirtualGatewayName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeVirtualGatewayOutput{VirtualGateway: d}, nil
}

// UpdateVirtualGateway implements the UpdateVirtualGateway operation.
func (s *Service) UpdateVirtualGateway(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateVirtualGatewayInput]) (*appmesh.UpdateVirtualGatewayOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateVirtualGateway", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.gateway.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualGateway, nil, in.VirtualGatewayName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateVirtualGatewayOutput{VirtualGateway: d}, nil
}

// DeleteVirtualGateway implements the DeleteVirtualGateway operation.
func (s *Service) DeleteVirtualGateway(ctx context.Context, c Caller, in *appmesh.DeleteVirtualGatewayInput) (*appmesh.DeleteVirtualGatewayOutput, error) {
	d, err := s.k.gateway.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualGateway, nil, in.VirtualGatewayName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteVirtualGatewayOutput{VirtualGateway: d}, nil
}

// ListVirtualGateways implements the ListVirtualGateways operation.
func (s *Service) ListVirtualGateways(ctx context.Context, c Caller, in *appmesh.ListVirtualGatewaysInput) (*appmesh.ListVirtualGatewaysOutput, error) {
	p, err := s.k.gateway.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListVirtualGatewaysOutput{VirtualGateways: p.items, NextToken: p.next}, nil
}

// CreateGatewayRoute implements the CreateGatewayRoute operation.
func (s *Service) CreateGatewayRoute(ctx context.Context, c Caller, v appmesh.Valid[appmesh.CreateGatewayRouteInput]) (*appmesh.CreateGatewayRouteOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("CreateGatewayRoute", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.gwRoute.create(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindGatewayRoute, in.VirtualGatewayName, in.GatewayRouteName), in.Spec, in.Tags, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.CreateGatewayRouteOutput{GatewayRoute: d}, nil
}

// DescribeGatewayRoute implements the DescribeGatewayRoute operation.
func (s *Service) DescribeGatewayRoute(ctx context.Context, c Caller, in *appmesh.DescribeGatewayRouteInput) (*appmesh.DescribeGatewayRouteOutput, error) {
	d, err := s.k.gwRoute.describe(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindGatewayRoute, in.VirtualGatewayName, in.GatewayRouteName))
	if err != nil {
		return nil, err
	}
	return &appmesh.DescribeGatewayRouteOutput{GatewayRoute: d}, nil
}

// UpdateGatewayRoute implements the UpdateGatewayRoute operation.
func (s *Service) UpdateGatewayRoute(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UpdateGatewayRouteInput]) (*appmesh.UpdateGatewayRouteOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	req, err := s.prepare("UpdateGatewayRoute", in, in.ClientToken)
	if err != nil {
		return nil, err
	}
	d, err := s.k.gwRoute.update(ctx, s, c, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindGatewayRoute, in.VirtualGatewayName, in.GatewayRouteName), in.Spec, req)
	if err != nil {
		return nil, err
	}
	return &appmesh.UpdateGatewayRouteOutput{GatewayRoute: d}, nil
}

// DeleteGatewayRoute implements the DeleteGatewayRoute operation.
func (s *Service) DeleteGatewayRoute(ctx context.Context, c Caller, in *appmesh.DeleteGatewayRouteInput) (*appmesh.DeleteGatewayRouteOutput, error) {
	d, err := s.k.gwRoute.delete(ctx, s, ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindGatewayRoute, in.VirtualGatewayName, in.GatewayRouteName), s.now())
	if err != nil {
		return nil, err
	}
	return &appmesh.DeleteGatewayRouteOutput{GatewayRoute: d}, nil
}

// ListGatewayRoutes implements the ListGatewayRoutes operation.
func (s *Service) ListGatewayRoutes(ctx context.Context, c Caller, in *appmesh.ListGatewayRoutesInput) (*appmesh.ListGatewayRoutesOutput, error) {
	p, err := s.k.gwRoute.list(ctx, s, appmesh.Ref{Owner: c.owner(in.MeshOwner), Mesh: str(in.MeshName), Name: str(in.VirtualGatewayName)}, in.Limit, in.NextToken)
	if err != nil {
		return nil, err
	}
	return &appmesh.ListGatewayRoutesOutput{GatewayRoutes: p.items, NextToken: p.next}, nil
}
