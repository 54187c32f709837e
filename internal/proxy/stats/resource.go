package stats

import "strings"

// ResourceOf splits an App Mesh resource ARN (or mesh/<m>/<type>/<name>)
// into the mesh, the stats-tag type (virtual_node, virtual_gateway) and
// the name, as App Mesh's stats tags name them (appmesh.mesh,
// appmesh.virtual_node, appmesh.virtual_gateway); ok is false when the ARN
// has another shape. weft proxy and weft envoy bootstrap both tag by it.
func ResourceOf(arn string) (mesh, typ, name string, ok bool) {
	i := strings.Index(arn, "mesh/")
	if i < 0 {
		return "", "", "", false
	}
	parts := strings.Split(arn[i+len("mesh/"):], "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return "", "", "", false
	}
	switch parts[1] {
	case "virtualNode":
		typ = "virtual_node"
	case "virtualGateway":
		typ = "virtual_gateway"
	default:
		return "", "", "", false
	}
	return parts[0], typ, parts[2], true
}
