package ops

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestChecksWithoutHTTP: a caller of the operations that is not the HTTP
// API gets App Mesh's rules that the model leaves out, from the validation
// (appmesh.Check) that a write's input must pass to be given to the write
// at all, on create and update of each kind whose spec holds what they
// check (virtual nodes, routes, gateway routes), and a refused write
// changes nothing.
func TestChecksWithoutHTTP(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	c := Caller{Account: "111122223333"}
	// A call decodes its input from JSON and makes one operation.
	type call func(in string) error
	createNode := func(in string) error {
		_, err := checked(ctx, svc.CreateVirtualNode, c, decodeInput[appmesh.CreateVirtualNodeInput](t, in))
		return err
	}
	updateNode := func(in string) error {
		_, err := checked(ctx, svc.UpdateVirtualNode, c, decodeInput[appmesh.UpdateVirtualNodeInput](t, in))
		return err
	}
	createRoute := func(in string) error {
		_, err := checked(ctx, svc.CreateRoute, c, decodeInput[appmesh.CreateRouteInput](t, in))
		return err
	}
	updateRoute := func(in string) error {
		_, err := checked(ctx, svc.UpdateRoute, c, decodeInput[appmesh.UpdateRouteInput](t, in))
		return err
	}
	createGatewayRoute := func(in string) error {
		_, err := checked(ctx, svc.CreateGatewayRoute, c, decodeInput[appmesh.CreateGatewayRouteInput](t, in))
		return err
	}
	updateGatewayRoute := func(in string) error {
		_, err := checked(ctx, svc.UpdateGatewayRoute, c, decodeInput[appmesh.UpdateGatewayRouteInput](t, in))
		return err
	}

	const (
		listener = `"listeners":[{"portMapping":{"port":80,"protocol":"http"}}]`
		action   = `"action":{"weightedTargets":[{"virtualNode":"vn","weight":1}]}`
		target   = `"action":{"target":{"virtualService":{"virtualServiceName":"s.local"}}}`
	)
	setup := []struct {
		do call
		in string
	}{
		{func(in string) error {
			_, err := checked(ctx, svc.CreateMesh, c, decodeInput[appmesh.CreateMeshInput](t, in))
			return err
		}, `{"meshName":"m"}`},
		{createNode, `{"meshName":"m","virtualNodeName":"vn","spec":{` + listener + `}}`},
		{func(in string) error {
			_, err := checked(ctx, svc.CreateVirtualRouter, c, decodeInput[appmesh.CreateVirtualRouterInput](t, in))
			return err
		}, `{"meshName":"m","virtualRouterName":"vr","spec":{` + listener + `}}`},
		{createRoute, `{"meshName":"m","virtualRouterName":"vr","routeName":"r","spec":{"httpRoute":{"match":{"prefix":"/"},` + action + `}}}`},
		{func(in string) error {
			_, err := checked(ctx, svc.CreateVirtualService, c, decodeInput[appmesh.CreateVirtualServiceInput](t, in))
			return err
		}, `{"meshName":"m","virtualServiceName":"s.local","spec":{"provider":{"virtualRouter":{"virtualRouterName":"vr"}}}}`},
		{func(in string) error {
			_, err := checked(ctx, svc.CreateVirtualGateway, c, decodeInput[appmesh.CreateVirtualGatewayInput](t, in))
			return err
		}, `{"meshName":"m","virtualGatewayName":"g","spec":{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}]}}`},
		{createGatewayRoute, `{"meshName":"m","virtualGatewayName":"g","gatewayRouteName":"gr","spec":{"httpRoute":{"match":{"prefix":"/"},` + target + `}}}`},
	}
	for _, s := range setup {
		if err := s.do(s.in); err != nil {
			t.Fatalf("%s: %v", s.in, err)
		}
	}

	cases := []struct {
		name string
		do   call
		in   string
		want string // the violation the message must hold
	}{
		{"create node, duration", createNode,
			`{"meshName":"m","virtualNodeName":"vn2","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"},"timeout":{"http":{"perRequest":{"unit":"s","value":315576000001}}}}]}}`,
			"Value '315576000001' at 'spec.listeners.1.member.timeout.http.perRequest.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000 (s)"},
		{"update node, DNS hostname", updateNode,
			`{"meshName":"m","virtualNodeName":"vn","spec":{` + listener + `,"serviceDiscovery":{"dns":{"hostname":""}}}}`,
			"Value '' at 'spec.serviceDiscovery.dns.hostname' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"update node, backend", updateNode,
			`{"meshName":"m","virtualNodeName":"vn","spec":{` + listener + `,"backends":[{"virtualService":{"virtualServiceName":"s\nlocal"}}]}}`,
			"Value 's\nlocal' at 'spec.backends.1.member.virtualService.virtualServiceName' failed to satisfy constraint: Member must not contain control characters"},
		{"create route, path regex", createRoute,
			`{"meshName":"m","virtualRouterName":"vr","routeName":"r2","spec":{"httpRoute":{"match":{"path":{"regex":"(["}},` + action + `}}}`,
			"Value '([' at 'spec.httpRoute.match.path.regex' failed to satisfy constraint: Member must be a valid regular expression"},
		{"update route, retry timeout", updateRoute,
			`{"meshName":"m","virtualRouterName":"vr","routeName":"r","spec":{"httpRoute":{"match":{"prefix":"/"},` + action + `,"retryPolicy":{"maxRetries":1,"perRetryTimeout":{"unit":"ms","value":315576000000001}}}}}`,
			"Value '315576000000001' at 'spec.httpRoute.retryPolicy.perRetryTimeout.value' failed to satisfy constraint: Member must have value less than or equal to 315576000000000 (ms)"},
		{"create gateway route, path regex", createGatewayRoute,
			`{"meshName":"m","virtualGatewayName":"g","gatewayRouteName":"gr2","spec":{"httpRoute":{"match":{"path":{"regex":"(?<"}},` + target + `}}}`,
			"Value '(?<' at 'spec.httpRoute.match.path.regex' failed to satisfy constraint: Member must be a valid regular expression"},
		{"update gateway route, header regex", updateGatewayRoute,
			`{"meshName":"m","virtualGatewayName":"g","gatewayRouteName":"gr","spec":{"httpRoute":{"match":{"prefix":"/","headers":[{"name":"x","match":{"regex":"*"}}]},` + target + `}}}`,
			"Value '*' at 'spec.httpRoute.match.headers.1.member.match.regex' failed to satisfy constraint: Member must be a valid regular expression"},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			before := keys(t, st)
			err := cs.do(cs.in)
			var e *appmesh.Error
			if !errors.As(err, &e) || e.Code != appmesh.CodeBadRequest || !strings.Contains(e.Message, cs.want) {
				t.Fatalf("%v, want a BadRequestException holding %q", err, cs.want)
			}
			if after := keys(t, st); !maps.EqualFunc(before, after, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatal("a refused write changed the store")
			}
		})
	}
}

// decodeInput decodes an operation's input from JSON, as a caller without
// HTTP would build it.
func decodeInput[In any](t *testing.T, s string) *In {
	t.Helper()
	in := new(In)
	if err := json.Unmarshal([]byte(s), in); err != nil {
		t.Fatal(err)
	}
	return in
}
