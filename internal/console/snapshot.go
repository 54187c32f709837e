package console

import (
	"encoding/json"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// Snapshot limits' defaults.
const (
	// DefaultMaxSnapshotBytes bounds the resources' JSON one snapshot
	// holds (a snapshot is read in one transaction, then sent, so it is
	// held in memory meanwhile); a mesh with more is sent in part, and
	// snapshot-end says so (the client then reads the mesh through the
	// API). 1,251 resources of the benchmark's mesh are 0.7 MB.
	DefaultMaxSnapshotBytes = 8 << 20
	// DefaultMaxSnapshots bounds the snapshots being read or sent at
	// once; a stream asking for one beyond it gets an empty, incomplete
	// snapshot (the client reads the mesh through the API).
	DefaultMaxSnapshots = 4
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
// lets the caller read (nil: every one), at most maxBytes of their JSON;
// complete is false when there were more.
func readSnapshot(tx store.Tx, owner, mesh string, allowed func(appmesh.Ref) bool, maxBytes int) (res []Resource, complete bool, err error) {
	prefix := appmesh.MeshChildrenPrefix(owner, mesh)
	after := ""
	size := 0
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
			if size += len(kv.Value); size > maxBytes {
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
