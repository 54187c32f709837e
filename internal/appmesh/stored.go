package appmesh

import (
	"fmt"
)

// CheckData checks value, the stored record of resource r (keys.go), as
// a restore must before writing it: the JSON of r's kind's Data shape
// that the model accepts as the API does (Model().Validate, with its
// Checks), holding no member the shape lacks, naming r (mesh, parent,
// name and mesh owner), and keeping the rules on a spec that need no
// other resource (CheckServiceName, RouteProtocol,
// GatewayRouteProtocol). The rules between resources (a route's port and
// its router's listeners, references that must exist) are not checked.
func CheckData(r Ref, value []byte) error {
	var (
		names []nameOf // what the record calls itself, by member
		md    *ResourceMetadata
		err   error
	)
	m := Model()
	switch r.Kind {
	case KindMesh:
		var d MeshData
		err = m.DecodeStored("MeshData", value, &d)
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}}, d.Metadata
	case KindVirtualNode:
		var d VirtualNodeData
		err = m.DecodeStored("VirtualNodeData", value, &d)
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualNodeName", d.VirtualNodeName, r.Name}}, d.Metadata
	case KindVirtualService:
		var d VirtualServiceData
		if err = m.DecodeStored("VirtualServiceData", value, &d); err == nil {
			err = CheckServiceName("virtualServiceName", r.Name)
		}
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualServiceName", d.VirtualServiceName, r.Name}}, d.Metadata
	case KindVirtualRouter:
		var d VirtualRouterData
		err = m.DecodeStored("VirtualRouterData", value, &d)
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualRouterName", d.VirtualRouterName, r.Name}}, d.Metadata
	case KindRoute:
		var d RouteData
		if err = m.DecodeStored("RouteData", value, &d); err == nil {
			_, _, err = RouteProtocol(d.Spec)
		}
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualRouterName", d.VirtualRouterName, r.Parent}, {"routeName", d.RouteName, r.Name}}, d.Metadata
	case KindVirtualGateway:
		var d VirtualGatewayData
		err = m.DecodeStored("VirtualGatewayData", value, &d)
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualGatewayName", d.VirtualGatewayName, r.Name}}, d.Metadata
	case KindGatewayRoute:
		var d GatewayRouteData
		if err = m.DecodeStored("GatewayRouteData", value, &d); err == nil {
			_, _, err = GatewayRouteProtocol(d.Spec)
		}
		names, md = []nameOf{{"meshName", d.MeshName, r.Mesh}, {"virtualGatewayName", d.VirtualGatewayName, r.Parent}, {"gatewayRouteName", d.GatewayRouteName, r.Name}}, d.Metadata
	default:
		return fmt.Errorf("no resource kind %q", r.Kind)
	}
	if err != nil {
		if e, ok := AsError(err); ok {
			return fmt.Errorf("not a valid %s: %s", r.Kind, e.Message)
		}
		return fmt.Errorf("not a valid %s: %w", r.Kind, err)
	}
	if md != nil { // the model requires it: nil only on an error above
		names = append(names, nameOf{"metadata.meshOwner", md.MeshOwner, r.Owner})
	}
	for _, n := range names {
		if n.got == nil || *n.got != n.want {
			return fmt.Errorf("%s is %q, not %q as its key says", n.member, deref(n.got), n.want)
		}
	}
	return nil
}

// nameOf is one name a stored record holds and the one its key gives.
type nameOf struct {
	member string
	got    *string
	want   string
}
