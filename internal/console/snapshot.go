package console

import (
	"encoding/json"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Snapshot limits' defaults.
const (
	// DefaultMaxSnapshot bounds the resources one snapshot sends; a mesh
	// with more is sent in part, and snapshot-end says so (the client
	// then reads the mesh through the API).
	DefaultMaxSnapshot = 50_000
	// snapshotChunk is the resources per "snapshot" event.
	snapshotChunk = 250
	// snapshotPage is the keys read from the store at a time.
	snapshotPage = 1000
)

// Resource is one resource of a snapshot: its kind, parent and name, and
// Data, the JSON its Describe operation returns (the store holds exactly
// that, see appmesh/keys.go).
type Resource struct {
	Kind   appmesh.Kind    `json:"kind"`
	Parent string          `json:"parent,omitempty"`
	Name   string          `json:"name"`
	Data   json.RawMessage `json:"data"`
}

// readSnapshot reads every resource of owner's mesh in tx that allowed
// lets the caller read (nil: every one), at most max; complete is false
// when there were more.
func readSnapshot(tx store.Tx, owner, mesh string, allowed func(appmesh.Ref) bool, max int) (res []Resource, complete bool, err error) {
	prefix := appmesh.MeshChildrenPrefix(owner, mesh)
	after := ""
	for {
		kvs, err := tx.List(prefix, after, snapshotPage)
		if err != nil {
			return nil, false, err
		}
		for _, kv := range kvs {
			ref, ok := appmesh.ParseKey(kv.Key)
			if !ok || ref.Kind == appmesh.KindMesh || (allowed != nil && !allowed(ref)) {
				continue
			}
			if len(res) == max {
				return res, false, nil
			}
			res = append(res, Resource{Kind: ref.Kind, Parent: ref.Parent, Name: ref.Name, Data: kv.Value})
		}
		if len(kvs) < snapshotPage {
			return res, true, nil
		}
		after = kvs[len(kvs)-1].Key
	}
}

// DescribeAction is the action that authorizes reading the resource ref
// names: appmesh:DescribeVirtualNode, appmesh:DescribeRoute, ...
func DescribeAction(k appmesh.Kind) string {
	s := string(k)
	if s == "" {
		return "appmesh:Describe"
	}
	return "appmesh:Describe" + string(s[0]-'a'+'A') + s[1:]
}
