package cloudmapapi_test

// The conformance suite: the real aws-sdk-go-v2 servicediscovery client
// against weft's API handler (api.Handler routing to cloudmapapi, on a
// bbolt store) over a
// real socket. Every operation of the model must succeed at least once by
// the time TestSDK ends.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store/bolt"
)

const (
	account = "111122223333"
	region  = "us-west-2"
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

// disableHostPrefix keeps the SDK from sending DiscoverInstances to
// "data-" + the endpoint's host: the recipe README gives SDK users.
func disableHostPrefix(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("weftNoHostPrefix",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(smithyhttp.DisableEndpointHostPrefix(ctx, true), in)
		}), middleware.Before)
}

// testServer is weft's API on a bbolt store at path, behind a socket.
type testServer struct {
	URL   string
	st    *bolt.Store
	srv   *httptest.Server
	mu    sync.Mutex
	hosts []string // Host headers received
}

func newServer(t testing.TB, path string) *testServer {
	t.Helper()
	return newServerWith(t, path, nil)
}

// newServerWith is newServer with the quotas given (nil: the defaults).
func newServerWith(t testing.TB, path string, limits *cloudmap.Limits) *testServer {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{st: st}
	reg := cloudmap.NewRegistry(st, cloudmap.Config{Region: region, AccountID: account, Limits: limits})
	h := &api.Handler{CloudMap: cloudmapapi.New(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		ts.hosts = append(ts.hosts, r.Host)
		ts.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	ts.URL = ts.srv.URL
	t.Cleanup(ts.close)
	return ts
}

func (ts *testServer) close() {
	ts.srv.Close()
	ts.st.Close()
}

func (ts *testServer) lastHost() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.hosts[len(ts.hosts)-1]
}

func (ts *testServer) client(rec *opRecorder, apiOptions ...func(*middleware.Stack) error) *sdk.Client {
	opts := sdk.Options{
		Region:       region,
		BaseEndpoint: aws.String(ts.URL),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: account, SecretAccessKey: "secret"}, nil
		}),
		RetryMaxAttempts: 1,
		APIOptions:       apiOptions,
	}
	if rec != nil {
		opts.APIOptions = append(opts.APIOptions, rec.middleware)
	}
	return sdk.New(opts)
}

// wantCode fails unless err is the AWS error code, with HTTP status 400.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v; want %s", err, code)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("error code %s (%v); want %s", ae.ErrorCode(), err, code)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
		t.Fatalf("%s: HTTP status %v, want 400", code, err)
	}
}

// must(v, err)(t) returns v, failing t on err.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

var ctx = context.Background()

func TestSDK(t *testing.T) {
	rec := &opRecorder{ops: map[string]bool{}}
	ts := newServer(t, filepath.Join(t.TempDir(), "weft.db"))
	c := ts.client(rec, disableHostPrefix)

	t.Run("namespaces", func(t *testing.T) { testNamespaces(t, c) })
	t.Run("services", func(t *testing.T) { testServices(t, c) })
	t.Run("instances", func(t *testing.T) { testInstances(t, c) })
	t.Run("health", func(t *testing.T) { testHealth(t, c) })
	t.Run("operations", func(t *testing.T) { testOperations(t, c) })
	t.Run("tags", func(t *testing.T) { testTags(t, c) })
	t.Run("idempotency", func(t *testing.T) { testIdempotency(t, ts, c) })
	t.Run("errors change nothing", func(t *testing.T) { testErrors(t, ts, c) })
	t.Run("data- host prefix", func(t *testing.T) { testHostPrefix(t, ts, rec) })
	t.Run("delete", func(t *testing.T) { testDelete(t, c) })

	var missing []string
	for name := range cloudmap.Model().Operations {
		if !rec.ops[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("operations never exercised successfully: %v", missing)
	}
}

// createNamespace creates a private DNS namespace and returns its id, as
// the operation's target reports it.
func createNamespace(t *testing.T, c *sdk.Client, name string) string {
	t.Helper()
	out := must(c.CreatePrivateDnsNamespace(ctx, &sdk.CreatePrivateDnsNamespaceInput{Name: aws.String(name), Vpc: aws.String("vpc-1")}))(t)
	op := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: out.OperationId}))(t)
	return op.Operation.Targets["NAMESPACE"]
}

func createService(t *testing.T, c *sdk.Client, nsID, name string, in *sdk.CreateServiceInput) *types.Service {
	t.Helper()
	if in == nil {
		in = &sdk.CreateServiceInput{DnsConfig: &types.DnsConfig{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeA, TTL: aws.Int64(60)}}}}
	}
	in.Name, in.NamespaceId = aws.String(name), aws.String(nsID)
	return must(c.CreateService(ctx, in))(t).Service
}

func testNamespaces(t *testing.T, c *sdk.Client) {
	before := time.Now().Add(-time.Second)
	httpOut := must(c.CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String("ns-http.example"), Description: aws.String("http")}))(t)
	privOut := must(c.CreatePrivateDnsNamespace(ctx, &sdk.CreatePrivateDnsNamespaceInput{
		Name: aws.String("private.example"), Vpc: aws.String("vpc-1234"), CreatorRequestId: aws.String("req-1"),
		Properties: &types.PrivateDnsNamespaceProperties{DnsProperties: &types.PrivateDnsPropertiesMutable{SOA: &types.SOA{TTL: aws.Int64(60)}}},
	}))(t)
	pubOut := must(c.CreatePublicDnsNamespace(ctx, &sdk.CreatePublicDnsNamespaceInput{Name: aws.String("public.example.com")}))(t)

	ids := map[types.NamespaceType]string{}
	for typ, opID := range map[types.NamespaceType]*string{types.NamespaceTypeHttp: httpOut.OperationId, types.NamespaceTypeDnsPrivate: privOut.OperationId, types.NamespaceTypeDnsPublic: pubOut.OperationId} {
		op := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: opID}))(t).Operation
		if op.Status != types.OperationStatusSuccess || op.Type != types.OperationTypeCreateNamespace || !strings.HasPrefix(op.Targets["NAMESPACE"], "ns-") || op.CreateDate.Before(before) {
			t.Errorf("operation %s: %+v", *opID, op)
		}
		ids[typ] = op.Targets["NAMESPACE"]
	}
	privID := ids[types.NamespaceTypeDnsPrivate]
	if len(privID) != len("ns-")+16 {
		t.Errorf("namespace id %q is not ns- and 16 characters", privID)
	}
	arn := "arn:aws:servicediscovery:" + region + ":" + account + ":namespace/" + privID
	for _, id := range []string{privID, arn} {
		ns := must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(id)}))(t).Namespace
		switch {
		case aws.ToString(ns.Id) != privID, aws.ToString(ns.Arn) != arn, aws.ToString(ns.Name) != "private.example",
			ns.Type != types.NamespaceTypeDnsPrivate, aws.ToInt32(ns.ServiceCount) != 0, aws.ToString(ns.CreatorRequestId) != "req-1",
			aws.ToString(ns.ResourceOwner) != account, ns.CreateDate == nil || ns.CreateDate.Before(before):
			t.Errorf("GetNamespace(%s) = %+v", id, ns)
		}
		p := ns.Properties
		if p == nil || aws.ToString(p.HttpProperties.HttpName) != "private.example" || !strings.HasPrefix(aws.ToString(p.DnsProperties.HostedZoneId), "Z") ||
			aws.ToInt64(p.DnsProperties.SOA.TTL) != 60 {
			t.Errorf("GetNamespace(%s).Properties = %+v", id, p)
		}
	}

	list := func(filters ...types.NamespaceFilter) []string {
		t.Helper()
		var names []string
		p := sdk.NewListNamespacesPaginator(c, &sdk.ListNamespacesInput{Filters: filters, MaxResults: aws.Int32(1)})
		for p.HasMorePages() {
			for _, ns := range must(p.NextPage(ctx))(t).Namespaces {
				names = append(names, aws.ToString(ns.Name))
			}
		}
		sort.Strings(names)
		return names
	}
	filterTests := []struct {
		name    string
		filters []types.NamespaceFilter
		want    []string
	}{
		{"all, a page at a time", nil, []string{"ns-http.example", "private.example", "public.example.com"}},
		{"TYPE EQ", []types.NamespaceFilter{{Name: types.NamespaceFilterNameType, Values: []string{"DNS_PRIVATE"}}}, []string{"private.example"}},
		{"TYPE IN", []types.NamespaceFilter{{Name: types.NamespaceFilterNameType, Condition: types.FilterConditionIn, Values: []string{"HTTP", "DNS_PUBLIC"}}}, []string{"ns-http.example", "public.example.com"}},
		{"NAME BEGINS_WITH", []types.NamespaceFilter{{Name: types.NamespaceFilterNameName, Condition: types.FilterConditionBeginsWith, Values: []string{"p"}}}, []string{"private.example", "public.example.com"}},
		{"HTTP_NAME and TYPE", []types.NamespaceFilter{{Name: types.NamespaceFilterNameHttpName, Values: []string{"private.example"}}, {Name: types.NamespaceFilterNameType, Values: []string{"HTTP"}}}, nil},
		{"RESOURCE_OWNER OTHER_ACCOUNTS", []types.NamespaceFilter{{Name: types.NamespaceFilterNameResourceOwner, Values: []string{"OTHER_ACCOUNTS"}}}, nil},
	}
	for _, tt := range filterTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := list(tt.filters...); !slices.Equal(got, tt.want) {
				t.Errorf("ListNamespaces = %v, want %v", got, tt.want)
			}
		})
	}
	_, err := c.ListNamespaces(ctx, &sdk.ListNamespacesInput{Filters: []types.NamespaceFilter{{Name: types.NamespaceFilterNameName, Condition: types.FilterConditionBetween, Values: []string{"a", "b"}}}})
	wantCode(t, err, "InvalidInput")

	must(c.UpdateHttpNamespace(ctx, &sdk.UpdateHttpNamespaceInput{Id: aws.String(ids[types.NamespaceTypeHttp]), Namespace: &types.HttpNamespaceChange{Description: aws.String("changed")}}))(t)
	must(c.UpdatePrivateDnsNamespace(ctx, &sdk.UpdatePrivateDnsNamespaceInput{Id: aws.String(privID), Namespace: &types.PrivateDnsNamespaceChange{
		Properties: &types.PrivateDnsNamespacePropertiesChange{DnsProperties: &types.PrivateDnsPropertiesMutableChange{SOA: &types.SOAChange{TTL: aws.Int64(30)}}}}}))(t)
	must(c.UpdatePublicDnsNamespace(ctx, &sdk.UpdatePublicDnsNamespaceInput{Id: aws.String(ids[types.NamespaceTypeDnsPublic]), Namespace: &types.PublicDnsNamespaceChange{Description: aws.String("pub")}}))(t)
	if ns := must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(privID)}))(t).Namespace; aws.ToInt64(ns.Properties.DnsProperties.SOA.TTL) != 30 {
		t.Errorf("SOA TTL after update: %+v", ns.Properties.DnsProperties.SOA)
	}
	if ns := must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(ids[types.NamespaceTypeHttp])}))(t).Namespace; aws.ToString(ns.Description) != "changed" {
		t.Errorf("description after update: %q", aws.ToString(ns.Description))
	}
	_, err = c.UpdateHttpNamespace(ctx, &sdk.UpdateHttpNamespaceInput{Id: aws.String(privID), Namespace: &types.HttpNamespaceChange{Description: aws.String("x")}})
	wantCode(t, err, "InvalidInput")

	_, err = c.CreatePrivateDnsNamespace(ctx, &sdk.CreatePrivateDnsNamespaceInput{Name: aws.String("Private.Example"), Vpc: aws.String("vpc-1")})
	var exists *types.NamespaceAlreadyExists
	if !errors.As(err, &exists) || aws.ToString(exists.NamespaceId) != privID || aws.ToString(exists.CreatorRequestId) != "req-1" {
		t.Errorf("same name again: %v; want NamespaceAlreadyExists naming %s", err, privID)
	}
	_, err = c.CreatePrivateDnsNamespace(ctx, &sdk.CreatePrivateDnsNamespaceInput{Name: aws.String("bad name.example"), Vpc: aws.String("vpc-1")})
	wantCode(t, err, "InvalidInput")
}

func testServices(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "svc.local")
	httpNS := must(c.CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String("svc-http")}))(t)
	httpNSID := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: httpNS.OperationId}))(t).Operation.Targets["NAMESPACE"]

	before := time.Now().Add(-time.Second)
	web := createService(t, c, "arn:aws:servicediscovery:"+region+":"+account+":namespace/"+nsID, "web", &sdk.CreateServiceInput{
		Description: aws.String("the web"),
		DnsConfig:   &types.DnsConfig{RoutingPolicy: types.RoutingPolicyWeighted, DnsRecords: []types.DnsRecord{{Type: types.RecordTypeA, TTL: aws.Int64(60)}, {Type: types.RecordTypeAaaa, TTL: aws.Int64(60)}}},
	})
	switch {
	case !strings.HasPrefix(aws.ToString(web.Id), "srv-") || len(aws.ToString(web.Id)) != len("srv-")+16,
		aws.ToString(web.Arn) != "arn:aws:servicediscovery:"+region+":"+account+":service/"+aws.ToString(web.Id),
		aws.ToString(web.NamespaceId) != nsID, web.Type != types.ServiceTypeDnsHttp,
		aws.ToString(web.DnsConfig.NamespaceId) != nsID, web.DnsConfig.RoutingPolicy != types.RoutingPolicyWeighted,
		aws.ToString(web.CreatedByAccount) != account, web.CreateDate.Before(before), aws.ToString(web.CreatorRequestId) == "":
		t.Errorf("CreateService = %+v", web)
	}
	if svc := createService(t, c, nsID, "api-only", &sdk.CreateServiceInput{Type: types.ServiceTypeOptionHttp}); svc.Type != types.ServiceTypeHttp || svc.DnsConfig != nil {
		t.Errorf("Type HTTP in a DNS namespace: %+v", svc)
	}
	if svc := createService(t, c, httpNSID, "h", &sdk.CreateServiceInput{}); svc.Type != types.ServiceTypeHttp {
		t.Errorf("service in an HTTP namespace: %+v", svc)
	}
	if svc := createService(t, c, nsID, "srv", &sdk.CreateServiceInput{DnsConfig: &types.DnsConfig{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeSrv, TTL: aws.Int64(10)}}}}); svc.DnsConfig.RoutingPolicy != types.RoutingPolicyMultivalue {
		t.Errorf("default routing policy: %+v", svc.DnsConfig)
	}

	bad := []struct {
		name string
		in   *sdk.CreateServiceInput
		code string
	}{
		{"same name, other case", &sdk.CreateServiceInput{Name: aws.String("WEB"), NamespaceId: aws.String(nsID), DnsConfig: web.DnsConfig}, "ServiceAlreadyExists"},
		{"unknown namespace", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String("ns-0000000000000000"), DnsConfig: web.DnsConfig}, "NamespaceNotFound"},
		{"no namespace", &sdk.CreateServiceInput{Name: aws.String("x")}, "InvalidInput"},
		{"DNS namespace without DnsConfig", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(nsID)}, "InvalidInput"},
		{"DnsConfig in an HTTP namespace", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(httpNSID), DnsConfig: web.DnsConfig}, "InvalidInput"},
		{"A and SRV", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(nsID), DnsConfig: &types.DnsConfig{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeA, TTL: aws.Int64(1)}, {Type: types.RecordTypeSrv, TTL: aws.Int64(1)}}}}, "InvalidInput"},
		{"CNAME MULTIVALUE", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(nsID), DnsConfig: &types.DnsConfig{RoutingPolicy: types.RoutingPolicyMultivalue, DnsRecords: []types.DnsRecord{{Type: types.RecordTypeCname, TTL: aws.Int64(1)}}}}, "InvalidInput"},
		{"Route 53 health check in a private namespace", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(nsID), DnsConfig: web.DnsConfig, HealthCheckConfig: &types.HealthCheckConfig{Type: types.HealthCheckTypeHttp}}, "InvalidInput"},
		{"both health checks", &sdk.CreateServiceInput{Name: aws.String("x"), NamespaceId: aws.String(httpNSID), HealthCheckConfig: &types.HealthCheckConfig{Type: types.HealthCheckTypeTcp}, HealthCheckCustomConfig: &types.HealthCheckCustomConfig{}}, "InvalidInput"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateService(ctx, tt.in)
			wantCode(t, err, tt.code)
			if tt.code == "ServiceAlreadyExists" {
				var e *types.ServiceAlreadyExists
				if !errors.As(err, &e) || aws.ToString(e.ServiceId) != aws.ToString(web.Id) || aws.ToString(e.ServiceArn) != aws.ToString(web.Arn) {
					t.Errorf("ServiceAlreadyExists %+v; want service %s", e, aws.ToString(web.Id))
				}
			}
		})
	}

	got := must(c.GetService(ctx, &sdk.GetServiceInput{Id: web.Arn}))(t).Service
	if aws.ToString(got.Id) != aws.ToString(web.Id) || aws.ToInt32(got.InstanceCount) != 0 || aws.ToString(got.Description) != "the web" {
		t.Errorf("GetService = %+v", got)
	}
	var names []string
	for p := sdk.NewListServicesPaginator(c, &sdk.ListServicesInput{MaxResults: aws.Int32(2), Filters: []types.ServiceFilter{{Name: types.ServiceFilterNameNamespaceId, Values: []string{nsID}}}}); p.HasMorePages(); {
		for _, s := range must(p.NextPage(ctx))(t).Services {
			names = append(names, aws.ToString(s.Name))
		}
	}
	sort.Strings(names)
	if want := []string{"api-only", "srv", "web"}; !slices.Equal(names, want) {
		t.Errorf("ListServices(NAMESPACE_ID=%s) = %v, want %v", nsID, names, want)
	}
	if ns := must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(nsID)}))(t).Namespace; aws.ToInt32(ns.ServiceCount) != 3 {
		t.Errorf("ServiceCount = %d, want 3", aws.ToInt32(ns.ServiceCount))
	}

	// UpdateService changes TTLs and the description, not record types.
	op := must(c.UpdateService(ctx, &sdk.UpdateServiceInput{Id: web.Id, Service: &types.ServiceChange{
		Description: aws.String("new"),
		DnsConfig:   &types.DnsConfigChange{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeA, TTL: aws.Int64(5)}, {Type: types.RecordTypeAaaa, TTL: aws.Int64(6)}}},
	}}))(t)
	if o := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: op.OperationId}))(t).Operation; o.Type != types.OperationTypeUpdateService || o.Targets["SERVICE"] != aws.ToString(web.Id) {
		t.Errorf("UpdateService operation: %+v", o)
	}
	got = must(c.GetService(ctx, &sdk.GetServiceInput{Id: web.Id}))(t).Service
	if aws.ToString(got.Description) != "new" || aws.ToInt64(got.DnsConfig.DnsRecords[0].TTL) != 5 || got.DnsConfig.RoutingPolicy != types.RoutingPolicyWeighted {
		t.Errorf("after UpdateService: %+v %+v", got, got.DnsConfig)
	}
	_, err := c.UpdateService(ctx, &sdk.UpdateServiceInput{Id: web.Id, Service: &types.ServiceChange{DnsConfig: &types.DnsConfigChange{DnsRecords: []types.DnsRecord{{Type: types.RecordTypeSrv, TTL: aws.Int64(5)}}}}})
	wantCode(t, err, "InvalidInput")

	// Service attributes.
	must(c.UpdateServiceAttributes(ctx, &sdk.UpdateServiceAttributesInput{ServiceId: web.Id, Attributes: map[string]string{"Port": "80", "team": "a"}}))(t)
	must(c.DeleteServiceAttributes(ctx, &sdk.DeleteServiceAttributesInput{ServiceId: web.Id, Attributes: []string{"team"}}))(t)
	sa := must(c.GetServiceAttributes(ctx, &sdk.GetServiceAttributesInput{ServiceId: web.Arn}))(t).ServiceAttributes
	if aws.ToString(sa.ServiceArn) != aws.ToString(web.Arn) || aws.ToString(sa.ResourceOwner) != account || len(sa.Attributes) != 1 || sa.Attributes["Port"] != "80" {
		t.Errorf("GetServiceAttributes = %+v", sa)
	}
	many := map[string]string{}
	for i := range 30 {
		many[fmt.Sprint("k", i)] = "v"
	}
	_, err = c.UpdateServiceAttributes(ctx, &sdk.UpdateServiceAttributesInput{ServiceId: web.Id, Attributes: many})
	wantCode(t, err, "ServiceAttributesLimitExceededException")
}

func testOperations(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "ops.local")
	svc := createService(t, c, nsID, "s", nil)
	start := time.Now().Add(-time.Second)
	reg := must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("o-1"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.2.0.1"}}))(t)
	dereg := must(c.DeregisterInstance(ctx, &sdk.DeregisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("o-1")}))(t)
	end := time.Now().Add(time.Second)

	list := func(filters ...types.OperationFilter) []string {
		t.Helper()
		var ids []string
		for p := sdk.NewListOperationsPaginator(c, &sdk.ListOperationsInput{Filters: filters, MaxResults: aws.Int32(100)}); p.HasMorePages(); {
			for _, op := range must(p.NextPage(ctx))(t).Operations {
				if op.Status != types.OperationStatusSuccess {
					t.Errorf("operation %s status %s", aws.ToString(op.Id), op.Status)
				}
				ids = append(ids, aws.ToString(op.Id))
			}
		}
		return ids
	}
	want := []string{aws.ToString(reg.OperationId), aws.ToString(dereg.OperationId)}
	if got := list(types.OperationFilter{Name: types.OperationFilterNameServiceId, Values: []string{aws.ToString(svc.Id)}}); !slices.Equal(got, want) {
		t.Errorf("ListOperations(SERVICE_ID) = %v, want %v in order", got, want)
	}
	if got := list(types.OperationFilter{Name: types.OperationFilterNameServiceId, Values: []string{aws.ToString(svc.Id)}},
		types.OperationFilter{Name: types.OperationFilterNameType, Condition: types.FilterConditionIn, Values: []string{"DEREGISTER_INSTANCE", "CREATE_NAMESPACE"}}); !slices.Equal(got, want[1:]) {
		t.Errorf("ListOperations(SERVICE_ID, TYPE IN) = %v, want %v", got, want[1:])
	}
	between := types.OperationFilter{Name: types.OperationFilterNameUpdateDate, Condition: types.FilterConditionBetween,
		Values: []string{fmt.Sprint(start.Unix()), fmt.Sprint(end.Unix())}}
	if got := list(between, types.OperationFilter{Name: types.OperationFilterNameStatus, Values: []string{"SUCCESS"}}); !slices.Contains(got, want[0]) || !slices.Contains(got, want[1]) {
		t.Errorf("ListOperations(UPDATE_DATE BETWEEN, STATUS) = %v, missing %v", got, want)
	}
	if got := list(types.OperationFilter{Name: types.OperationFilterNameNamespaceId, Values: []string{nsID}}); len(got) != 3 {
		t.Errorf("ListOperations(NAMESPACE_ID) = %v, want create, register, deregister", got)
	}
	_, err := c.ListOperations(ctx, &sdk.ListOperationsInput{Filters: []types.OperationFilter{{Name: types.OperationFilterNameUpdateDate, Condition: types.FilterConditionEq, Values: []string{"1"}}}})
	wantCode(t, err, "InvalidInput")
	_, err = c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: aws.String("nope")})
	wantCode(t, err, "OperationNotFound")
}

func testTags(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "tags.local")
	ns := must(c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(nsID)}))(t).Namespace
	svc := createService(t, c, nsID, "s", &sdk.CreateServiceInput{Type: types.ServiceTypeOptionHttp, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("a")}}})
	tags := func(arn *string) string {
		t.Helper()
		var kv []string
		for _, tag := range must(c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceARN: arn}))(t).Tags {
			kv = append(kv, aws.ToString(tag.Key)+"="+aws.ToString(tag.Value))
		}
		return strings.Join(kv, ",")
	}
	if got := tags(svc.Arn); got != "team=a" {
		t.Errorf("tags of a service created with tags: %q", got)
	}
	must(c.TagResource(ctx, &sdk.TagResourceInput{ResourceARN: ns.Arn, Tags: []types.Tag{{Key: aws.String("b"), Value: aws.String("2")}, {Key: aws.String("a"), Value: aws.String("1")}}}))(t)
	must(c.TagResource(ctx, &sdk.TagResourceInput{ResourceARN: ns.Arn, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("3")}}}))(t)
	must(c.UntagResource(ctx, &sdk.UntagResourceInput{ResourceARN: ns.Arn, TagKeys: []string{"b"}}))(t)
	if got := tags(ns.Arn); got != "a=3" {
		t.Errorf("namespace tags %q, want a=3", got)
	}
	var fifty []types.Tag
	for i := range 50 {
		fifty = append(fifty, types.Tag{Key: aws.String(fmt.Sprint("t", i)), Value: aws.String("")})
	}
	_, err := c.TagResource(ctx, &sdk.TagResourceInput{ResourceARN: ns.Arn, Tags: fifty})
	wantCode(t, err, "TooManyTagsException")
	_, err = c.ListTagsForResource(ctx, &sdk.ListTagsForResourceInput{ResourceARN: aws.String("arn:aws:servicediscovery:" + region + ":" + account + ":namespace/ns-0000000000000000")})
	wantCode(t, err, "ResourceNotFoundException")
}

func testDelete(t *testing.T, c *sdk.Client) {
	nsID := createNamespace(t, c, "del.local")
	svc := createService(t, c, nsID, "s", nil)
	must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.4.0.1"}}))(t)
	must(c.DeregisterInstance(ctx, &sdk.DeregisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i")}))(t)
	must(c.DeleteService(ctx, &sdk.DeleteServiceInput{Id: svc.Arn}))(t)
	_, err := c.GetService(ctx, &sdk.GetServiceInput{Id: svc.Id})
	wantCode(t, err, "ServiceNotFound")
	op := must(c.DeleteNamespace(ctx, &sdk.DeleteNamespaceInput{Id: aws.String(nsID)}))(t)
	if o := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: op.OperationId}))(t).Operation; o.Type != types.OperationTypeDeleteNamespace || o.Targets["NAMESPACE"] != nsID {
		t.Errorf("DeleteNamespace operation %+v", o)
	}
	_, err = c.GetNamespace(ctx, &sdk.GetNamespaceInput{Id: aws.String(nsID)})
	wantCode(t, err, "NamespaceNotFound")
	// The name is free again.
	createNamespace(t, c, "del.local")
}

// TestRestart checks that what the API wrote survives a restart.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weft.db")
	ts := newServer(t, path)
	c := ts.client(nil, disableHostPrefix)
	nsID := createNamespace(t, c, "restart.local")
	svc := createService(t, c, nsID, "s", nil)
	reg := must(c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Id, InstanceId: aws.String("i"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.5.0.1", "AWS_INSTANCE_PORT": "80"}}))(t)
	ts.close()

	ts = newServer(t, path)
	c = ts.client(nil, disableHostPrefix)
	out := must(c.DiscoverInstances(ctx, &sdk.DiscoverInstancesInput{NamespaceName: aws.String("restart.local"), ServiceName: aws.String("s")}))(t)
	if len(out.Instances) != 1 || out.Instances[0].Attributes["AWS_INSTANCE_IPV4"] != "10.5.0.1" {
		t.Fatalf("after restart, DiscoverInstances = %+v", out.Instances)
	}
	if op := must(c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: reg.OperationId}))(t).Operation; op.Status != types.OperationStatusSuccess {
		t.Errorf("after restart, operation %+v", op)
	}
}
