package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

// badEnv is a store file holding a small mesh (node a calls service
// b.apps through router r, whose route sends to node b, found in Cloud
// Map namespace apps) and the ids a test needs to add records beside it.
type badEnv struct {
	db      []byte // the store file's bytes, with the server stopped
	account string
	svcID   string // Cloud Map service b
}

func clients(base string) (*sdk.Client, *sd.Client) {
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
	})
	return sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base), RetryMaxAttempts: 1, Credentials: creds}),
		sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(base), RetryMaxAttempts: 1, Credentials: creds,
			APIOptions: []func(*middleware.Stack) error{noHostPrefix}})
}

// noHostPrefix keeps the SDK from sending DiscoverInstances to "data-" +
// the endpoint's host.
func noHostPrefix(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("noHostPrefix",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(smithyhttp.DisableEndpointHostPrefix(ctx, true), in)
		}), middleware.Before)
}

func newBadEnv(t *testing.T) badEnv {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{APIAddr: freeAddr(t), DataDir: dir, Region: "us-east-1", AccountID: "111122223333"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel below
	base := "http://" + cfg.APIAddr
	waitHealthy(t, base)
	mesh, cm := clients(base)
	ns, err := cm.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String("apps")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := cm.GetOperation(ctx, &sd.GetOperationInput{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("b"), NamespaceId: aws.String(op.Operation.Targets["NAMESPACE"]),
		HealthCheckCustomConfig: &sdtypes.HealthCheckCustomConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String("i1"),
		Attributes: map[string]string{"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "8080"}}); err != nil {
		t.Fatal(err)
	}
	m := aws.String("m")
	listener := []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}
	steps := []func() error{
		func() error { _, err := mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: m}); return err },
		func() error {
			_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("b"),
				Spec: &types.VirtualNodeSpec{Listeners: listener, ServiceDiscovery: &types.ServiceDiscoveryMemberAwsCloudMap{Value: types.AwsCloudMapServiceDiscovery{
					NamespaceName: aws.String("apps"), ServiceName: aws.String("b")}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: aws.String("r"),
				Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: aws.String("r"), RouteName: aws.String("to-b"),
				Spec: &types.RouteSpec{HttpRoute: &types.HttpRoute{Match: &types.HttpRouteMatch{Prefix: aws.String("/")},
					Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: aws.String("b"), Weight: 1}}}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: aws.String("b.apps"),
				Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: aws.String("r")}}}})
			return err
		},
		func() error {
			_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("a"),
				Spec: &types.VirtualNodeSpec{Listeners: listener,
					ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("a.m.local")}},
					Backends:         []types.Backend{&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: aws.String("b.apps")}}}}})
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(filepath.Join(dir, "weft.db"))
	if err != nil {
		t.Fatal(err)
	}
	return badEnv{db: db, account: cfg.AccountID, svcID: *svc.Service.Id}
}

// TestServerReadsPastBadRecords starts weft server on a store that holds,
// beside a working mesh, one record it cannot use (what a hand-edited
// backup or a copy from a shared etcd prefix could load before restores
// were checked): the server keeps running, every read of the API that
// does not name that record answers, node a's proxy gets its endpoints
// from Cloud Map, and a record the server cannot use is logged and
// counted on /metrics (weft_store_records_skipped_total, by reader); a
// Cloud Map service or instance whose namespace or service is missing
// decodes, and is logged as set aside until its parent is back by both
// readers of Cloud Map (xDS, DNS), and not counted. A
// route whose regex does not compile (stored before the API refused
// one) is left out of the xDS server's route tables, which Envoy would
// refuse whole with it (internal/xds/server's
// TestRouteBreakingARuleLeftOut checks the tables).
//
// Not covered, because the server reads them as valid: a record without
// its spec or with a member the model does not know.
func TestServerReadsPastBadRecords(t *testing.T) {
	env := newBadEnv(t)
	res := "appmesh/res/" + env.account + "/m/"
	const md = `"metadata":{"arn":"x","createdAt":1,"lastUpdatedAt":1,"meshOwner":"111122223333","resourceOwner":"111122223333","uid":"u","version":1}`
	const (
		skipped  = "skipping undecodable record"                   // counted
		setAside = "setting aside record until its parent is back" // by the readers of Cloud Map (xDS, DNS); not counted
	)
	cases := []struct {
		name, key, value string
		logged           string // what the server says of the record: skipped, setAside or nothing
		reader           string // the reader that must count it, if one must
	}{
		// (a) not JSON
		{"mesh not JSON", "appmesh/mesh/" + env.account + "/zz", `{"meshName":`, skipped, ""},
		{"node not JSON", res + "virtualNode/zz", `{"meshName":`, skipped, ""},
		{"route not JSON", res + "route/r/zz", `{"meshName":`, skipped, ""},
		{"namespace not JSON", "cloudmap/namespace/ns-zz", `{"Namespace":`, skipped, ""},
		{"service not JSON", "cloudmap/service/srv-zz", `{"Service":`, skipped, ""},
		{"instance not JSON", "cloudmap/instance/" + env.svcID + "/zz", `{"Instance":`, skipped, ""},
		{"remote not JSON", "cloudmap/remote/apps/zz", `{"remote":`, skipped, ""},
		// (b) JSON, not a valid record
		{"node with a member of the wrong type", res + "virtualNode/zz", `{"meshName":"m","virtualNodeName":"zz","spec":{"listeners":"x"},` + md + `,"status":{"status":"ACTIVE"}}`, skipped, ""},
		{"node with an unknown member", res + "virtualNode/zz", `{"meshName":"m","virtualNodeName":"zz","spec":{"listeners":[{"portMapping":{"port":80,"protocol":"http"}}],"colour":"red"},` + md + `,"status":{"status":"ACTIVE"}}`, "", ""},
		{"node without metadata", res + "virtualNode/zz", `{"meshName":"m","virtualNodeName":"zz","spec":{},"status":{"status":"ACTIVE"}}`, skipped, ""},
		{"node without spec", res + "virtualNode/zz", `{"meshName":"m","virtualNodeName":"zz",` + md + `,"status":{"status":"ACTIVE"}}`, "", ""},
		{"route without spec", res + "route/r/zz", `{"meshName":"m","virtualRouterName":"r","routeName":"zz",` + md + `,"status":{"status":"ACTIVE"}}`, "", ""},
		{"service without spec", res + "virtualService/zz", `{"meshName":"m","virtualServiceName":"zz",` + md + `,"status":{"status":"ACTIVE"}}`, "", ""},
		{"mesh without spec", "appmesh/mesh/" + env.account + "/m", `{"meshName":"m",` + md + `,"status":{"status":"ACTIVE"}}`, "", ""},
		{"route of two types", res + "route/r/zz", `{"meshName":"m","virtualRouterName":"r","routeName":"zz",` + md + `,"status":{"status":"ACTIVE"},"spec":{"httpRoute":{"match":{"prefix":"/zz"},"action":{"weightedTargets":[{"virtualNode":"b","weight":1}]}},"tcpRoute":{"action":{"weightedTargets":[{"virtualNode":"b","weight":1}]}}}}`, "", ""},
		{"route to a missing node", res + "route/r/zz", `{"meshName":"m","virtualRouterName":"r","routeName":"zz",` + md + `,"status":{"status":"ACTIVE"},"spec":{"httpRoute":{"match":{"prefix":"/zz"},"action":{"weightedTargets":[{"virtualNode":"nobody","weight":1}]}}}}`, "", ""},
		{"route whose regex does not compile", res + "route/r/zz", `{"meshName":"m","virtualRouterName":"r","routeName":"zz",` + md + `,"status":{"status":"ACTIVE"},"spec":{"httpRoute":{"match":{"path":{"regex":"(zz"}},"action":{"weightedTargets":[{"virtualNode":"b","weight":1}]}}}}`, skipped, "xds"},
		{"instance with a member of the wrong type", "cloudmap/instance/" + env.svcID + "/zz", `{"Instance":{"Id":5}}`, skipped, ""},
		{"service of no namespace", "cloudmap/service/srv-zz", `{"Service":{"Id":"srv-zz","Name":"zz","NamespaceId":"ns-nowhere"}}`, setAside, ""},
		{"instance of no service", "cloudmap/instance/srv-nowhere/zz", `{"Instance":{"Id":"zz"},"Health":"HEALTHY"}`, setAside, ""},
		// (c) keys weft does not write
		{"unknown appmesh key", "appmesh/zz/1", `x`, "", ""},
		{"unknown cloudmap key", "cloudmap/zz/1", `x`, "", ""},
		{"unknown weft key", "weft/zz", `x`, "", ""},
		{"foreign key", "zz/1", `x`, "", ""},
		{"key below a mesh", "appmesh/mesh/" + env.account + "/m/zz", `x`, skipped, ""},
		{"key below the nodes", res + "virtualNode/a/zz", `x`, skipped, ""},
		{"key below the instances", "cloudmap/instance/" + env.svcID + "/i1/zz", `x`, skipped, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "weft.db")
			if err := os.WriteFile(path, env.db, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := bolt.Open(path, bolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(tc.key, []byte(tc.value)) }); err != nil {
				t.Fatal(err)
			}
			st.Close()

			logs := newLogWatch()
			cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DNSAddr: freeAddr(t), DataDir: dir, Region: "us-east-1", AccountID: env.account}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }() // ends with cancel at the end
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			base := "http://" + cfg.APIAddr
			waitUp(t, base, done)
			mesh, cm := clients(base)
			m := aws.String("m")
			var failed []string
			check := func(what string, err error) {
				if err != nil {
					failed = append(failed, what+": "+err.Error())
				}
			}
			_, err = mesh.ListMeshes(ctx, &sdk.ListMeshesInput{})
			check("ListMeshes", err)
			_, err = mesh.DescribeMesh(ctx, &sdk.DescribeMeshInput{MeshName: m})
			check("DescribeMesh", err)
			_, err = mesh.ListVirtualNodes(ctx, &sdk.ListVirtualNodesInput{MeshName: m})
			check("ListVirtualNodes", err)
			_, err = mesh.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: m, VirtualNodeName: aws.String("a")})
			check("DescribeVirtualNode a", err)
			_, err = mesh.ListRoutes(ctx, &sdk.ListRoutesInput{MeshName: m, VirtualRouterName: aws.String("r")})
			check("ListRoutes", err)
			_, err = cm.ListNamespaces(ctx, &sd.ListNamespacesInput{})
			check("ListNamespaces", err)
			_, err = cm.ListServices(ctx, &sd.ListServicesInput{})
			check("ListServices", err)
			_, err = cm.ListInstances(ctx, &sd.ListInstancesInput{ServiceId: aws.String(env.svcID)})
			check("ListInstances", err)
			_, err = cm.DiscoverInstances(ctx, &sd.DiscoverInstancesInput{NamespaceName: aws.String("apps"), ServiceName: aws.String("b")})
			check("DiscoverInstances", err)
			if len(failed) > 0 {
				t.Fatalf("with %s = %.60s:\n  %s", tc.key, tc.value, strings.Join(failed, "\n  "))
			}
			// The proxy of node a gets b's endpoint, from Cloud Map.
			watchEDS(t, cfg.XDSAddr, "mesh/m/virtualNode/a").wait(t, "10.0.0.1:8080")
			if tc.logged == setAside {
				// By the xDS server's index and the DNS server's.
				logs.waitN(t, setAside, 2, 10*time.Second)
				for _, r := range []string{"xds", "dns", "api"} {
					if v := metricLine(t, base, `weft_store_records_skipped_total{reader="`+r+`"}`); v != "0" {
						t.Errorf("weft_store_records_skipped_total of %s is %s, want 0", r, v)
					}
				}
				logs.mu.Lock()
				if strings.Contains(logs.buf.String(), skipped) {
					t.Errorf("logged as undecodable:\n%s", logs.buf.String())
				}
				logs.mu.Unlock()
			}
			if tc.logged == skipped {
				logs.wait(t, skipped, 10*time.Second)
				// Counted before it is logged.
				total := 0.0
				for _, r := range []string{"xds", "dns", "api"} {
					v, err := strconv.ParseFloat(metricLine(t, base, `weft_store_records_skipped_total{reader="`+r+`"}`), 64)
					if err != nil {
						t.Fatalf("weft_store_records_skipped_total of %s: %v", r, err)
					}
					if r == tc.reader && v == 0 {
						t.Errorf("weft_store_records_skipped_total of %s is 0", r)
					}
					total += v
				}
				if total == 0 {
					t.Errorf("logged a skipped record, but weft_store_records_skipped_total is 0")
				}
			}
			select {
			case err := <-done:
				done <- err // for the deferred stop
				t.Fatalf("with %s = %.60s: the server ended: %v", tc.key, tc.value, err)
			default:
			}
		})
	}
}

// waitUp returns once the API at base answers, and fails the test if the
// server ends first (its error is put back on done).
func waitUp(t *testing.T, base string, done chan error) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the server ended: %v", err)
		case <-deadline:
			t.Fatalf("API not up: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
