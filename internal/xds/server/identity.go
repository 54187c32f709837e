package server

import (
	"errors"
	"fmt"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// errNodeID is wrapped by every node id parse error, so the stream can close
// with InvalidArgument.
var errNodeID = errors.New("malformed node id")

// ParseNodeID returns the virtual node or virtual gateway a proxy's node.id
// names. It accepts the three forms App Mesh's agent and Kubernetes
// controller produce:
//
//	arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>
//	mesh/<mesh>/virtualNode/<name>
//	mesh/<mesh>@<owner>/virtualGateway/<name>
//
// The owner of the mesh is, in order: the "@owner" suffix of the mesh
// segment, the account of the ARN, defaultOwner. Proxyless is left false;
// see proxyless.
func ParseNodeID(id, defaultOwner string) (translate.Identity, error) {
	owner := defaultOwner
	path := id
	if strings.HasPrefix(id, "arn:") {
		// arn:<partition>:<service>:<region>:<account>:<resource>; the
		// resource part is the only one that may hold '/'.
		f := strings.SplitN(id, ":", 6)
		if len(f) != 6 || !strings.HasPrefix(f[2], "appmesh") {
			return translate.Identity{}, fmt.Errorf("%w %q: want arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>", errNodeID, clip(id))
		}
		if f[4] != "" {
			owner = f[4]
		}
		path = f[5]
	}
	seg := strings.Split(path, "/")
	if len(seg) != 4 || seg[0] != "mesh" {
		return translate.Identity{}, fmt.Errorf("%w %q: want mesh/<mesh>/virtualNode/<name>, mesh/<mesh>/virtualGateway/<name> or their ARN", errNodeID, clip(id))
	}
	mesh := seg[1]
	if m, o, ok := strings.Cut(mesh, "@"); ok {
		mesh, owner = m, o
	}
	var kind appmesh.Kind
	switch appmesh.Kind(seg[2]) {
	case appmesh.KindVirtualNode:
		kind = appmesh.KindVirtualNode
	case appmesh.KindVirtualGateway:
		kind = appmesh.KindVirtualGateway
	default:
		return translate.Identity{}, fmt.Errorf("%w %q: resource type %q is neither virtualNode nor virtualGateway", errNodeID, clip(id), clip(seg[2]))
	}
	if mesh == "" || owner == "" || seg[3] == "" {
		return translate.Identity{}, fmt.Errorf("%w %q: empty mesh, owner or resource name", errNodeID, clip(id))
	}
	return translate.Identity{MeshOwner: owner, Mesh: mesh, Kind: kind, Name: seg[3]}, nil
}

// ProxylessMetadataKey is the node metadata key that, set to a boolean,
// overrides the user agent rule of proxyless.
const ProxylessMetadataKey = "weft.proxyless"

// proxyless tells a proxyless gRPC client (the xds resolver of grpc-go,
// grpc-java, grpc-js or C-core) from a proxy (Envoy, weft proxy).
//
// The rule: node metadata "weft.proxyless" (true or "true", anything else
// is false) decides when present;
// otherwise a node whose user_agent_name begins with "gRPC" (grpc-go sends
// "gRPC Go", grpc-js "gRPC Node Pure JS", C-core "gRPC C-core" and its
// wrapped languages "gRPC Python" etc.) is proxyless, and anything else
// (Envoy sends "envoy") is a proxy. Envoy configured by App Mesh's agent
// sends no such metadata, so App Mesh sidecars keep working unchanged.
func proxyless(n *core.Node) bool {
	if v, ok := n.GetMetadata().GetFields()[ProxylessMetadataKey]; ok {
		// A bootstrap file may hold the value as a JSON boolean or string.
		return v.GetBoolValue() || v.GetStringValue() == "true"
	}
	return strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc")
}

// SDSSocketMetadataKey is the node metadata key that, set to true, says
// the proxy has a local SDS agent (weft envoy bootstrap --sds-socket,
// weft proxy --sds-socket): App Mesh's sds.secretName secrets are then
// asked of it rather than of weft server (translate.Identity.SDSSocket).
const SDSSocketMetadataKey = "weft.sds_socket"

// sdsSocket reads SDSSocketMetadataKey: true or "true" (a bootstrap file
// may hold either), anything else or nothing is false.
func sdsSocket(n *core.Node) bool {
	v := n.GetMetadata().GetFields()[SDSSocketMetadataKey]
	return v.GetBoolValue() || v.GetStringValue() == "true"
}
