package server

import (
	"encoding/json"
	"slices"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// meshKey names a mesh: mesh names are unique per owner account.
type meshKey struct{ owner, mesh string }

// nodeRef names a virtual node across meshes.
type nodeRef struct {
	mesh meshKey
	name string
}

// CloudMapService names a Cloud Map service by the names a virtual node's
// awsCloudMap service discovery uses.
type CloudMapService struct{ Namespace, Service string }

// Discovery is what the machine needs from Cloud Map discovery
// (internal/discovery): follow the store's Cloud Map changes and list a
// service's healthy instances. It is immutable: Apply returns the next one.
type Discovery interface {
	// Apply follows one change (only its Cloud Map events) and reports the
	// services whose instances may have changed; each record it leaves
	// out is passed to skip.
	Apply(c store.Change, skip func(key string, err error)) (next Discovery, changed []CloudMapService)
	// Endpoints lists the healthy instances of a service whose attributes
	// include all of attributes.
	Endpoints(namespace, service string, attributes map[string]string) []translate.Endpoint
}

// LoadDiscovery reads Cloud Map's state from a store snapshot, passing
// each record it leaves out to skip.
type LoadDiscovery func(tx store.Tx, skip func(key string, err error)) (Discovery, error)

// meshState is one mesh as the machine holds it. view's maps are the
// machine's own and are changed in place between batches: translations run
// only inside a batch, after every change of the batch is applied, so no
// translation ever sees a map change.
type meshState struct {
	view          *translate.View
	routes        map[string]map[string]*appmesh.RouteData        // by router, by name
	gatewayRoutes map[string]map[string]*appmesh.GatewayRouteData // by gateway, by name
	// nodeServices is the Cloud Map service each node's endpoints come from.
	nodeServices map[string]cloudMapSelector
}

type cloudMapSelector struct {
	svc   CloudMapService
	attrs map[string]string
}

func newMeshState() *meshState {
	return &meshState{
		view: &translate.View{
			VirtualNodes:    map[string]*appmesh.VirtualNodeData{},
			VirtualServices: map[string]*appmesh.VirtualServiceData{},
			VirtualRouters:  map[string]*appmesh.VirtualRouterData{},
			Routes:          map[string][]*appmesh.RouteData{},
			VirtualGateways: map[string]*appmesh.VirtualGatewayData{},
			GatewayRoutes:   map[string][]*appmesh.GatewayRouteData{},
			Endpoints:       map[string][]translate.Endpoint{},
		},
		routes:        map[string]map[string]*appmesh.RouteData{},
		gatewayRoutes: map[string]map[string]*appmesh.GatewayRouteData{},
		nodeServices:  map[string]cloudMapSelector{},
	}
}

// exists reports whether the identity's virtual node or gateway exists.
func (ms *meshState) exists(id translate.Identity) bool {
	if ms == nil || ms.view.Mesh == nil {
		return false
	}
	switch id.Kind {
	case appmesh.KindVirtualNode:
		return ms.view.VirtualNodes[id.Name] != nil
	case appmesh.KindVirtualGateway:
		return ms.view.VirtualGateways[id.Name] != nil
	}
	return false
}

// set applies one resource's new value (nil data: deleted). A value that
// does not decode, or a route or gateway route that breaks a rule of
// appmesh.CheckStored, leaves the resource out, as if deleted, and is
// the error: the mesh is then what a fresh load of the store holds
// (Reset leaves the same records out), not the resource's last good
// version.
func (ms *meshState) set(ref appmesh.Ref, value []byte) error {
	del := value == nil
	switch ref.Kind {
	case appmesh.KindMesh:
		return decodeInto(&ms.view.Mesh, value, del)
	case appmesh.KindVirtualNode:
		return decodeMap(ms.view.VirtualNodes, ref.Name, value, del, nil)
	case appmesh.KindVirtualService:
		return decodeMap(ms.view.VirtualServices, ref.Name, value, del, nil)
	case appmesh.KindVirtualRouter:
		return decodeMap(ms.view.VirtualRouters, ref.Name, value, del, nil)
	case appmesh.KindVirtualGateway:
		return decodeMap(ms.view.VirtualGateways, ref.Name, value, del, nil)
	case appmesh.KindRoute:
		return setChild(ms.routes, ms.view.Routes, ref.Parent, ref.Name, value, del, checkRoute)
	case appmesh.KindGatewayRoute:
		return setChild(ms.gatewayRoutes, ms.view.GatewayRoutes, ref.Parent, ref.Name, value, del, checkGatewayRoute)
	}
	return nil
}

// checkRoute and checkGatewayRoute hold a stored route to the rules whose
// breach Envoy refuses for the whole route table the route is in (a regex
// that does not compile): one route left out, once per version the store
// holds, rather than every route of its listeners refused by each proxy.
func checkRoute(value []byte) error { return appmesh.CheckStored("RouteData", value) }

func checkGatewayRoute(value []byte) error {
	return appmesh.CheckStored("GatewayRouteData", value)
}

func decodeInto[T any](dst **T, value []byte, del bool) error {
	*dst = nil
	if del {
		return nil
	}
	v := new(T)
	if err := json.Unmarshal(value, v); err != nil {
		return err
	}
	*dst = v
	return nil
}

// decodeMap sets m[name] to value decoded, which check (when not nil)
// must accept as well; on error, or del, the name is deleted.
func decodeMap[T any](m map[string]*T, name string, value []byte, del bool, check func([]byte) error) error {
	delete(m, name)
	if del {
		return nil
	}
	v := new(T)
	if err := json.Unmarshal(value, v); err != nil {
		return err
	}
	if check != nil {
		if err := check(value); err != nil {
			return err
		}
	}
	m[name] = v
	return nil
}

// setChild updates a route or gateway route and re-derives its parent's
// list, sorted by name; it returns decodeMap's error, the child left out.
func setChild[T any](byParent map[string]map[string]*T, lists map[string][]*T, parent, name string, value []byte, del bool, check func([]byte) error) error {
	children := byParent[parent]
	if children == nil {
		children = map[string]*T{}
		byParent[parent] = children
	}
	err := decodeMap(children, name, value, del, check)
	if len(children) == 0 {
		delete(byParent, parent)
		delete(lists, parent)
		return err
	}
	names := make([]string, 0, len(children))
	for n := range children {
		names = append(names, n)
	}
	slices.Sort(names)
	list := make([]*T, len(names))
	for i, n := range names {
		list[i] = children[n]
	}
	lists[parent] = list
	return err
}

// selector returns the Cloud Map service a node's endpoints come from.
func selector(vn *appmesh.VirtualNodeData) (cloudMapSelector, bool) {
	if vn == nil || vn.Spec == nil || vn.Spec.ServiceDiscovery == nil || vn.Spec.ServiceDiscovery.AwsCloudMap == nil {
		return cloudMapSelector{}, false
	}
	cm := vn.Spec.ServiceDiscovery.AwsCloudMap
	sel := cloudMapSelector{svc: CloudMapService{Namespace: deref(cm.NamespaceName), Service: deref(cm.ServiceName)}}
	if len(cm.Attributes) > 0 {
		sel.attrs = make(map[string]string, len(cm.Attributes))
		for _, a := range cm.Attributes {
			sel.attrs[deref(a.Key)] = deref(a.Value)
		}
	}
	return sel, true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
