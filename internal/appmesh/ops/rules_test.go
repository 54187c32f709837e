package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// An update of a virtual router or gateway that would leave one of its
// routes fitting no listener is refused, as App Mesh refuses it, and
// changes nothing; an update the routes still fit is taken. (Before, the
// update was taken and the routes it left stopped carrying traffic while
// Describe still said ACTIVE.)
func TestUpdateKeepsRoutesFitting(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	caller := Caller{Account: "111122223333"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	pm := func(port int64, proto appmesh.PortProtocol) appmesh.VirtualRouterListener {
		return appmesh.VirtualRouterListener{PortMapping: &appmesh.PortMapping{Port: p(port), Protocol: proto}}
	}
	must(checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m")}))
	must(checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
		Spec: &appmesh.VirtualNodeSpec{}}))
	must(checked(ctx, svc.CreateVirtualRouter, caller, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: []appmesh.VirtualRouterListener{pm(8080, appmesh.PortProtocolHttp)}}}))
	targets := []appmesh.WeightedTarget{{VirtualNode: s("vn"), Weight: p(1)}}
	for _, name := range []string{"web", "api"} {
		must(checked(ctx, svc.CreateRoute, caller, &appmesh.CreateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s(name),
			Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/" + name)},
				Action: &appmesh.HttpRouteAction{WeightedTargets: targets}}}}))
	}
	updateRouter := func(ls ...appmesh.VirtualRouterListener) error {
		_, err := checked(ctx, svc.UpdateVirtualRouter, caller, &appmesh.UpdateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
			Spec: &appmesh.VirtualRouterSpec{Listeners: ls}})
		return err
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		var ae *appmesh.Error
		if !errors.As(err, &ae) || ae.Code != appmesh.CodeBadRequest || !strings.Contains(ae.Message, want) {
			t.Errorf("%s: %v, want BadRequestException with %q", what, err, want)
		}
	}
	before := keys(t, st)
	refused("a second listener, routes without a port", updateRouter(pm(8080, appmesh.PortProtocolHttp), pm(9090, appmesh.PortProtocolGrpc)),
		"All Routes for this Virtual Router must define a port match before adding multiple listeners to this Virtual Router. 2 Route(s) are missing port. Listing up to 5 route names: [api, web]")
	refused("the listener's protocol changed under http routes", updateRouter(pm(8080, appmesh.PortProtocolHttp2)),
		"2 Route(s) match none. Listing up to 5 route names: [api, web]")
	after := keys(t, st)
	if len(after) != len(before) {
		t.Errorf("refused updates changed the store: %d keys, then %d", len(before), len(after))
	}
	for k, v := range before {
		if string(after[k]) != string(v) {
			t.Errorf("refused updates changed %s", k)
		}
	}
	// The routes fit a new port of the same protocol: taken.
	if err := updateRouter(pm(8081, appmesh.PortProtocolHttp)); err != nil {
		t.Errorf("an update the routes still fit: %v", err)
	}
	// One route names a port the update removes: refused, naming it.
	must(checked(ctx, svc.UpdateRoute, caller, &appmesh.UpdateRouteInput{MeshName: s("m"), VirtualRouterName: s("vr"), RouteName: s("api"),
		Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{Match: &appmesh.HttpRouteMatch{Prefix: s("/api"), Port: p(8081)},
			Action: &appmesh.HttpRouteAction{WeightedTargets: targets}}}}))
	refused("a route's port removed", updateRouter(pm(8082, appmesh.PortProtocolHttp)), "1 Route(s) match none. Listing up to 5 route names: [api]")

	// Gateways: the same rule for their gateway routes.
	must(checked(ctx, svc.CreateVirtualService, caller, &appmesh.CreateVirtualServiceInput{MeshName: s("m"), VirtualServiceName: s("svc.local"),
		Spec: &appmesh.VirtualServiceSpec{}}))
	gwl := func(port int64, proto appmesh.VirtualGatewayPortProtocol) appmesh.VirtualGatewayListener {
		return appmesh.VirtualGatewayListener{PortMapping: &appmesh.VirtualGatewayPortMapping{Port: p(port), Protocol: proto}}
	}
	must(checked(ctx, svc.CreateVirtualGateway, caller, &appmesh.CreateVirtualGatewayInput{MeshName: s("m"), VirtualGatewayName: s("gw"),
		Spec: &appmesh.VirtualGatewaySpec{Listeners: []appmesh.VirtualGatewayListener{gwl(8443, appmesh.VirtualGatewayPortProtocolGrpc)}}}))
	must(checked(ctx, svc.CreateGatewayRoute, caller, &appmesh.CreateGatewayRouteInput{MeshName: s("m"), VirtualGatewayName: s("gw"), GatewayRouteName: s("gr"),
		Spec: &appmesh.GatewayRouteSpec{GrpcRoute: &appmesh.GrpcGatewayRoute{Match: &appmesh.GrpcGatewayRouteMatch{ServiceName: s("svc")},
			Action: &appmesh.GrpcGatewayRouteAction{Target: &appmesh.GatewayRouteTarget{VirtualService: &appmesh.GatewayRouteVirtualService{VirtualServiceName: s("svc.local")}}}}}}))
	updateGateway := func(ls ...appmesh.VirtualGatewayListener) error {
		_, err := checked(ctx, svc.UpdateVirtualGateway, caller, &appmesh.UpdateVirtualGatewayInput{MeshName: s("m"), VirtualGatewayName: s("gw"),
			Spec: &appmesh.VirtualGatewaySpec{Listeners: ls}})
		return err
	}
	refused("a gateway's grpc listener replaced by http", updateGateway(gwl(80, appmesh.VirtualGatewayPortProtocolHttp)),
		"All Gateway Routes for this Virtual Gateway must match the protocol and port of one of its listeners. 1 Gateway Route(s) match none. Listing up to 5 route names: [gr]")
	if err := updateGateway(gwl(9443, appmesh.VirtualGatewayPortProtocolGrpc)); err != nil {
		t.Errorf("a gateway update its routes still fit: %v", err)
	}
}

// A virtual node with service discovery and no listener is refused, with
// App Mesh's message, on create and update, and nothing is stored; with a
// listener, or without either, it is taken.
func TestServiceDiscoveryNeedsAListener(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t, &clock{time.Unix(1800000000, 0)})
	caller := Caller{Account: "111122223333"}
	if _, err := checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m")}); err != nil {
		t.Fatal(err)
	}
	sd := &appmesh.ServiceDiscovery{Dns: &appmesh.DnsServiceDiscovery{Hostname: s("vn.local")}}
	listeners := []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(80), Protocol: appmesh.PortProtocolHttp}}}
	want := "Service Discovery can't be set without a listener."
	refused := func(what string, err error) {
		t.Helper()
		var ae *appmesh.Error
		if !errors.As(err, &ae) || ae.Code != appmesh.CodeBadRequest || ae.Message != want {
			t.Errorf("%s: %v, want BadRequestException %q", what, err, want)
		}
	}
	before := keys(t, st)
	_, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("vn"),
		Spec: &appmesh.VirtualNodeSpec{ServiceDiscovery: sd}})
	refused("create", err)
	if after := keys(t, st); len(after) != len(before) {
		t.Errorf("a refused create stored %d keys", len(after)-len(before))
	}
	for _, spec := range []*appmesh.VirtualNodeSpec{{}, {Listeners: listeners, ServiceDiscovery: sd}} {
		if _, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s(fmt.Sprintf("ok%d", len(spec.Listeners))),
			Spec: spec}); err != nil {
			t.Errorf("create %+v: %v", spec, err)
		}
	}
	_, err = checked(ctx, svc.UpdateVirtualNode, caller, &appmesh.UpdateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s("ok1"),
		Spec: &appmesh.VirtualNodeSpec{ServiceDiscovery: sd}})
	refused("update dropping the listener", err)
}

// An update of a virtual router reads its routes past one that does not
// decode, and logs and counts it as a listing does (a hand-edited store):
// the update is taken.
func TestUpdateRouterSkipsUndecodableRoute(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var logs bytes.Buffer
	skipped := prometheus.NewCounter(prometheus.CounterOpts{Name: "skipped"})
	clk := &clock{time.Unix(1800000000, 0)}
	svc := New(st, Config{Region: "us-east-1", Now: clk.now, Skipped: skipped}, slog.New(slog.NewTextHandler(&logs, nil)))
	caller := Caller{Account: "111122223333"}
	listener := func(port int64) []appmesh.VirtualRouterListener {
		return []appmesh.VirtualRouterListener{{PortMapping: &appmesh.PortMapping{Port: p(port), Protocol: appmesh.PortProtocolHttp}}}
	}
	if _, err := checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m")}); err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, svc.CreateVirtualRouter, caller, &appmesh.CreateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: listener(80)}}); err != nil {
		t.Fatal(err)
	}
	bad := appmesh.Ref{Owner: caller.Account, Mesh: "m", Kind: appmesh.KindRoute, Parent: "vr", Name: "bad"}.Key()
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Put(bad, []byte(`{"spec":`)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := checked(ctx, svc.UpdateVirtualRouter, caller, &appmesh.UpdateVirtualRouterInput{MeshName: s("m"), VirtualRouterName: s("vr"),
		Spec: &appmesh.VirtualRouterSpec{Listeners: listener(81)}}); err != nil {
		t.Fatalf("update of a router beside an undecodable route: %v", err)
	}
	if n := testutil.ToFloat64(skipped); n != 1 {
		t.Errorf("counted %v skipped records, want 1", n)
	}
	if got := logs.String(); strings.Count(got, "skipping undecodable record") != 1 || !strings.Contains(got, bad) {
		t.Errorf("logged %q, want one skipping undecodable record naming %s", got, bad)
	}
}
