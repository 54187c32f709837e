package meshapi

import (
	"net/http"
	"strings"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/shape"
)

// Action names the IAM action (appmesh:<Operation>) and resource ARN of a
// request, as App Mesh's IAM authorization did: the resource the
// operation acts on (a list acts on its parent; ListMeshes on "*"; the tag
// operations on their resourceArn), in the mesh owner's account (the
// meshOwner parameter, else the caller's). body is the request body, read
// already. ok is false when no operation matches.
func (h *Handler) Action(r *http.Request, rawBody []byte, account string) (action, resource string, ok bool) {
	segs, err := pathSegments(r.URL)
	if err != nil {
		return "", "", false
	}
	rt, vars, _ := h.match(r.Method, segs)
	if rt == nil {
		return "", "", false
	}
	name := rt.op.Name
	action = "appmesh:" + name
	// The input's string members, taken from where the operation takes
	// them (path, query string, header or body, as input does), so that
	// what is authorized is what the operation acts on.
	in := map[string]string{}
	body := bodyNames(rawBody)
	q := r.URL.Query()
	for _, m := range rt.in.Members {
		switch m.Location {
		case "":
			in[m.Name] = body[m.Name]
		case "uri":
			in[m.Name] = vars[m.LocationName]
		case "querystring":
			in[m.Name] = q.Get(m.LocationName)
		case "header":
			in[m.Name] = r.Header.Get(m.LocationName)
		}
	}
	str := func(k string) string { return in[k] }
	switch name {
	case "ListMeshes":
		return action, "*", true
	case "TagResource", "UntagResource", "ListTagsForResource":
		if arn := str("resourceArn"); arn != "" {
			return action, arn, true
		}
		return action, "*", true
	}
	owner := str("meshOwner")
	if owner == "" {
		owner = account
	}
	mesh := str("meshName")
	ref := appmesh.Ref{Owner: owner, Mesh: mesh, Kind: appmesh.KindMesh, Name: mesh}
	switch name[verbLen(name):] {
	case "VirtualNode":
		ref.Kind, ref.Name = appmesh.KindVirtualNode, str("virtualNodeName")
	case "VirtualService":
		ref.Kind, ref.Name = appmesh.KindVirtualService, str("virtualServiceName")
	case "VirtualRouter", "Routes": // a router's routes are listed on the router
		ref.Kind, ref.Name = appmesh.KindVirtualRouter, str("virtualRouterName")
	case "VirtualGateway", "GatewayRoutes":
		ref.Kind, ref.Name = appmesh.KindVirtualGateway, str("virtualGatewayName")
	case "Route":
		ref.Kind, ref.Parent, ref.Name = appmesh.KindRoute, str("virtualRouterName"), str("routeName")
	case "GatewayRoute":
		ref.Kind, ref.Parent, ref.Name = appmesh.KindGatewayRoute, str("virtualGatewayName"), str("gatewayRouteName")
	}
	return action, appmesh.ARN(h.region, ref), true
}

// verbLen is the length of the operation's verb (Create, Describe, ...).
func verbLen(op string) int {
	for _, v := range []string{"Create", "Describe", "Update", "Delete", "List"} {
		if strings.HasPrefix(op, v) {
			return len(v)
		}
	}
	return 0
}

// bodyNames returns the string members of a request body, decoded as the
// operation decodes it (exact member names): what is authorized is what
// the operation will act on.
func bodyNames(body []byte) map[string]string {
	names := map[string]string{}
	if len(body) == 0 {
		return names
	}
	obj, err := shape.DecodeObject(body)
	if err != nil {
		return names // the operation rejects the body
	}
	for k, v := range obj {
		if s, ok := v.(string); ok {
			names[k] = s
		}
	}
	return names
}
