package appmesh

import (
	"net/url"
	"strings"
)

// Store layout. Every App Mesh resource is one key whose value is the JSON of
// its Data shape, exactly as Describe returns it (MeshData, VirtualNodeData,
// ...). Name segments are path-escaped, so a '/' in a name cannot split a key.
//
//	appmesh/mesh/<owner>/<mesh>                              MeshData
//	appmesh/res/<owner>/<mesh>/virtualNode/<name>            VirtualNodeData
//	appmesh/res/<owner>/<mesh>/virtualService/<name>         VirtualServiceData
//	appmesh/res/<owner>/<mesh>/virtualRouter/<name>          VirtualRouterData
//	appmesh/res/<owner>/<mesh>/route/<router>/<name>         RouteData
//	appmesh/res/<owner>/<mesh>/virtualGateway/<name>         VirtualGatewayData
//	appmesh/res/<owner>/<mesh>/gatewayRoute/<gateway>/<name> GatewayRouteData
//
// Readers (the xDS server) watch KeyPrefix and use ParseKey; only the API
// writes these keys. Other bookkeeping (tags, idempotency tokens) lives under
// other prefixes of "appmesh/" that ParseKey rejects.
const KeyPrefix = "appmesh/"

// Kind names a type of App Mesh resource, as it appears in ARNs.
type Kind string

// Resource kinds.
const (
	KindMesh           Kind = "mesh"
	KindVirtualNode    Kind = "virtualNode"
	KindVirtualService Kind = "virtualService"
	KindVirtualRouter  Kind = "virtualRouter"
	KindRoute          Kind = "route"
	KindVirtualGateway Kind = "virtualGateway"
	KindGatewayRoute   Kind = "gatewayRoute"
)

// Ref identifies one resource. Parent is the router of a route or the
// gateway of a gateway route, and empty otherwise.
type Ref struct {
	Owner  string // account that owns the mesh
	Mesh   string
	Kind   Kind
	Parent string
	Name   string // the mesh name for KindMesh
}

func esc(s string) string { return url.PathEscape(s) }

// MeshKey is the key of a mesh.
func MeshKey(owner, mesh string) string {
	return KeyPrefix + "mesh/" + esc(owner) + "/" + esc(mesh)
}

// MeshChildrenPrefix is the prefix of every resource inside a mesh.
func MeshChildrenPrefix(owner, mesh string) string {
	return KeyPrefix + "res/" + esc(owner) + "/" + esc(mesh) + "/"
}

// Key returns the store key of a resource.
func (r Ref) Key() string {
	if r.Kind == KindMesh {
		return MeshKey(r.Owner, r.Mesh)
	}
	k := MeshChildrenPrefix(r.Owner, r.Mesh) + string(r.Kind) + "/"
	if r.Kind == KindRoute || r.Kind == KindGatewayRoute {
		k += esc(r.Parent) + "/"
	}
	return k + esc(r.Name)
}

// ChildrenPrefix is the prefix of the resources of a kind inside a mesh; for
// routes and gateway routes, those of one parent.
func ChildrenPrefix(owner, mesh string, kind Kind, parent string) string {
	k := MeshChildrenPrefix(owner, mesh) + string(kind) + "/"
	if kind == KindRoute || kind == KindGatewayRoute {
		k += esc(parent) + "/"
	}
	return k
}

// ParseKey returns the resource a store key holds, or ok=false for keys that
// are not resources.
func ParseKey(key string) (Ref, bool) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return Ref{}, false
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return Ref{}, false
		}
		parts[i] = u
	}
	switch {
	case len(parts) == 3 && parts[0] == "mesh":
		return Ref{Owner: parts[1], Mesh: parts[2], Kind: KindMesh, Name: parts[2]}, true
	case len(parts) == 5 && parts[0] == "res":
		switch k := Kind(parts[3]); k {
		case KindVirtualNode, KindVirtualService, KindVirtualRouter, KindVirtualGateway:
			return Ref{Owner: parts[1], Mesh: parts[2], Kind: k, Name: parts[4]}, true
		}
	case len(parts) == 6 && parts[0] == "res":
		switch k := Kind(parts[3]); k {
		case KindRoute, KindGatewayRoute:
			return Ref{Owner: parts[1], Mesh: parts[2], Kind: k, Parent: parts[4], Name: parts[5]}, true
		}
	}
	return Ref{}, false
}
