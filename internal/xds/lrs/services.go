package lrs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Services tells which virtual service an edge goes through, from a
// mesh's specs: the source's backends (a node's) or gateway routes (a
// gateway's) name virtual services, whose provider is the target node or
// a router with a route to it.
type Services struct {
	calls map[Endpoint][]string          // virtual services a source may call
	reach map[string]map[string]struct{} // virtual service -> target nodes
}

// LoadServices reads a mesh's specs; found is false when the mesh does
// not exist.
func LoadServices(ctx context.Context, st store.Store, owner, mesh string) (sv *Services, found bool, err error) {
	sv = &Services{calls: map[Endpoint][]string{}, reach: map[string]map[string]struct{}{}}
	routers := map[string][]string{}  // router -> target nodes
	providedBy := map[string]string{} // virtual service -> router
	_, err = st.View(ctx, func(tx store.Tx) error {
		_, ok, err := tx.Get(appmesh.MeshKey(owner, mesh))
		if err != nil || !ok {
			return err
		}
		found = true
		kvs, err := tx.List(appmesh.MeshChildrenPrefix(owner, mesh), "", 0)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			ref, ok := appmesh.ParseKey(kv.Key)
			if !ok {
				continue
			}
			if err := sv.add(ref, kv.Value, routers, providedBy); err != nil {
				return fmt.Errorf("read %s: %w", kv.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	for vs, r := range providedBy {
		for _, n := range routers[r] {
			sv.reachable(vs, n)
		}
	}
	return sv, found, nil
}

func (sv *Services) reachable(vs, node string) {
	if sv.reach[vs] == nil {
		sv.reach[vs] = map[string]struct{}{}
	}
	sv.reach[vs][node] = struct{}{}
}

func (sv *Services) add(ref appmesh.Ref, v []byte, routers map[string][]string, providedBy map[string]string) error {
	switch ref.Kind {
	case appmesh.KindVirtualNode:
		var d appmesh.VirtualNodeData
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		src := Endpoint{Kind: appmesh.KindVirtualNode, Name: ref.Name}
		if d.Spec != nil {
			for _, b := range d.Spec.Backends {
				if b.VirtualService != nil && b.VirtualService.VirtualServiceName != nil {
					sv.calls[src] = append(sv.calls[src], *b.VirtualService.VirtualServiceName)
				}
			}
		}
	case appmesh.KindGatewayRoute:
		var d appmesh.GatewayRouteData
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		src := Endpoint{Kind: appmesh.KindVirtualGateway, Name: ref.Parent}
		if d.Spec != nil {
			if vs := appmesh.GatewayRouteTargetService(d.Spec); vs != "" {
				sv.calls[src] = append(sv.calls[src], vs)
			}
		}
	case appmesh.KindVirtualService:
		var d appmesh.VirtualServiceData
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		switch kind, name := appmesh.ServiceProvider(d.Spec); {
		case name == "":
		case kind == appmesh.KindVirtualNode:
			sv.reachable(ref.Name, name)
		case kind == appmesh.KindVirtualRouter:
			providedBy[ref.Name] = name
		}
	case appmesh.KindRoute:
		var d appmesh.RouteData
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		if d.Spec != nil {
			routers[ref.Parent] = append(routers[ref.Parent], appmesh.RouteTargets(d.Spec)...)
		}
	}
	return nil
}

// VirtualService returns the one virtual service through which source
// reaches the target node, or "" when none or several could.
func (sv *Services) VirtualService(source Endpoint, target string) string {
	found := ""
	for _, vs := range sv.calls[source] {
		if _, ok := sv.reach[vs][target]; !ok || vs == found {
			continue
		}
		if found != "" {
			return ""
		}
		found = vs
	}
	return found
}
