package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// CheckRecord checks one key under appmesh.KeyPrefix and its value as a
// restore must before writing them (weft restore, weft store copy). It
// refuses what the server cannot read, and nothing more:
//   - a key the operations never write, or spell otherwise;
//   - a value that does not decode, with encoding/json as every reader of
//     it does, as the record its key names (members its type lacks are
//     ignored, as the readers ignore them);
//   - a resource whose names or mesh owner are not those of its key, or
//     without metadata (readItem).
//
// The model's constraints on a spec are not checked: the readers do not
// check them either, so a record written before a rule was tightened,
// or by a newer weft, is read as it is. It reads nothing else, so records
// that name others (tags, the in-use index) are not checked against them.
func CheckRecord(key string, value []byte) error {
	if r, ok := appmesh.ParseKey(key); ok {
		if r.Key() != key {
			return fmt.Errorf("not the key of %s %s (%s)", r.Kind, r.Name, r.Key())
		}
		return checkResource(r, value)
	}
	switch {
	case strings.HasPrefix(key, tagsPrefix):
		r, ok := appmesh.ParseKey(appmesh.KeyPrefix + strings.TrimPrefix(key, tagsPrefix))
		if !ok || tagsKey(r) != key {
			return errors.New("not the tags key of a resource")
		}
		if _, err := decodeTags(value); err != nil {
			return fmt.Errorf("not a tag list: %w", err)
		}
		return nil
	case strings.HasPrefix(key, refsPrefix):
		if _, _, ok := parseRefKey(key); !ok {
			return errors.New("not an in-use index key")
		}
		return nil // its value is never read
	case strings.HasPrefix(key, tokenPrefix):
		parts, ok := store.KeySegments(strings.TrimPrefix(key, tokenPrefix), 2)
		if !ok || tokenKey(parts[0], parts[1]) != key {
			return errors.New("not a client token key")
		}
		if _, err := decodeToken(value); err != nil {
			return fmt.Errorf("not a client token record: %w", err)
		}
		return nil
	case strings.HasPrefix(key, tokenExpPrefix):
		parts, ok := store.KeySegments(strings.TrimPrefix(key, tokenExpPrefix), 3)
		if !ok {
			return errors.New("not a client token expiry key")
		}
		exp, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || exp <= 0 || tokenExpKey(exp, parts[1], parts[2]) != key {
			return errors.New("not a client token expiry key")
		}
		return nil // its value is never read
	}
	return errors.New("not a key weft's App Mesh writes")
}

// checkResource checks the record of resource r: its kind's Data, as
// getData decodes it, with the names and metadata readItem reads.
func checkResource(r appmesh.Ref, value []byte) error {
	var err error
	switch r.Kind {
	case appmesh.KindMesh:
		_, err = decodeData[appmesh.MeshData](value)
	case appmesh.KindVirtualNode:
		_, err = decodeData[appmesh.VirtualNodeData](value)
	case appmesh.KindVirtualService:
		_, err = decodeData[appmesh.VirtualServiceData](value)
	case appmesh.KindVirtualRouter:
		_, err = decodeData[appmesh.VirtualRouterData](value)
	case appmesh.KindRoute:
		_, err = decodeData[appmesh.RouteData](value)
	case appmesh.KindVirtualGateway:
		_, err = decodeData[appmesh.VirtualGatewayData](value)
	case appmesh.KindGatewayRoute:
		_, err = decodeData[appmesh.GatewayRouteData](value)
	default:
		return fmt.Errorf("no resource kind %q", r.Kind)
	}
	var it *listItem
	if err == nil {
		it, err = readItem(value)
	}
	if err != nil {
		return fmt.Errorf("not a valid %s: %w", r.Kind, err)
	}
	for _, n := range it.names(r) {
		if n.got == nil || *n.got != n.want {
			return fmt.Errorf("%s is %q, not %q as its key says", n.member, str(n.got), n.want)
		}
	}
	return nil
}

// nameOf is one name a stored record holds and the one its key gives.
type nameOf struct {
	member string
	got    *string
	want   string
}

// names pairs the names the record of r holds with those r's key gives.
func (it *listItem) names(r appmesh.Ref) []nameOf {
	out := []nameOf{{"meshName", it.MeshName, r.Mesh}, {"metadata.meshOwner", it.Metadata.MeshOwner, r.Owner}}
	switch r.Kind {
	case appmesh.KindVirtualNode:
		out = append(out, nameOf{"virtualNodeName", it.VirtualNodeName, r.Name})
	case appmesh.KindVirtualService:
		out = append(out, nameOf{"virtualServiceName", it.VirtualServiceName, r.Name})
	case appmesh.KindVirtualRouter:
		out = append(out, nameOf{"virtualRouterName", it.VirtualRouterName, r.Name})
	case appmesh.KindRoute:
		out = append(out, nameOf{"virtualRouterName", it.VirtualRouterName, r.Parent}, nameOf{"routeName", it.RouteName, r.Name})
	case appmesh.KindVirtualGateway:
		out = append(out, nameOf{"virtualGatewayName", it.VirtualGatewayName, r.Name})
	case appmesh.KindGatewayRoute:
		out = append(out, nameOf{"virtualGatewayName", it.VirtualGatewayName, r.Parent}, nameOf{"gatewayRouteName", it.GatewayRouteName, r.Name})
	}
	return out
}

// parseRefKey returns the reference an in-use index key stands for, if
// it is one refKey writes.
func parseRefKey(key string) (from, to appmesh.Ref, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(key, refsPrefix), "/", 5)
	if len(parts) != 5 {
		return from, to, false
	}
	head, ok := store.KeySegments(strings.Join(parts[:4], "/"), 4)
	if !ok {
		return from, to, false
	}
	to = appmesh.Ref{Owner: head[0], Mesh: head[1], Kind: appmesh.Kind(head[2]), Name: head[3]}
	switch to.Kind {
	case appmesh.KindVirtualNode, appmesh.KindVirtualRouter, appmesh.KindVirtualService: // what the kinds' refs name
	default:
		return from, to, false
	}
	from, ok = appmesh.ParseKey(appmesh.MeshChildrenPrefix(to.Owner, to.Mesh) + parts[4])
	if !ok || refKey(from, to) != key {
		return from, to, false
	}
	return from, to, true
}

// decodeData decodes a resource record as every reader of it does.
func decodeData[D any](value []byte) (*D, error) {
	d := new(D)
	if err := json.Unmarshal(value, d); err != nil {
		return nil, err
	}
	return d, nil
}
