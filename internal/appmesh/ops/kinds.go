package ops

import (
	"errors"
	"strings"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// kinds holds one descriptor per resource kind; they are built once by New
// and never change.
type kinds struct {
	mesh    *kind[appmesh.MeshSpec, appmesh.MeshData, appmesh.MeshRef]
	node    *kind[appmesh.VirtualNodeSpec, appmesh.VirtualNodeData, appmesh.VirtualNodeRef]
	service *kind[appmesh.VirtualServiceSpec, appmesh.VirtualServiceData, appmesh.VirtualServiceRef]
	router  *kind[appmesh.VirtualRouterSpec, appmesh.VirtualRouterData, appmesh.VirtualRouterRef]
	route   *kind[appmesh.RouteSpec, appmesh.RouteData, appmesh.RouteRef]
	gateway *kind[appmesh.VirtualGatewaySpec, appmesh.VirtualGatewayData, appmesh.VirtualGatewayRef]
	gwRoute *kind[appmesh.GatewayRouteSpec, appmesh.GatewayRouteData, appmesh.GatewayRouteRef]
}

func ptr[T any](v T) *T { return &v }

func sibling(r appmesh.Ref, k appmesh.Kind, name string) appmesh.Ref {
	return appmesh.Ref{Owner: r.Owner, Mesh: r.Mesh, Kind: k, Name: name}
}

func newKinds() kinds {
	return kinds{
		mesh: &kind[appmesh.MeshSpec, appmesh.MeshData, appmesh.MeshRef]{
			k: appmesh.KindMesh,
			wrap: func(r appmesh.Ref, spec *appmesh.MeshSpec, md *appmesh.ResourceMetadata, status string) *appmesh.MeshData {
				return &appmesh.MeshData{MeshName: ptr(r.Mesh), Metadata: md, Spec: spec,
					Status: &appmesh.MeshStatus{Status: appmesh.MeshStatusCode(status)}}
			},
			unwrap: func(d *appmesh.MeshData) (*appmesh.MeshSpec, *appmesh.ResourceMetadata) { return d.Spec, d.Metadata },
			listRef: func(d *listItem) appmesh.MeshRef {
				m := d.Metadata
				return appmesh.MeshRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version}
			},
			// App Mesh answers "spec": {} for a mesh created without one.
			emptySpec: func() *appmesh.MeshSpec { return &appmesh.MeshSpec{} },
			quota:     func(l appmesh.Limits) int { return l.Meshes },
			inUse:     meshInUse,
		},
		node: &kind[appmesh.VirtualNodeSpec, appmesh.VirtualNodeData, appmesh.VirtualNodeRef]{
			k: appmesh.KindVirtualNode,
			wrap: func(r appmesh.Ref, spec *appmesh.VirtualNodeSpec, md *appmesh.ResourceMetadata, status string) *appmesh.VirtualNodeData {
				return &appmesh.VirtualNodeData{MeshName: ptr(r.Mesh), VirtualNodeName: ptr(r.Name), Metadata: md, Spec: spec,
					Status: &appmesh.VirtualNodeStatus{Status: appmesh.VirtualNodeStatusCode(status)}}
			},
			unwrap: func(d *appmesh.VirtualNodeData) (*appmesh.VirtualNodeSpec, *appmesh.ResourceMetadata) {
				return d.Spec, d.Metadata
			},
			listRef: func(d *listItem) appmesh.VirtualNodeRef {
				m := d.Metadata
				return appmesh.VirtualNodeRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, VirtualNodeName: d.VirtualNodeName}
			},
			check: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.VirtualNodeSpec) error {
				// Backends may name virtual services that do not exist yet:
				// walkthroughs create nodes before the services they call.
				if max := s.limits.BackendsPerVirtualNode; max > 0 && len(spec.Backends) > max {
					return appmesh.LimitExceeded("VirtualNode %s has %d backends; the limit is %d", r.Name, len(spec.Backends), max)
				}
				return appmesh.CheckVirtualNode(spec)
			},
			quota: func(l appmesh.Limits) int { return l.VirtualNodesPerMesh },
		},
		service: &kind[appmesh.VirtualServiceSpec, appmesh.VirtualServiceData, appmesh.VirtualServiceRef]{
			k: appmesh.KindVirtualService,
			wrap: func(r appmesh.Ref, spec *appmesh.VirtualServiceSpec, md *appmesh.ResourceMetadata, status string) *appmesh.VirtualServiceData {
				return &appmesh.VirtualServiceData{MeshName: ptr(r.Mesh), VirtualServiceName: ptr(r.Name), Metadata: md, Spec: spec,
					Status: &appmesh.VirtualServiceStatus{Status: appmesh.VirtualServiceStatusCode(status)}}
			},
			unwrap: func(d *appmesh.VirtualServiceData) (*appmesh.VirtualServiceSpec, *appmesh.ResourceMetadata) {
				return d.Spec, d.Metadata
			},
			listRef: func(d *listItem) appmesh.VirtualServiceRef {
				m := d.Metadata
				return appmesh.VirtualServiceRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, VirtualServiceName: d.VirtualServiceName}
			},
			check: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.VirtualServiceSpec) error {
				if err := appmesh.CheckServiceName("virtualServiceName", r.Name); err != nil {
					return err
				}
				if k, name := appmesh.ServiceProvider(spec); k != "" {
					return mustExist(tx, sibling(r, k, name))
				}
				return nil
			},
			refs: func(r appmesh.Ref, spec *appmesh.VirtualServiceSpec) []appmesh.Ref {
				if k, name := appmesh.ServiceProvider(spec); k != "" {
					return []appmesh.Ref{sibling(r, k, name)}
				}
				return nil
			},
			quota: func(l appmesh.Limits) int { return l.VirtualServicesPerMesh },
		},
		router: &kind[appmesh.VirtualRouterSpec, appmesh.VirtualRouterData, appmesh.VirtualRouterRef]{
			k: appmesh.KindVirtualRouter,
			wrap: func(r appmesh.Ref, spec *appmesh.VirtualRouterSpec, md *appmesh.ResourceMetadata, status string) *appmesh.VirtualRouterData {
				return &appmesh.VirtualRouterData{MeshName: ptr(r.Mesh), VirtualRouterName: ptr(r.Name), Metadata: md, Spec: spec,
					Status: &appmesh.VirtualRouterStatus{Status: appmesh.VirtualRouterStatusCode(status)}}
			},
			unwrap: func(d *appmesh.VirtualRouterData) (*appmesh.VirtualRouterSpec, *appmesh.ResourceMetadata) {
				return d.Spec, d.Metadata
			},
			listRef: func(d *listItem) appmesh.VirtualRouterRef {
				m := d.Metadata
				return appmesh.VirtualRouterRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, VirtualRouterName: d.VirtualRouterName}
			},
			keeps: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.VirtualRouterSpec) error {
				names, routes, err := children[appmesh.RouteData](s, tx, r)
				if err != nil {
					return err
				}
				specs := make([]*appmesh.RouteSpec, len(routes))
				for i, d := range routes {
					specs[i] = d.Spec
				}
				return appmesh.CheckRouterKeepsRoutes(spec, names, specs)
			},
			childQuota: func(l appmesh.Limits) int { return l.RoutesPerVirtualRouter },
			quota:      func(l appmesh.Limits) int { return l.VirtualRoutersPerMesh },
			inUse: func(tx store.Tx, r appmesh.Ref) error {
				return hasChildren(tx, r, appmesh.KindRoute)
			},
		},
		route: &kind[appmesh.RouteSpec, appmesh.RouteData, appmesh.RouteRef]{
			k: appmesh.KindRoute,
			wrap: func(r appmesh.Ref, spec *appmesh.RouteSpec, md *appmesh.ResourceMetadata, status string) *appmesh.RouteData {
				return &appmesh.RouteData{MeshName: ptr(r.Mesh), VirtualRouterName: ptr(r.Parent), RouteName: ptr(r.Name), Metadata: md, Spec: spec,
					Status: &appmesh.RouteStatus{Status: appmesh.RouteStatusCode(status)}}
			},
			unwrap: func(d *appmesh.RouteData) (*appmesh.RouteSpec, *appmesh.ResourceMetadata) { return d.Spec, d.Metadata },
			listRef: func(d *listItem) appmesh.RouteRef {
				m := d.Metadata
				return appmesh.RouteRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, RouteName: d.RouteName,
					VirtualRouterName: d.VirtualRouterName}
			},
			check: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.RouteSpec) error {
				router, _, err := getData[appmesh.VirtualRouterData](tx, sibling(r, appmesh.KindVirtualRouter, r.Parent))
				if err != nil {
					return err
				}
				var rs *appmesh.VirtualRouterSpec
				if router != nil {
					rs = router.Spec
				}
				if err := appmesh.CheckRoute(spec, rs); err != nil {
					return err
				}
				for _, vn := range appmesh.RouteTargets(spec) {
					if err := mustExist(tx, sibling(r, appmesh.KindVirtualNode, vn)); err != nil {
						return err
					}
				}
				return nil
			},
			refs: func(r appmesh.Ref, spec *appmesh.RouteSpec) []appmesh.Ref {
				var out []appmesh.Ref
				for _, vn := range appmesh.RouteTargets(spec) {
					out = append(out, sibling(r, appmesh.KindVirtualNode, vn))
				}
				return out
			},
			quota: func(l appmesh.Limits) int { return l.RoutesPerVirtualRouter },
		},
		gateway: &kind[appmesh.VirtualGatewaySpec, appmesh.VirtualGatewayData, appmesh.VirtualGatewayRef]{
			k: appmesh.KindVirtualGateway,
			wrap: func(r appmesh.Ref, spec *appmesh.VirtualGatewaySpec, md *appmesh.ResourceMetadata, status string) *appmesh.VirtualGatewayData {
				return &appmesh.VirtualGatewayData{MeshName: ptr(r.Mesh), VirtualGatewayName: ptr(r.Name), Metadata: md, Spec: spec,
					Status: &appmesh.VirtualGatewayStatus{Status: appmesh.VirtualGatewayStatusCode(status)}}
			},
			unwrap: func(d *appmesh.VirtualGatewayData) (*appmesh.VirtualGatewaySpec, *appmesh.ResourceMetadata) {
				return d.Spec, d.Metadata
			},
			listRef: func(d *listItem) appmesh.VirtualGatewayRef {
				m := d.Metadata
				return appmesh.VirtualGatewayRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, VirtualGatewayName: d.VirtualGatewayName}
			},
			keeps: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.VirtualGatewaySpec) error {
				names, routes, err := children[appmesh.GatewayRouteData](s, tx, r)
				if err != nil {
					return err
				}
				specs := make([]*appmesh.GatewayRouteSpec, len(routes))
				for i, d := range routes {
					specs[i] = d.Spec
				}
				return appmesh.CheckGatewayKeepsRoutes(spec, names, specs)
			},
			childQuota: func(l appmesh.Limits) int { return l.GatewayRoutesPerVirtualGateway },
			quota:      func(l appmesh.Limits) int { return l.VirtualGatewaysPerMesh },
			inUse: func(tx store.Tx, r appmesh.Ref) error {
				return hasChildren(tx, r, appmesh.KindGatewayRoute)
			},
		},
		gwRoute: &kind[appmesh.GatewayRouteSpec, appmesh.GatewayRouteData, appmesh.GatewayRouteRef]{
			k: appmesh.KindGatewayRoute,
			wrap: func(r appmesh.Ref, spec *appmesh.GatewayRouteSpec, md *appmesh.ResourceMetadata, status string) *appmesh.GatewayRouteData {
				return &appmesh.GatewayRouteData{MeshName: ptr(r.Mesh), VirtualGatewayName: ptr(r.Parent), GatewayRouteName: ptr(r.Name),
					Metadata: md, Spec: spec, Status: &appmesh.GatewayRouteStatus{Status: appmesh.GatewayRouteStatusCode(status)}}
			},
			unwrap: func(d *appmesh.GatewayRouteData) (*appmesh.GatewayRouteSpec, *appmesh.ResourceMetadata) {
				return d.Spec, d.Metadata
			},
			listRef: func(d *listItem) appmesh.GatewayRouteRef {
				m := d.Metadata
				return appmesh.GatewayRouteRef{Arn: m.Arn, CreatedAt: m.CreatedAt, LastUpdatedAt: m.LastUpdatedAt, MeshName: d.MeshName,
					MeshOwner: m.MeshOwner, ResourceOwner: m.ResourceOwner, Version: m.Version, GatewayRouteName: d.GatewayRouteName,
					VirtualGatewayName: d.VirtualGatewayName}
			},
			check: func(s *Service, tx store.Tx, r appmesh.Ref, spec *appmesh.GatewayRouteSpec) error {
				gw, _, err := getData[appmesh.VirtualGatewayData](tx, sibling(r, appmesh.KindVirtualGateway, r.Parent))
				if err != nil {
					return err
				}
				var gs *appmesh.VirtualGatewaySpec
				if gw != nil {
					gs = gw.Spec
				}
				if err := appmesh.CheckGatewayRoute(spec, gs); err != nil {
					return err
				}
				if vs := appmesh.GatewayRouteTargetService(spec); vs != "" {
					return mustExist(tx, sibling(r, appmesh.KindVirtualService, vs))
				}
				return nil
			},
			refs: func(r appmesh.Ref, spec *appmesh.GatewayRouteSpec) []appmesh.Ref {
				if vs := appmesh.GatewayRouteTargetService(spec); vs != "" {
					return []appmesh.Ref{sibling(r, appmesh.KindVirtualService, vs)}
				}
				return nil
			},
			quota: func(l appmesh.Limits) int { return l.GatewayRoutesPerVirtualGateway },
		},
	}
}

// meshInUse refuses to delete a mesh that still holds resources.
func meshInUse(tx store.Tx, r appmesh.Ref) error {
	prefix, _ := inUsePrefix(r)
	kvs, err := tx.List(prefix, "", 1)
	if err != nil || len(kvs) == 0 {
		return err
	}
	what := "resources"
	if child, ok := appmesh.ParseKey(kvs[0].Key); ok {
		what = plural(child.Kind)
	}
	return appmesh.InUse("Mesh with name %s cannot be deleted because it has active %s", r.Mesh, what)
}

// hasChildren refuses to delete a router with routes or a gateway with
// gateway routes.
func hasChildren(tx store.Tx, r appmesh.Ref, child appmesh.Kind) error {
	prefix, _ := inUsePrefix(r)
	kvs, err := tx.List(prefix, "", 1)
	if err != nil || len(kvs) == 0 {
		return err
	}
	return appmesh.InUse("%s with name %s cannot be deleted because it has active %s", label(r.Kind), r.Name, plural(child))
}

// children returns the names and records of a router's routes or a
// gateway's gateway routes, in name order; a record that does not decode
// is left out, logged and counted (Service.skip), as List leaves it out.
// A record without a spec is returned: the keeps rules pass it over.
func children[D any](s *Service, tx store.Tx, r appmesh.Ref) ([]string, []*D, error) {
	prefix, _ := inUsePrefix(r)
	kvs, err := tx.List(prefix, "", 0)
	if err != nil {
		return nil, nil, err
	}
	names, out := make([]string, 0, len(kvs)), make([]*D, 0, len(kvs))
	for _, kv := range kvs {
		child, ok := appmesh.ParseKey(kv.Key)
		d, err := decodeData[D](kv.Value)
		if !ok {
			err = errors.New("not a resource key")
		}
		if err != nil {
			s.skip(kv.Key, err)
			continue
		}
		names, out = append(names, child.Name), append(out, d)
	}
	return names, out, nil
}

// inUsePrefix is the prefix whose first key stops r's deletion (meshInUse,
// hasChildren, and prefetchDelete reads it up front); ok=false for kinds
// that have none.
func inUsePrefix(r appmesh.Ref) (prefix string, ok bool) {
	switch r.Kind {
	case appmesh.KindMesh:
		return appmesh.MeshChildrenPrefix(r.Owner, r.Mesh), true
	case appmesh.KindVirtualRouter:
		return appmesh.ChildrenPrefix(r.Owner, r.Mesh, appmesh.KindRoute, r.Name), true
	case appmesh.KindVirtualGateway:
		return appmesh.ChildrenPrefix(r.Owner, r.Mesh, appmesh.KindGatewayRoute, r.Name), true
	}
	return "", false
}

// plural names a kind in messages: "virtual nodes", "gateway routes".
func plural(k appmesh.Kind) string {
	var b strings.Builder
	for i, c := range string(k) {
		if c >= 'A' && c <= 'Z' && i > 0 {
			b.WriteByte(' ')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String() + "s"
}
