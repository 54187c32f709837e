package translate

import (
	"fmt"

	"github.com/weftmesh/weft/internal/appmesh"
)

// virtualNode is the configuration of a virtual node's sidecar: ingress to
// its application, egress to its backends.
func (b *build) virtualNode() error {
	vn, err := b.node()
	if err != nil {
		return err
	}
	logs := b.accessLogs(b.nodeAccessLog(vn))
	dualStack := b.ipPreference(nodeIPPreference(vn)) != ""
	if b.memo != nil && b.memo.kept != nil {
		// logs and dualStack follow from vn and the mesh, which key the
		// kept part.
		b.memo.kept.addIngress(b, vn, func(c *build) { c.nodeIngress(vn, logs, dualStack) })
	} else {
		b.nodeIngress(vn, logs, dualStack)
	}
	b.egress(vn, logs, dualStack)
	return nil
}

// node returns the identity's virtual node.
func (b *build) node() (*appmesh.VirtualNodeData, error) {
	b.dep(appmesh.KindVirtualNode, "", b.id.Name)
	vn := b.v.VirtualNodes[b.id.Name]
	if vn == nil {
		return nil, fmt.Errorf("virtual node %q in mesh %q: %w", b.id.Name, b.id.Mesh, ErrNotFound)
	}
	return vn, nil
}
