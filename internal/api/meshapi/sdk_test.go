package meshapi_test

// The conformance suite: the real aws-sdk-go-v2 App Mesh client against
// weft's App Mesh API (api.Handler -> meshapi -> ops on a bbolt store) over
// a real socket. Every operation of the model must be exercised successfully by
// the time TestSDK ends.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

const (
	account      = "111122223333"
	otherAccount = "444455556666"
	region       = "us-west-2"
)

// opRecorder remembers which operations succeeded.
type opRecorder struct {
	mu  sync.Mutex
	ops map[string]bool
}

func (r *opRecorder) middleware(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("weftRecordOp",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err == nil {
				r.mu.Lock()
				r.ops[middleware.GetOperationName(ctx)] = true
				r.mu.Unlock()
			}
			return out, md, err
		}), middleware.After)
}

// testServer is a weft API handler on a fresh store, behind a socket. Its
// failNext makes the next PUT fail with a 503 after it was served, as if
// the response had been lost.
type testServer struct {
	URL      string
	st       store.Store // the store the API writes
	failNext atomic.Bool
	served   atomic.Int64 // PUTs whose response was replaced
}

// newServer serves App Mesh on a new store with the given quotas (nil:
// the defaults).
func newServer(t *testing.T, limits *appmesh.Limits) *testServer {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &api.Handler{AppMesh: meshapi.New(ops.New(st, ops.Config{Region: region, Limits: limits}, log), meshapi.Config{DefaultAccount: account}, log)}
	ts := &testServer{st: st}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && ts.failNext.CompareAndSwap(true, false) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			ts.served.Add(1)
			w.Header().Set("x-amzn-ErrorType", "ServiceUnavailableException")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"message":"response lost"}`)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ts.URL = srv.URL
	return ts
}

// client returns an SDK client that signs as acct (weft takes a 12-digit
// access key id as the caller's account).
func (ts *testServer) client(acct string, rec *opRecorder) *sdk.Client {
	opts := sdk.Options{
		Region:       region,
		BaseEndpoint: aws.String(ts.URL),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: acct, SecretAccessKey: "secret"}, nil
		}),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxBackoff = time.Millisecond
		}),
	}
	if rec != nil {
		opts.APIOptions = append(opts.APIOptions, rec.middleware)
	}
	return sdk.New(opts)
}

func TestSDK(t *testing.T) {
	rec := &opRecorder{ops: map[string]bool{}}
	t.Run("lifecycle", func(t *testing.T) { testLifecycle(t, rec) })
	t.Run("errors", func(t *testing.T) { testErrors(t, rec) })
	t.Run("pagination", func(t *testing.T) { testPagination(t, rec) })
	t.Run("clientToken", func(t *testing.T) { testClientToken(t, rec) })
	t.Run("versions", func(t *testing.T) { testVersions(t, rec) })
	t.Run("crossAccount", func(t *testing.T) { testCrossAccount(t, rec) })
	t.Run("maximalSpecs", func(t *testing.T) { testMaximalSpecs(t, rec) })

	var missing []string
	for name := range appmesh.Model().Operations {
		if !rec.ops[name] {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("operations never exercised successfully: %v", missing)
	}
	if n := len(rec.ops); n != 38 {
		t.Errorf("exercised %d operations, want all 38", n)
	}
}

// must(call())(t) fails t if call failed and returns its result.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantErr checks that err is the SDK's typed error E and that its message
// contains want.
func wantErr[E error](t *testing.T, err error, want string) {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T); want %T", err, err, e)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not mention %q", err.Error(), want)
	}
}

func httpListener(port int32, proto types.PortProtocol) types.Listener {
	return types.Listener{PortMapping: &types.PortMapping{Port: aws.Int32(port), Protocol: proto}}
}

func nodeSpec(backends ...string) *types.VirtualNodeSpec {
	s := &types.VirtualNodeSpec{
		Listeners: []types.Listener{httpListener(80, types.PortProtocolHttp)},
		ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{
			Hostname: aws.String("node.example.local")}},
	}
	for _, b := range backends {
		s.Backends = append(s.Backends, &types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String(b)}})
	}
	return s
}

func routerSpec() *types.VirtualRouterSpec {
	return &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(80), Protocol: types.PortProtocolHttp}}}}
}

func routeSpec(targets ...string) *types.RouteSpec {
	var wts []types.WeightedTarget
	for _, n := range targets {
		wts = append(wts, types.WeightedTarget{VirtualNode: aws.String(n), Weight: 1})
	}
	return &types.RouteSpec{HttpRoute: &types.HttpRoute{
		Match:  &types.HttpRouteMatch{Prefix: aws.String("/")},
		Action: &types.HttpRouteAction{WeightedTargets: wts},
	}}
}

func gatewaySpec() *types.VirtualGatewaySpec {
	return &types.VirtualGatewaySpec{Listeners: []types.VirtualGatewayListener{{PortMapping: &types.VirtualGatewayPortMapping{Port: aws.Int32(8080), Protocol: types.VirtualGatewayPortProtocolHttp}}}}
}

func gatewayRouteSpec(vs string) *types.GatewayRouteSpec {
	return &types.GatewayRouteSpec{HttpRoute: &types.HttpGatewayRoute{
		Match:  &types.HttpGatewayRouteMatch{Prefix: aws.String("/")},
		Action: &types.HttpGatewayRouteAction{Target: &types.GatewayRouteTarget{VirtualService: &types.GatewayRouteVirtualService{VirtualServiceName: aws.String(vs)}}},
	}}
}

func serviceByNode(node string) *types.VirtualServiceSpec {
	return &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualNode{Value: types.VirtualNodeServiceProvider{VirtualNodeName: aws.String(node)}}}
}

func serviceByRouter(router string) *types.VirtualServiceSpec {
	return &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String(router)}}}
}

// checkMetadata checks what App Mesh puts in every resource's metadata.
func checkMetadata(t *testing.T, md *types.ResourceMetadata, arn string, version int64) {
	t.Helper()
	if got := aws.ToString(md.Arn); got != arn {
		t.Errorf("arn %s, want %s", got, arn)
	}
	if aws.ToInt64(md.Version) != version {
		t.Errorf("%s: version %d, want %d", arn, aws.ToInt64(md.Version), version)
	}
	if len(aws.ToString(md.Uid)) != 36 {
		t.Errorf("%s: uid %q is not a uuid", arn, aws.ToString(md.Uid))
	}
	if md.CreatedAt == nil || md.LastUpdatedAt == nil || time.Since(*md.CreatedAt) > time.Minute || md.LastUpdatedAt.Before(*md.CreatedAt) {
		t.Errorf("%s: createdAt %v lastUpdatedAt %v", arn, md.CreatedAt, md.LastUpdatedAt)
	}
	if aws.ToString(md.MeshOwner) == "" || aws.ToString(md.ResourceOwner) == "" {
		t.Errorf("%s: meshOwner %q resourceOwner %q", arn, aws.ToString(md.MeshOwner), aws.ToString(md.ResourceOwner))
	}
}

const arnPrefix = "arn:aws:appmesh:" + region + ":" + account + ":mesh/"

func testLifecycle(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	c := newServer(t, nil).client(account, rec)
	m := aws.String("life")

	mesh := must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m,
		Tags: []types.TagRef{{Key: aws.String("team"), Value: aws.String("blue")}}}))(t).Mesh
	checkMetadata(t, mesh.Metadata, arnPrefix+"life", 1)
	if mesh.Spec == nil || mesh.Status.Status != types.MeshStatusCodeActive {
		t.Fatalf("mesh spec %v status %v", mesh.Spec, mesh.Status)
	}
	got := must(c.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: m}))(t).Mesh
	if aws.ToString(got.Metadata.Uid) != aws.ToString(mesh.Metadata.Uid) {
		t.Fatal("describe returned another uid")
	}
	meshes := must(c.ListMeshes(ctx, &sdk.ListMeshesInput{}))(t).Meshes
	if len(meshes) != 1 || aws.ToString(meshes[0].MeshName) != "life" || aws.ToInt64(meshes[0].Version) != 1 ||
		aws.ToString(meshes[0].MeshOwner) != account || aws.ToString(meshes[0].Arn) != arnPrefix+"life" {
		t.Fatalf("list meshes: %+v", meshes)
	}
	upd := must(c.UpdateMesh(ctx, &sdk.UpdateMeshInput{MeshName: m, Spec: &types.MeshSpec{
		EgressFilter: &types.EgressFilter{Type: types.EgressFilterTypeAllowAll}}}))(t).Mesh
	checkMetadata(t, upd.Metadata, arnPrefix+"life", 2)
	if upd.Spec.EgressFilter.Type != types.EgressFilterTypeAllowAll {
		t.Fatalf("update mesh spec %+v", upd.Spec)
	}

	for _, n := range []string{"red", "blue"} {
		vn := must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String(n), Spec: nodeSpec("red.life.local")}))(t).VirtualNode
		checkMetadata(t, vn.Metadata, arnPrefix+"life/virtualNode/"+n, 1)
	}
	must(c.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("red")}))(t)
	vn := must(c.UpdateVirtualNode(ctx, &sdk.UpdateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("red"), Spec: nodeSpec()}))(t).VirtualNode
	checkMetadata(t, vn.Metadata, arnPrefix+"life/virtualNode/red", 2)
	nodes := must(c.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m}))(t).VirtualNodes
	if len(nodes) != 2 || aws.ToString(nodes[0].VirtualNodeName) != "blue" || aws.ToString(nodes[1].VirtualNodeName) != "red" {
		t.Fatalf("list nodes: %+v", nodes)
	}

	vr := must(c.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("rt"), Spec: routerSpec()}))(t).VirtualRouter
	checkMetadata(t, vr.Metadata, arnPrefix+"life/virtualRouter/rt", 1)
	must(c.DescribeVirtualRouter(ctx, &sdk.DescribeVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("rt")}))(t)
	must(c.UpdateVirtualRouter(ctx, &sdk.UpdateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("rt"), Spec: routerSpec()}))(t)
	if l := must(c.ListVirtualRouters(ctx, &sdk.ListVirtualRoutersInput{MeshName: m}))(t).VirtualRouters; len(l) != 1 {
		t.Fatalf("list routers: %+v", l)
	}

	route := must(c.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("rt"), RouteName: aws.String("r1"), Spec: routeSpec("red", "blue")}))(t).Route
	checkMetadata(t, route.Metadata, arnPrefix+"life/virtualRouter/rt/route/r1", 1)
	must(c.DescribeRoute(ctx, &sdk.DescribeRouteInput{MeshName: m, VirtualRouterName: aws.String("rt"), RouteName: aws.String("r1")}))(t)
	must(c.UpdateRoute(ctx, &sdk.UpdateRouteInput{MeshName: m, VirtualRouterName: aws.String("rt"), RouteName: aws.String("r1"), Spec: routeSpec("red")}))(t)
	routes := must(c.ListRoutes(ctx, &sdk.ListRoutesInput{MeshName: m, VirtualRouterName: aws.String("rt")}))(t).Routes
	if len(routes) != 1 || aws.ToString(routes[0].VirtualRouterName) != "rt" || aws.ToInt64(routes[0].Version) != 2 {
		t.Fatalf("list routes: %+v", routes)
	}

	vs := must(c.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("red.life.local"), Spec: serviceByNode("red")}))(t).VirtualService
	checkMetadata(t, vs.Metadata, arnPrefix+"life/virtualService/red.life.local", 1)
	must(c.DescribeVirtualService(ctx, &sdk.DescribeVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("red.life.local")}))(t)
	must(c.UpdateVirtualService(ctx, &sdk.UpdateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("red.life.local"), Spec: serviceByRouter("rt")}))(t)
	if l := must(c.ListVirtualServices(ctx, &sdk.ListVirtualServicesInput{MeshName: m}))(t).VirtualServices; len(l) != 1 {
		t.Fatalf("list services: %+v", l)
	}

	vg := must(c.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw"), Spec: gatewaySpec()}))(t).VirtualGateway
	checkMetadata(t, vg.Metadata, arnPrefix+"life/virtualGateway/gw", 1)
	must(c.DescribeVirtualGateway(ctx, &sdk.DescribeVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw")}))(t)
	must(c.UpdateVirtualGateway(ctx, &sdk.UpdateVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw"), Spec: gatewaySpec()}))(t)
	if l := must(c.ListVirtualGateways(ctx, &sdk.ListVirtualGatewaysInput{MeshName: m}))(t).VirtualGateways; len(l) != 1 {
		t.Fatalf("list gateways: %+v", l)
	}
	gr := must(c.CreateGatewayRoute(ctx, &sdk.CreateGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("g1"), Spec: gatewayRouteSpec("red.life.local")}))(t).GatewayRoute
	checkMetadata(t, gr.Metadata, arnPrefix+"life/virtualGateway/gw/gatewayRoute/g1", 1)
	must(c.DescribeGatewayRoute(ctx, &sdk.DescribeGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("g1")}))(t)
	must(c.UpdateGatewayRoute(ctx, &sdk.UpdateGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("g1"), Spec: gatewayRouteSpec("red.life.local")}))(t)
	if l := must(c.ListGatewayRoutes(ctx, &sdk.ListGatewayRoutesInput{MeshName: m, VirtualGatewayName: aws.String("gw")}))(t).GatewayRoutes; len(l) != 1 || aws.ToString(l[0].VirtualGatewayName) != "gw" {
		t.Fatalf("list gateway routes: %+v", l)
	}

	// Tags: given at create, added, replaced, removed.
	meshArn := aws.String(arnPrefix + "life")
	must(c.TagResource(ctx, &sdk.TagResourceInput{ResourceArn: meshArn, Tags: []types.TagRef{
		{Key: aws.String("env"), Value: aws.String("test")}, {Key: aws.String("team"), Value: aws.String("red")}}}))(t)
	must(c.UntagResource(ctx, &sdk.UntagResourceInput{ResourceArn: meshArn, TagKeys: []string{"env", "absent"}}))(t)
	tags := must(c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceArn: meshArn}))(t).Tags
	if len(tags) != 1 || aws.ToString(tags[0].Key) != "team" || aws.ToString(tags[0].Value) != "red" {
		t.Fatalf("tags: %+v", tags)
	}
	nodeArn := aws.String(arnPrefix + "life/virtualNode/blue")
	if tags := must(c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceArn: nodeArn}))(t).Tags; tags == nil || len(tags) != 0 {
		t.Fatalf("untagged node has tags %+v", tags)
	}

	// Deletes, in dependency order; each answers the resource, DELETED.
	if d := must(c.DeleteGatewayRoute(ctx, &sdk.DeleteGatewayRouteInput{MeshName: m, VirtualGatewayName: aws.String("gw"), GatewayRouteName: aws.String("g1")}))(t).GatewayRoute; d.Status.Status != types.GatewayRouteStatusCodeDeleted || aws.ToInt64(d.Metadata.Version) != 2 {
		t.Fatalf("deleted gateway route: %+v", d)
	}
	if d := must(c.DeleteVirtualGateway(ctx, &sdk.DeleteVirtualGatewayInput{MeshName: m, VirtualGatewayName: aws.String("gw")}))(t).VirtualGateway; d.Status.Status != types.VirtualGatewayStatusCodeDeleted {
		t.Fatalf("deleted gateway: %+v", d.Status)
	}
	if d := must(c.DeleteVirtualService(ctx, &sdk.DeleteVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("red.life.local")}))(t).VirtualService; d.Status.Status != types.VirtualServiceStatusCodeDeleted {
		t.Fatalf("deleted service: %+v", d.Status)
	}
	if d := must(c.DeleteRoute(ctx, &sdk.DeleteRouteInput{MeshName: m, VirtualRouterName: aws.String("rt"), RouteName: aws.String("r1")}))(t).Route; d.Status.Status != types.RouteStatusCodeDeleted {
		t.Fatalf("deleted route: %+v", d.Status)
	}
	if d := must(c.DeleteVirtualRouter(ctx, &sdk.DeleteVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("rt")}))(t).VirtualRouter; d.Status.Status != types.VirtualRouterStatusCodeDeleted {
		t.Fatalf("deleted router: %+v", d.Status)
	}
	for _, n := range []string{"red", "blue"} {
		if d := must(c.DeleteVirtualNode(ctx, &sdk.DeleteVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String(n)}))(t).VirtualNode; d.Status.Status != types.VirtualNodeStatusCodeDeleted {
			t.Fatalf("deleted node: %+v", d.Status)
		}
	}
	d := must(c.DeleteMesh(ctx, &sdk.DeleteMeshInput{MeshName: m}))(t).Mesh
	if d.Status.Status != types.MeshStatusCodeDeleted || aws.ToInt64(d.Metadata.Version) != 2 || d.Spec.EgressFilter.Type != types.EgressFilterTypeAllowAll {
		t.Fatalf("deleted mesh: %+v", d)
	}
	_, err := c.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: m})
	wantErr[*types.NotFoundException](t, err, "life")
	if l := must(c.ListMeshes(ctx, &sdk.ListMeshesInput{}))(t).Meshes; l == nil || len(l) != 0 {
		t.Fatalf("meshes left: %+v", l)
	}
	// A deleted mesh's tags go with it.
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)
	if tags := must(c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceArn: meshArn}))(t).Tags; len(tags) != 0 {
		t.Fatalf("re-created mesh inherited tags %+v", tags)
	}
}

func testPagination(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	limits := appmesh.DefaultLimits()
	limits.VirtualNodesPerMesh = 1000
	c := newServer(t, &limits).client(account, rec)
	m := aws.String("many")
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)
	const n = 250
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("node-%03d", i)
	}
	// Eight writers, so that commits share fsyncs.
	var wg sync.WaitGroup
	errc := make(chan error, n)
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				_, err := c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String(want[i]), Spec: nodeSpec()})
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, limit := range []*int32{nil, aws.Int32(100), aws.Int32(7), aws.Int32(1)} {
		var got []string
		pages := 0
		p := sdk.NewListVirtualNodesPaginator(c, &sdk.ListVirtualNodesInput{MeshName: m, Limit: limit})
		for p.HasMorePages() {
			page := must(p.NextPage(ctx))(t)
			pages++
			max := 100
			if limit != nil {
				max = int(*limit)
			}
			if len(page.VirtualNodes) > max {
				t.Fatalf("page of %d with limit %d", len(page.VirtualNodes), max)
			}
			for _, r := range page.VirtualNodes {
				got = append(got, aws.ToString(r.VirtualNodeName))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %v: listed %d nodes, want the %d created, in order", aws.ToInt32(limit), len(got), n)
		}
		if wantPages := (n + 99) / 100; limit == nil && pages != wantPages {
			t.Fatalf("default page size: %d pages, want %d", pages, wantPages)
		}
	}

	// A nextToken only pages the listing that gave it.
	first := must(c.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m, Limit: aws.Int32(1)}))(t)
	other := aws.String("other")
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: other}))(t)
	must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: other, VirtualNodeName: aws.String("node-000"), Spec: nodeSpec()}))(t)
	for name, in := range map[string]*sdk.ListVirtualNodesInput{
		"another mesh's": {MeshName: other, NextToken: first.NextToken},
		"the bare name":  {MeshName: m, NextToken: aws.String(base64.RawURLEncoding.EncodeToString([]byte("node-000")))},
		"another kind's": {MeshName: m, NextToken: must(c.ListMeshes(ctx, &sdk.ListMeshesInput{Limit: aws.Int32(1)}))(t).NextToken},
		"edited":         {MeshName: m, NextToken: aws.String(strings.ToUpper(aws.ToString(first.NextToken)))},
	} {
		_, err := c.ListVirtualNodes(ctx, in)
		if err == nil {
			t.Errorf("%s nextToken %q accepted", name, aws.ToString(in.NextToken))
			continue
		}
		wantErr[*types.BadRequestException](t, err, "nextToken")
	}
}

func testClientToken(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	ts := newServer(t, nil)
	c := ts.client(account, rec)
	m := aws.String("tokens")
	must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)

	in := &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn"), Spec: nodeSpec(), ClientToken: aws.String("token-1")}
	first := must(c.CreateVirtualNode(ctx, in))(t).VirtualNode
	again := must(c.CreateVirtualNode(ctx, in))(t).VirtualNode
	if aws.ToString(again.Metadata.Uid) != aws.ToString(first.Metadata.Uid) || !again.Metadata.CreatedAt.Equal(*first.Metadata.CreatedAt) {
		t.Fatalf("retry with the same token returned another resource: %v vs %v", again.Metadata, first.Metadata)
	}
	other := &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn"), Spec: nodeSpec("x.local"), ClientToken: aws.String("token-1")}
	_, err := c.CreateVirtualNode(ctx, other)
	wantErr[*types.ConflictException](t, err, "token-1")
	// Updates replay the same way: the second call does not bump the version.
	up := &sdk.UpdateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("vn"), Spec: nodeSpec("y.local"), ClientToken: aws.String("token-2")}
	for range 2 {
		if v := aws.ToInt64(must(c.UpdateVirtualNode(ctx, up))(t).VirtualNode.Metadata.Version); v != 2 {
			t.Fatalf("update replay: version %d, want 2", v)
		}
	}

	// The SDK's own retry: the first attempt is served but its response is
	// lost (a 503 replaces it); the retry carries the same automatic token
	// and gets the first result, not a ConflictException.
	ts.failNext.Store(true)
	vn := must(c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("retried"), Spec: nodeSpec()}))(t).VirtualNode
	if ts.served.Load() != 1 {
		t.Fatal("no response was dropped")
	}
	if aws.ToInt64(vn.Metadata.Version) != 1 {
		t.Fatalf("retried create: version %d", aws.ToInt64(vn.Metadata.Version))
	}
	desc := must(c.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("retried")}))(t).VirtualNode
	if aws.ToString(desc.Metadata.Uid) != aws.ToString(vn.Metadata.Uid) {
		t.Fatal("the retry's answer is not the stored resource")
	}
	// Without a fixed token, two SDK calls are two requests: the second is a
	// duplicate name.
	_, err = c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("retried"), Spec: nodeSpec()})
	wantErr[*types.ConflictException](t, err, "retried")
}

func testVersions(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	c := newServer(t, nil).client(account, rec)
	m := aws.String("versions")
	created := must(c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t).Mesh
	for v := int64(2); v <= 5; v++ {
		got := must(c.UpdateMesh(ctx, &sdk.UpdateMeshInput{MeshName: m, Spec: &types.MeshSpec{}}))(t).Mesh
		md := got.Metadata
		if aws.ToInt64(md.Version) != v || aws.ToString(md.Uid) != aws.ToString(created.Metadata.Uid) ||
			!md.CreatedAt.Equal(*created.Metadata.CreatedAt) || md.LastUpdatedAt.Before(*created.Metadata.LastUpdatedAt) {
			t.Fatalf("update %d: metadata %+v", v, md)
		}
	}
	if v := aws.ToInt64(must(c.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: m}))(t).Mesh.Metadata.Version); v != 5 {
		t.Fatalf("describe: version %d, want 5", v)
	}
}

func testCrossAccount(t *testing.T, rec *opRecorder) {
	ctx := t.Context()
	ts := newServer(t, nil)
	owner, other := ts.client(account, rec), ts.client(otherAccount, rec)
	m := aws.String("shared")
	must(owner.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}))(t)
	vn := must(other.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, MeshOwner: aws.String(account), VirtualNodeName: aws.String("theirs"), Spec: nodeSpec()}))(t).VirtualNode
	md := vn.Metadata
	if aws.ToString(md.MeshOwner) != account || aws.ToString(md.ResourceOwner) != otherAccount || aws.ToString(md.Arn) != arnPrefix+"shared/virtualNode/theirs" {
		t.Fatalf("cross-account node metadata %+v", md)
	}
	// Without meshOwner the other account looks in its own meshes.
	_, err := other.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("theirs")})
	wantErr[*types.NotFoundException](t, err, "shared")
	if l := must(other.ListMeshes(ctx, &sdk.ListMeshesInput{}))(t).Meshes; len(l) != 0 {
		t.Fatalf("the other account lists %+v", l)
	}
	// The owner sees it in its mesh.
	nodes := must(owner.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m}))(t).VirtualNodes
	if len(nodes) != 1 || aws.ToString(nodes[0].ResourceOwner) != otherAccount {
		t.Fatalf("owner lists %+v", nodes)
	}
	must(other.DeleteVirtualNode(ctx, &sdk.DeleteVirtualNodeInput{MeshName: m, MeshOwner: aws.String(account), VirtualNodeName: aws.String("theirs")}))(t)
	must(owner.DeleteMesh(ctx, &sdk.DeleteMeshInput{MeshName: m}))(t)
}
