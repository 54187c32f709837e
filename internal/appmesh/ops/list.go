package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/pagetoken"
	"github.com/weftmesh/weft/internal/store"
)

// listItem is the part of a stored Data that List answers with. Decoding
// only it leaves the spec unparsed into Go values, which is most of the work.
type listItem struct {
	MeshName           *string                   `json:"meshName"`
	VirtualNodeName    *string                   `json:"virtualNodeName"`
	VirtualServiceName *string                   `json:"virtualServiceName"`
	VirtualRouterName  *string                   `json:"virtualRouterName"`
	RouteName          *string                   `json:"routeName"`
	VirtualGatewayName *string                   `json:"virtualGatewayName"`
	GatewayRouteName   *string                   `json:"gatewayRouteName"`
	Metadata           *appmesh.ResourceMetadata `json:"metadata"`
}

// listed returns what List answers with of a listed key, or why it
// is left out: a key below the listed prefix that is not a resource of
// the kind, or a record readItem refuses. The operations write none of
// these; a hand-edited store may hold one, and it must not fail every
// List that reaches it, as the xDS server skips what it cannot decode.
func (k *kind[S, D, R]) listed(kv store.KV) (*listItem, error) {
	if r, ok := appmesh.ParseKey(kv.Key); !ok || r.Kind != k.k {
		return nil, fmt.Errorf("not a %s key", k.k)
	}
	return readItem(kv.Value)
}

// readItem decodes the names and metadata of a resource record. A record
// without metadata is refused: List reads its members (listRef), Update
// and Delete copy it, and a restore (CheckRecord) refuses such a record
// for them. Its members may be missing: update starts a missing version
// again at 1.
func readItem(value []byte) (*listItem, error) {
	var it listItem
	if err := json.Unmarshal(value, &it); err != nil {
		return nil, err
	}
	if it.Metadata == nil {
		return nil, errors.New("no metadata")
	}
	return &it, nil
}

// page is one page of a List.
type page[R any] struct {
	items []R
	next  *string
}

// defaultPageSize is App Mesh's page size when the client sets no limit.
const defaultPageSize = 100

// list returns a page of the resources of a kind under a mesh (or, for
// meshes, of an owner; for routes and gateway routes, of a parent).
func (k *kind[S, D, R]) list(ctx context.Context, s *Service, parent appmesh.Ref, limit *int64, nextToken *string) (page[R], error) {
	n := defaultPageSize
	if limit != nil {
		if *limit < 1 || *limit > defaultPageSize {
			return page[R]{}, appmesh.BadRequest("Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100", *limit)
		}
		n = int(*limit)
	}
	var prefix string
	if k.k == appmesh.KindMesh {
		prefix = meshesPrefix(parent.Owner)
	} else {
		prefix = appmesh.ChildrenPrefix(parent.Owner, parent.Mesh, k.k, parent.Name)
	}
	after := ""
	if nextToken != nil {
		var ok bool
		if after, ok = pagetoken.After(prefix, *nextToken); !ok {
			return page[R]{}, appmesh.BadRequest("The nextToken %q is not valid", *nextToken)
		}
	}
	return view(ctx, s, func(tx store.Tx) (page[R], error) {
		if k.k != appmesh.KindMesh {
			anchor := appmesh.Ref{Owner: parent.Owner, Mesh: parent.Mesh, Kind: k.k, Parent: parent.Name}
			if err := ancestors(tx, anchor); err != nil {
				return page[R]{}, err
			}
		}
		kvs, err := tx.List(prefix, after, n+1)
		if err != nil {
			return page[R]{}, err
		}
		p := page[R]{items: make([]R, 0, min(len(kvs), n))}
		for i, kv := range kvs {
			if i == n {
				tok := pagetoken.Make(prefix, kvs[i-1].Key)
				p.next = &tok
				break
			}
			it, err := k.listed(kv)
			if err != nil {
				s.skip(kv.Key, err)
				continue
			}
			p.items = append(p.items, k.listRef(it))
		}
		return p, nil
	})
}
