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
	"github.com/weftmesh/weft/internal/store"
)

// TestWritesTakeOnlyValidatedInput: a Go caller cannot have a write skip
// the model. An invalid input is refused when it is validated, before any
// operation sees it (BadRequestException, AWS's message), and the one
// Valid made without validating, the zero one, is refused by every write;
// neither changes the store.
func TestWritesTakeOnlyValidatedInput(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	c := Caller{Account: "111122223333"}
	router(t, svc, c)
	unchanged := func(t *testing.T, do func() error, check func(error) bool) {
		t.Helper()
		before := keys(t, st)
		err := do()
		if !check(err) {
			t.Fatalf("unexpected answer: %v", err)
		}
		if !maps.EqualFunc(before, keys(t, st), func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatal("a refused write changed the store")
		}
	}

	invalid := []struct {
		name string
		do   func() error
		want string
	}{
		{"name too long", func() error {
			return second(checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s(strings.Repeat("m", 256))}))
		}, "Value '" + strings.Repeat("m", 256) + "' at 'meshName' failed to satisfy constraint: Member must have length less than or equal to 255"},
		{"weight above 100", func() error {
			return second(checked(ctx, svc.CreateRoute, c, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"), Spec: routeSpec(101)}))
		}, "Value '101' at 'spec.httpRoute.action.weightedTargets.1.member.weight' failed to satisfy constraint: Member must have value less than or equal to 100"},
		{"no spec", func() error {
			return second(checked(ctx, svc.UpdateVirtualRouter, c, &appmesh.UpdateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr")}))
		}, "Value null at 'spec' failed to satisfy constraint: Member must not be null"},
		{"no tags", func() error {
			return second(checked(ctx, svc.TagResource, c, &appmesh.TagResourceInput{ResourceArn: s("arn:aws:appmesh:us-east-1:111122223333:mesh/m")}))
		}, "Value null at 'tags' failed to satisfy constraint: Member must not be null"},
	}
	for _, cs := range invalid {
		t.Run(cs.name, func(t *testing.T) {
			unchanged(t, cs.do, func(err error) bool {
				e, ok := appmesh.AsError(err)
				return ok && e.Code == appmesh.CodeBadRequest && strings.Contains(e.Message, cs.want)
			})
		})
	}

	// Every write operation, given the zero Valid.
	writes := map[string]func() error{
		"CreateMesh":           unvalidated(ctx, svc.CreateMesh, c),
		"UpdateMesh":           unvalidated(ctx, svc.UpdateMesh, c),
		"CreateVirtualNode":    unvalidated(ctx, svc.CreateVirtualNode, c),
		"UpdateVirtualNode":    unvalidated(ctx, svc.UpdateVirtualNode, c),
		"CreateVirtualService": unvalidated(ctx, svc.CreateVirtualService, c),
		"UpdateVirtualService": unvalidated(ctx, svc.UpdateVirtualService, c),
		"CreateVirtualRouter":  unvalidated(ctx, svc.CreateVirtualRouter, c),
		"UpdateVirtualRouter":  unvalidated(ctx, svc.UpdateVirtualRouter, c),
		"CreateRoute":          unvalidated(ctx, svc.CreateRoute, c),
		"UpdateRoute":          unvalidated(ctx, svc.UpdateRoute, c),
		"CreateVirtualGateway": unvalidated(ctx, svc.CreateVirtualGateway, c),
		"UpdateVirtualGateway": unvalidated(ctx, svc.UpdateVirtualGateway, c),
		"CreateGatewayRoute":   unvalidated(ctx, svc.CreateGatewayRoute, c),
		"UpdateGatewayRoute":   unvalidated(ctx, svc.UpdateGatewayRoute, c),
		"TagResource":          unvalidated(ctx, svc.TagResource, c),
		"UntagResource":        unvalidated(ctx, svc.UntagResource, c),
	}
	for name, op := range appmesh.Model().Operations {
		if op.Method == "PUT" && writes[name] == nil { // the writes but deletes
			t.Errorf("write %s is not in the test", name)
		}
	}
	for name, do := range writes {
		t.Run(name+" unvalidated", func(t *testing.T) {
			unchanged(t, do, func(err error) bool { return errors.Is(err, appmesh.ErrNotValidated) })
		})
	}
}

// TestWritesDoNotValidateAgain: a write trusts the Valid it is given and
// does not walk the model a second time (the API has walked it once, on
// the request's document). The walk is seen only by what it refuses, so
// the input is broken after it was validated, which no caller may do:
// the write stores it as it is. With a second walk in ops the write
// would answer BadRequestException.
func TestWritesDoNotValidateAgain(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t, &clock{time.Unix(1800000000, 0)})
	c := Caller{Account: "111122223333"}
	router(t, svc, c)
	if _, err := checked(ctx, svc.CreateRoute, c, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"), Spec: routeSpec(1)}); err != nil {
		t.Fatal(err)
	}
	v, err := appmesh.Check(&appmesh.UpdateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("r"), Spec: routeSpec(2), ClientToken: s("tok")})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := v.Input()
	*in.Spec.HttpRoute.Action.WeightedTargets[0].Weight = 101 // PercentInt: at most 100
	out, err := svc.UpdateRoute(ctx, c, v)
	if err != nil {
		t.Fatalf("the write validated its input again: %v", err)
	}
	if w := *out.Route.Spec.HttpRoute.Action.WeightedTargets[0].Weight; w != 101 {
		t.Fatalf("stored weight %d, want the 101 it was given", w)
	}
}

// TestOlderServersTokensReplay: a client token remembered by the server
// before writes stopped validating their input again is still honoured: a
// retry with the same input gets that server's answer, another input a
// ConflictException. The records are as that server wrote them, with the
// hashes it computed of these inputs.
func TestOlderServersTokensReplay(t *testing.T) {
	ctx := context.Background()
	clk := &clock{time.Unix(1800000000, 0)}
	svc, st := newService(t, clk)
	c := Caller{Account: "111122223333"}
	remembered := func(token, hash, result string) {
		t.Helper()
		b, err := json.Marshal(tokenRecord{Hash: hash, Expires: clk.t.Add(time.Hour).UnixNano(), Result: json.RawMessage(result)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Put(tokenKey(c.Account, token), b) }); err != nil {
			t.Fatal(err)
		}
	}
	const (
		route = `{"clientToken":"tok-1","meshName":"color-mesh","virtualRouterName":"color-router","routeName":"color-route",` +
			`"spec":{"priority":1,"httpRoute":{"match":{"method":"GET","port":80,"prefix":"/"},` +
			`"action":{"weightedTargets":[{"port":80,"virtualNode":"green","weight":4},{"port":80,"virtualNode":"yellow","weight":1}]}}}}`
		node = `{"clientToken":"tok-2","meshName":"color-mesh","meshOwner":"444455556666","virtualNodeName":"red",` +
			`"tags":[{"key":"team","value":"a<b&c"}],"spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}],` +
			`"serviceDiscovery":{"awsCloudMap":{"namespaceName":"colors.local","serviceName":"red"}},` +
			`"logging":{"accessLog":{"file":{"format":{"text":"[%START_TIME%] %REQ(:METHOD)%\n"},"path":"/dev/stdout"}}}}}`
	)
	remembered("tok-1", "98541b6dad2fc30d4023e3acd2aca9ee8ccab9f11bfe7d5f2e7f619fb4beaa81", `{"routeName":"color-route","metadata":{"uid":"older-route"}}`)
	remembered("tok-2", "4191ffb64412639c6e526638a6abc922d083f435a236d2f1124538dad36cb27a", `{"virtualNodeName":"red","metadata":{"uid":"older-node"}}`)

	r, err := checked(ctx, svc.UpdateRoute, c, decodeInput[appmesh.UpdateRouteInput](t, route))
	if err != nil || *r.Route.Metadata.Uid != "older-route" {
		t.Errorf("UpdateRoute retried: %v, want the older server's answer", err)
	}
	n, err := checked(ctx, svc.CreateVirtualNode, c, decodeInput[appmesh.CreateVirtualNodeInput](t, node))
	if err != nil || *n.VirtualNode.Metadata.Uid != "older-node" {
		t.Errorf("CreateVirtualNode retried: %v, want the older server's answer", err)
	}
	_, err = checked(ctx, svc.UpdateRoute, c, decodeInput[appmesh.UpdateRouteInput](t, strings.Replace(route, `"weight":4`, `"weight":3`, 1)))
	if e, ok := appmesh.AsError(err); !ok || e.Code != appmesh.CodeConflict {
		t.Errorf("another input with the token: %v, want a ConflictException", err)
	}
}

// router creates mesh m with virtual node vn and virtual router vr, which
// listens on port 80 (HTTP).
func router(t *testing.T, svc *Service, c Caller) {
	t.Helper()
	ctx := context.Background()
	listener := []appmesh.VirtualRouterListener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	for _, err := range []error{
		second(checked(ctx, svc.CreateMesh, c, &appmesh.CreateMeshInput{MeshName: s("m")})),
		second(checked(ctx, svc.CreateVirtualNode, c, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"), Spec: &appmesh.VirtualNodeSpec{}})),
		second(checked(ctx, svc.CreateVirtualRouter, c, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"), Spec: &appmesh.VirtualRouterSpec{Listeners: listener}})),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// routeSpec is an HTTP route of every path to vn with the weight given.
func routeSpec(weight int64) *appmesh.RouteSpec {
	return &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/")},
		Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(weight)}}}}}
}

// unvalidated returns a call of a write with the zero Valid.
func unvalidated[In, Out any](ctx context.Context, op func(context.Context, Caller, appmesh.Valid[In]) (*Out, error), c Caller) func() error {
	return func() error {
		_, err := op(ctx, c, appmesh.Valid[In]{})
		return err
	}
}

func second[T any](_ T, err error) error { return err }
