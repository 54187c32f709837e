package ops

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// DescribeJSON runs a Describe operation and returns the resource as the
// store holds it: the JSON of its Data shape, which is Describe's payload
// byte for byte (see appmesh/keys.go). It spares the API decoding and
// re-encoding the resource on the hottest path. in is a pointer to one of
// the seven Describe*Input types.
func (s *Service) DescribeJSON(ctx context.Context, c Caller, in any) (json.RawMessage, error) {
	var r appmesh.Ref
	switch in := in.(type) {
	case *appmesh.DescribeMeshInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindMesh, nil, in.MeshName)
	case *appmesh.DescribeVirtualNodeInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualNode, nil, in.VirtualNodeName)
	case *appmesh.DescribeVirtualServiceInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualService, nil, in.VirtualServiceName)
	case *appmesh.DescribeVirtualRouterInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualRouter, nil, in.VirtualRouterName)
	case *appmesh.DescribeRouteInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindRoute, in.VirtualRouterName, in.RouteName)
	case *appmesh.DescribeVirtualGatewayInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindVirtualGateway, nil, in.VirtualGatewayName)
	case *appmesh.DescribeGatewayRouteInput:
		r = ref(c.owner(in.MeshOwner), in.MeshName, appmesh.KindGatewayRoute, in.VirtualGatewayName, in.GatewayRouteName)
	default:
		return nil, fmt.Errorf("describe: %T is not a Describe input", in)
	}
	return view(ctx, s, func(tx store.Tx) (json.RawMessage, error) {
		kv, ok, err := tx.Get(r.Key())
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := ancestors(tx, r); err != nil {
				return nil, err
			}
			return nil, notFound(r)
		}
		return kv.Value, nil // store values are never modified, so they may outlive the transaction
	})
}
