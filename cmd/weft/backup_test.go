package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"

	"github.com/weftmesh/weft/internal/server"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/dump"
)

// startServer runs weft server on a new store until the test ends and
// returns its API's base URL.
func startServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // Run listens itself; a test that races for this port fails loudly
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { // ends with cancel at cleanup
		done <- server.Run(ctx, server.Config{APIAddr: addr, DataDir: t.TempDir(), Region: "us-east-1", AccountID: "111122223333"}, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			r.Body.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("server ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fillTutorial creates, through the AWS SDK, what the tutorials and
// walkthroughs make: two meshes, virtual nodes with backends and TLS,
// services provided by nodes and routers, routers with routes of each
// protocol, gateways with gateway routes of each protocol, Cloud Map
// namespaces of each type with services and instances, service
// attributes (one service's deleted again), tags on both sides, and
// requests made with client tokens and creator request ids.
func fillTutorial(t *testing.T, base string) {
	t.Helper()
	ctx := t.Context()
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
	})
	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base), RetryMaxAttempts: 1, Credentials: creds})
	cm := sd.New(sd.Options{Region: "us-east-1", BaseEndpoint: aws.String(base), RetryMaxAttempts: 1, Credentials: creds})
	s := aws.String
	tags := []types.TagRef{{Key: s("team"), Value: s("colors")}}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Cloud Map: one namespace of each type, services with DNS records
	// and custom health checks, instances.
	nsIDs := map[string]string{}
	for name, create := range map[string]func() (*string, error){
		"colors.local": func() (*string, error) {
			out, err := cm.CreatePrivateDnsNamespace(ctx, &sd.CreatePrivateDnsNamespaceInput{Name: s("colors.local"), Vpc: s("vpc-0123"), CreatorRequestId: s("ns-colors")})
			return out.OperationId, err
		},
		"colors.example.com": func() (*string, error) {
			out, err := cm.CreatePublicDnsNamespace(ctx, &sd.CreatePublicDnsNamespaceInput{Name: s("colors.example.com")})
			return out.OperationId, err
		},
		"apps": func() (*string, error) {
			out, err := cm.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: s("apps"), Description: s("HTTP only"),
				Tags: []sdtypes.Tag{{Key: s("team"), Value: s("colors")}}})
			return out.OperationId, err
		},
	} {
		op, err := create()
		if err != nil {
			t.Fatalf("namespace %s: %v", name, err)
		}
		got, err := cm.GetOperation(ctx, &sd.GetOperationInput{OperationId: op})
		if err != nil {
			t.Fatal(err)
		}
		nsIDs[name] = got.Operation.Targets["NAMESPACE"]
	}
	for i, color := range []string{"red", "blue", "green"} {
		svc, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: s(color), NamespaceId: s(nsIDs["colors.local"]), CreatorRequestId: s("svc-" + color),
			DnsConfig:               &sdtypes.DnsConfig{RoutingPolicy: sdtypes.RoutingPolicyMultivalue, DnsRecords: []sdtypes.DnsRecord{{Type: sdtypes.RecordTypeA, TTL: aws.Int64(60)}}},
			HealthCheckCustomConfig: &sdtypes.HealthCheckCustomConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		must(cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: s(color + "-1"), CreatorRequestId: s("reg-" + color),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.0.0.%d", i+1), "AWS_INSTANCE_PORT": "80", "stage": "prod"}}))
		must(cm.TagResource(ctx, &sd.TagResourceInput{ResourceARN: svc.Service.Arn, Tags: []sdtypes.Tag{{Key: s("color"), Value: s(color)}}}))
	}
	api, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: s("api"), NamespaceId: s(nsIDs["apps"])})
	if err != nil {
		t.Fatal(err)
	}
	must(cm.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: api.Service.Id, InstanceId: s("api-1"),
		Attributes: map[string]string{"AWS_INSTANCE_IPV6": "fd00::1", "AWS_INSTANCE_PORT": "8080"}}))
	must(cm.UpdateServiceAttributes(ctx, &sd.UpdateServiceAttributesInput{ServiceId: api.Service.Id, Attributes: map[string]string{"tier": "backend"}}))
	// A service whose only attribute is deleted again.
	worker, err := cm.CreateService(ctx, &sd.CreateServiceInput{Name: s("worker"), NamespaceId: s(nsIDs["apps"])})
	if err != nil {
		t.Fatal(err)
	}
	must(cm.UpdateServiceAttributes(ctx, &sd.UpdateServiceAttributesInput{ServiceId: worker.Service.Id, Attributes: map[string]string{"tier": "batch"}}))
	must(cm.DeleteServiceAttributes(ctx, &sd.DeleteServiceAttributesInput{ServiceId: worker.Service.Id, Attributes: []string{"tier"}}))

	// App Mesh.
	for _, m := range []string{"color-mesh", "other-mesh"} {
		must(mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: s(m), ClientToken: s("mesh-" + m), Tags: tags,
			Spec: &types.MeshSpec{EgressFilter: &types.EgressFilter{Type: types.EgressFilterTypeAllowAll}}}))
	}
	m := s("color-mesh")
	listener := func(p types.PortProtocol, port int32) types.Listener {
		return types.Listener{PortMapping: &types.PortMapping{Port: aws.Int32(port), Protocol: p},
			HealthCheck: &types.HealthCheckPolicy{Protocol: p, Path: s("/ping"), HealthyThreshold: aws.Int32(2), UnhealthyThreshold: aws.Int32(2), IntervalMillis: aws.Int64(5000), TimeoutMillis: aws.Int64(2000)}}
	}
	for _, color := range []string{"red", "blue", "green"} {
		must(mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: s(color), ClientToken: s("node-" + color), Tags: tags,
			Spec: &types.VirtualNodeSpec{Listeners: []types.Listener{listener(types.PortProtocolHttp, 80)},
				ServiceDiscovery: &types.ServiceDiscoveryMemberAwsCloudMap{Value: types.AwsCloudMapServiceDiscovery{NamespaceName: s("colors.local"), ServiceName: s(color),
					Attributes: []types.AwsCloudMapInstanceAttribute{{Key: s("stage"), Value: s("prod")}}}},
				Logging: &types.Logging{AccessLog: &types.AccessLogMemberFile{Value: types.FileAccessLog{Path: s("/dev/stdout")}}}}}))
	}
	for _, p := range []types.PortProtocol{types.PortProtocolHttp2, types.PortProtocolGrpc, types.PortProtocolTcp} {
		must(mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: s(string(p) + "-node"),
			Spec: &types.VirtualNodeSpec{Listeners: []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(9000), Protocol: p},
				Timeout: timeoutFor(p), ConnectionPool: poolFor(p)}},
				ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: s(string(p) + ".colors.local")}}}}))
	}
	must(mesh.CreateVirtualRouter(ctx, &sdk.CreateVirtualRouterInput{MeshName: m, VirtualRouterName: s("color-router"), Tags: tags,
		Spec: &types.VirtualRouterSpec{Listeners: []types.VirtualRouterListener{
			{PortMapping: &types.PortMapping{Port: aws.Int32(80), Protocol: types.PortProtocolHttp}},
			{PortMapping: &types.PortMapping{Port: aws.Int32(81), Protocol: types.PortProtocolHttp2}},
			{PortMapping: &types.PortMapping{Port: aws.Int32(82), Protocol: types.PortProtocolGrpc}},
			{PortMapping: &types.PortMapping{Port: aws.Int32(83), Protocol: types.PortProtocolTcp}}}}}))
	targets := []types.WeightedTarget{{VirtualNode: s("red"), Weight: 2}, {VirtualNode: s("blue"), Weight: 1}}
	routes := map[string]*types.RouteSpec{
		"http": {Priority: aws.Int32(1), HttpRoute: &types.HttpRoute{
			Match:       &types.HttpRouteMatch{Prefix: s("/"), Port: aws.Int32(80), Headers: []types.HttpRouteHeader{{Name: s("x-color"), Match: &types.HeaderMatchMethodMemberRegex{Value: "^(red|blue)$"}}}},
			Action:      &types.HttpRouteAction{WeightedTargets: targets},
			RetryPolicy: &types.HttpRetryPolicy{MaxRetries: aws.Int64(2), PerRetryTimeout: &types.Duration{Unit: types.DurationUnitMs, Value: aws.Int64(500)}, HttpRetryEvents: []string{"server-error"}},
			Timeout:     &types.HttpTimeout{PerRequest: &types.Duration{Unit: types.DurationUnitS, Value: aws.Int64(15)}}}},
		"http2": {Http2Route: &types.HttpRoute{Match: &types.HttpRouteMatch{Path: &types.HttpPathMatch{Exact: s("/color")}, Port: aws.Int32(81)},
			Action: &types.HttpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: s("http2-node"), Weight: 1}}}}},
		"grpc": {GrpcRoute: &types.GrpcRoute{Match: &types.GrpcRouteMatch{ServiceName: s("color.Color"), MethodName: s("Get"), Port: aws.Int32(82)},
			Action: &types.GrpcRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: s("grpc-node"), Weight: 1}}}}},
		"tcp": {TcpRoute: &types.TcpRoute{Match: &types.TcpRouteMatch{Port: aws.Int32(83)},
			Action: &types.TcpRouteAction{WeightedTargets: []types.WeightedTarget{{VirtualNode: s("tcp-node"), Weight: 1}}}}},
	}
	for name, spec := range routes {
		must(mesh.CreateRoute(ctx, &sdk.CreateRouteInput{MeshName: m, VirtualRouterName: s("color-router"), RouteName: s(name + "-route"), Spec: spec, ClientToken: s("route-" + name)}))
	}
	must(mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: s("color.colors.local"), Tags: tags,
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualRouter{Value: types.VirtualRouterServiceProvider{VirtualRouterName: s("color-router")}}}}))
	must(mesh.CreateVirtualService(ctx, &sdk.CreateVirtualServiceInput{MeshName: m, VirtualServiceName: s("red.colors.local"),
		Spec: &types.VirtualServiceSpec{Provider: &types.VirtualServiceProviderMemberVirtualNode{Value: types.VirtualNodeServiceProvider{VirtualNodeName: s("red")}}}}))
	must(mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: m, VirtualNodeName: s("front"),
		Spec: &types.VirtualNodeSpec{Listeners: []types.Listener{listener(types.PortProtocolHttp, 8080)},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: s("front.colors.local")}},
			Backends: []types.Backend{
				&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: s("color.colors.local")}},
				&types.BackendMemberVirtualService{Value: types.VirtualServiceBackend{VirtualServiceName: s("red.colors.local"),
					ClientPolicy: &types.ClientPolicy{Tls: &types.ClientPolicyTls{Validation: &types.TlsValidationContext{
						Trust: &types.TlsValidationContextTrustMemberFile{Value: types.TlsValidationContextFileTrust{CertificateChain: s("/certs/ca.pem")}}}}}}}},
			BackendDefaults: &types.BackendDefaults{ClientPolicy: &types.ClientPolicy{Tls: &types.ClientPolicyTls{Enforce: aws.Bool(false), Validation: &types.TlsValidationContext{
				Trust: &types.TlsValidationContextTrustMemberSds{Value: types.TlsValidationContextSdsTrust{SecretName: s("ca")}}}}}}}}))
	for p, port := range map[types.VirtualGatewayPortProtocol]int32{types.VirtualGatewayPortProtocolHttp: 9080, types.VirtualGatewayPortProtocolHttp2: 9081, types.VirtualGatewayPortProtocolGrpc: 9082} {
		gw := s(string(p) + "-gateway")
		must(mesh.CreateVirtualGateway(ctx, &sdk.CreateVirtualGatewayInput{MeshName: m, VirtualGatewayName: gw, Tags: tags,
			Spec: &types.VirtualGatewaySpec{Listeners: []types.VirtualGatewayListener{{PortMapping: &types.VirtualGatewayPortMapping{Port: aws.Int32(port), Protocol: p}}}}}))
		target := &types.GatewayRouteTarget{VirtualService: &types.GatewayRouteVirtualService{VirtualServiceName: s("color.colors.local")}}
		spec := &types.GatewayRouteSpec{}
		switch p {
		case types.VirtualGatewayPortProtocolHttp:
			spec.HttpRoute = &types.HttpGatewayRoute{Match: &types.HttpGatewayRouteMatch{Prefix: s("/color"), Hostname: &types.GatewayRouteHostnameMatch{Suffix: s(".example.com")}},
				Action: &types.HttpGatewayRouteAction{Target: target, Rewrite: &types.HttpGatewayRouteRewrite{Prefix: &types.HttpGatewayRoutePrefixRewrite{Value: s("/")}}}}
		case types.VirtualGatewayPortProtocolHttp2:
			spec.Http2Route = &types.HttpGatewayRoute{Match: &types.HttpGatewayRouteMatch{Prefix: s("/")}, Action: &types.HttpGatewayRouteAction{Target: target}}
		case types.VirtualGatewayPortProtocolGrpc:
			spec.GrpcRoute = &types.GrpcGatewayRoute{Match: &types.GrpcGatewayRouteMatch{ServiceName: s("color.Color")}, Action: &types.GrpcGatewayRouteAction{Target: target}}
		}
		must(mesh.CreateGatewayRoute(ctx, &sdk.CreateGatewayRouteInput{MeshName: m, VirtualGatewayName: gw, GatewayRouteName: s(string(p) + "-gateway-route"), Spec: spec, Tags: tags}))
	}
	must(mesh.UpdateRoute(ctx, &sdk.UpdateRouteInput{MeshName: m, VirtualRouterName: s("color-router"), RouteName: s("http-route"), Spec: routes["http"], ClientToken: s("route-http-update")}))
	must(mesh.TagResource(ctx, &sdk.TagResourceInput{ResourceArn: s("arn:aws:appmesh:us-east-1:111122223333:mesh/color-mesh/virtualNode/front"), Tags: tags}))
}

func timeoutFor(p types.PortProtocol) types.ListenerTimeout {
	d := &types.Duration{Unit: types.DurationUnitS, Value: aws.Int64(30)}
	switch p {
	case types.PortProtocolHttp2:
		return &types.ListenerTimeoutMemberHttp2{Value: types.HttpTimeout{PerRequest: d}}
	case types.PortProtocolGrpc:
		return &types.ListenerTimeoutMemberGrpc{Value: types.GrpcTimeout{PerRequest: d}}
	}
	return &types.ListenerTimeoutMemberTcp{Value: types.TcpTimeout{Idle: d}}
}

func poolFor(p types.PortProtocol) types.VirtualNodeConnectionPool {
	switch p {
	case types.PortProtocolHttp2:
		return &types.VirtualNodeConnectionPoolMemberHttp2{Value: types.VirtualNodeHttp2ConnectionPool{MaxRequests: aws.Int32(100)}}
	case types.PortProtocolGrpc:
		return &types.VirtualNodeConnectionPoolMemberGrpc{Value: types.VirtualNodeGrpcConnectionPool{MaxRequests: aws.Int32(100)}}
	}
	return &types.VirtualNodeConnectionPoolMemberTcp{Value: types.VirtualNodeTcpConnectionPool{MaxConnections: aws.Int32(10)}}
}

// backupLine is one key's line of a backup file.
type backupLine struct {
	Key   string `json:"k"`
	Value []byte `json:"v"`
}

// keys returns every key of the bbolt store at path.
func keys(t *testing.T, path string) map[string]string {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := map[string]string{}
	_, err = st.View(t.Context(), func(tx store.Tx) error {
		kvs, err := tx.List("", "", 0)
		for _, kv := range kvs {
			out[kv.Key] = string(kv.Value)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreChecksRecords: weft backup of a server that ran the
// tutorials' resources restores whole with weft restore, from the file
// and from a FIFO, and so does a weft store copy of the result. The same
// backup with one record changed so that the server cannot read it (a
// key weft does not write, a value that is not the record its key says,
// names that are not its key's, a resource without metadata) is refused
// naming the line and the key, and the target store stays empty; one
// changed in ways the server reads (a member it does not know, a spec
// today's API would refuse, an owner that is not 12 digits) restores key
// for key.
func TestRestoreChecksRecords(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "") // runBackup signs with it when set
	base := startServer(t)
	fillTutorial(t, base)
	dir := t.TempDir()
	backup := filepath.Join(dir, "weft.backup")
	var out, errOut bytes.Buffer
	if err := runBackup(t.Context(), []string{"--endpoint-url", base, "--out", backup}, &out, &errOut); err != nil {
		t.Fatalf("backup: %v %s", err, errOut.String())
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")

	restored := filepath.Join(dir, "restored.db")
	out.Reset()
	if err := runRestore(t.Context(), []string{"--in", backup, "--store", "bolt://" + restored}, &out, &errOut); err != nil {
		t.Fatalf("restore of a backup weft wrote: %v", err)
	}
	got := keys(t, restored)
	var want []backupLine
	kinds := map[string]bool{}
	for _, l := range lines[1 : len(lines)-2] {
		var bl backupLine
		if err := json.Unmarshal([]byte(l), &bl); err != nil {
			t.Fatal(err)
		}
		want = append(want, bl)
		parts := strings.SplitN(bl.Key, "/", 3)
		kinds[parts[0]+"/"+parts[1]] = true
		if got[bl.Key] != string(bl.Value) {
			t.Fatalf("restored %s = %q, backup has %q", bl.Key, got[bl.Key], bl.Value)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("restored %d keys, the backup holds %d", len(got), len(want))
	}
	// The backup holds every kind of record the tutorials make.
	for _, k := range []string{"appmesh/mesh", "appmesh/res", "appmesh/tags", "appmesh/refs", "appmesh/token", "appmesh/tokenexp",
		"cloudmap/namespace", "cloudmap/service", "cloudmap/instance", "cloudmap/index", "cloudmap/operation", "cloudmap/token", "cloudmap/tokenexp",
		"weft/ca", "auth/token-key"} {
		if !kinds[k] {
			t.Errorf("the backup holds no %s key", k)
		}
	}
	copied := filepath.Join(dir, "copied.db")
	if err := runStore(t.Context(), []string{"copy", "--from", "bolt://" + restored, "--to", "bolt://" + copied}, &out, &errOut); err != nil {
		t.Fatalf("copy of a restored store: %v", err)
	}
	if n := len(keys(t, copied)); n != len(want) {
		t.Fatalf("copied %d keys of %d", n, len(want))
	}

	// From a FIFO, which restore cannot read twice.
	fifo := filepath.Join(dir, "weft.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { // ends when restore has read the FIFO through, or, if it never opened it, once it is opened and closed below
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = w.Write(data)
			w.Close()
		}
		wrote <- err
	}()
	fromFIFO := filepath.Join(dir, "fifo.db")
	err = runRestore(t.Context(), []string{"--in", fifo, "--store", "bolt://" + fromFIFO}, &out, &errOut)
	if r, oerr := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); oerr == nil {
		r.Close() // releases the writer if restore never opened the FIFO
	}
	if werr := <-wrote; err != nil || werr != nil {
		t.Fatalf("restore from a FIFO: %v (writing it: %v)", err, werr)
	}
	if fifoKeys := keys(t, fromFIFO); !maps.Equal(fifoKeys, got) {
		t.Fatalf("restored from a FIFO %d keys, from the file %d, or other values", len(fifoKeys), len(got))
	}

	// One record changed: its line is replaced.
	find := func(prefix, holding string) int {
		for i, bl := range want {
			if strings.HasPrefix(bl.Key, prefix) && strings.Contains(string(bl.Value), holding) {
				return i + 2 // the header is line 1
			}
		}
		t.Fatalf("no key %s...", prefix)
		return 0
	}
	lineOf := func(key string, value any) string {
		v, ok := value.([]byte)
		if !ok {
			v, _ = json.Marshal(value)
		}
		return fmt.Sprintf(`{"k":%q,"v":"%s"}`+"\n", key, base64.StdEncoding.EncodeToString(v))
	}
	// edit returns the value of the record at line n, decoded, after fn
	// changed it.
	edit := func(n int, fn func(map[string]any)) map[string]any {
		var doc map[string]any
		if err := json.Unmarshal(want[n-2].Value, &doc); err != nil {
			t.Fatal(err)
		}
		fn(doc)
		return doc
	}
	member := func(doc map[string]any, path ...string) map[string]any {
		for _, p := range path {
			doc = doc[p].(map[string]any)
		}
		return doc
	}
	node := find("appmesh/res/111122223333/color-mesh/virtualNode/blue", "")
	route := find("appmesh/res/111122223333/color-mesh/route/color-router/http-route", "")
	otherMesh := find("appmesh/mesh/111122223333/other-mesh", "")
	instance := find("cloudmap/instance/", "")
	service := find("cloudmap/service/", "DnsRecords")
	// with returns the backup's lines with line n replaced by key and
	// value, and the number of the line that holds key: a changed key
	// takes the place of the one before the first key after it, so that
	// the keys stay in order.
	with := func(n int, key string, value any) ([]string, int) {
		out := append([]string(nil), lines...)
		out[n-1] = lineOf(key, value)
		if key == want[n-2].Key {
			return out, n
		}
		out = append(out[:n-1], out[n:]...)
		at := len(out) - 2
		for i := 1; i < len(out)-2; i++ {
			var bl backupLine
			json.Unmarshal([]byte(out[i]), &bl)
			if bl.Key > key {
				at = i
				break
			}
		}
		return append(out[:at], append([]string{lineOf(key, value)}, out[at:]...)...), at + 1
	}
	restore := func(t *testing.T, lines []string) (string, error) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "changed.backup")
		if err := os.WriteFile(file, []byte(strings.Join(lines, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), "weft.db")
		return target, runRestore(t.Context(), []string{"--in", file, "--store", "bolt://" + target}, &out, &errOut)
	}

	for _, tc := range []struct {
		name      string
		line      int
		key       string
		value     any
		wantError string
	}{
		{"a key weft does not write", node, "appmesh/zz/1", []byte("x"), "not a key weft's App Mesh writes"},
		{"a key outside weft's prefixes", node, "zz/1", []byte("x"), "not a key weft writes"},
		{"a key below a resource", node, want[node-2].Key + "/zz", want[node-2].Value, "not a key weft's App Mesh writes"},
		{"a node that is not JSON", node, want[node-2].Key, []byte(`{"meshName":`), "not a valid virtualNode: unexpected end of JSON input"},
		{"a node with data after it", node, want[node-2].Key, append(want[node-2].Value[:len(want[node-2].Value):len(want[node-2].Value)], " {}"...),
			"not a valid virtualNode: invalid character '{' after top-level value"},
		{"a node with a member of the wrong type", node, want[node-2].Key, edit(node, func(d map[string]any) { member(d, "spec")["listeners"] = "x" }),
			"not a valid virtualNode: json: cannot unmarshal string into Go struct field"},
		{"a node without metadata", node, want[node-2].Key, edit(node, func(d map[string]any) { delete(d, "metadata") }),
			"not a valid virtualNode: no metadata"},
		{"a node of another name", node, want[node-2].Key, edit(node, func(d map[string]any) { d["virtualNodeName"] = "red" }),
			`virtualNodeName is "red", not "blue"`},
		{"a mesh of another owner", otherMesh, want[otherMesh-2].Key, edit(otherMesh, func(d map[string]any) { member(d, "metadata")["meshOwner"] = "444455556666" }),
			`metadata.meshOwner is "444455556666", not "111122223333"`},
		{"an instance that is not JSON", instance, want[instance-2].Key, []byte(`{"Instance":`), "not a valid instance"},
		{"an instance of another id", instance, want[instance-2].Key, edit(instance, func(d map[string]any) { member(d, "Instance")["Id"] = "zz" }),
			`Instance.Id is "zz"`},
		{"a service with a member of the wrong type", service, want[service-2].Key,
			edit(service, func(d map[string]any) { member(d, "Service", "DnsConfig")["DnsRecords"] = map[string]any{} }),
			"not a valid service: json: cannot unmarshal object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed, line := with(tc.line, tc.key, tc.value)
			target, err := restore(t, changed)
			wantPrefix := fmt.Sprintf("backup line %d: key %q: ", line, tc.key)
			if err == nil || !strings.Contains(err.Error(), wantPrefix) || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("restore: %v\nwant an error with %q and %q", err, wantPrefix, tc.wantError)
			}
			if n := len(keys(t, target)); n != 0 {
				t.Fatalf("a refused restore wrote %d keys", n)
			}
		})
	}

	// Records the server reads, although today's API would not write
	// them: each restores, key for key.
	regex := func(d map[string]any) {
		member(d, "spec", "httpRoute", "match")["headers"].([]any)[0].(map[string]any)["match"] = map[string]any{"regex": "("}
	}
	for _, tc := range []struct {
		name  string
		line  int
		key   string
		value any
	}{
		{"a node with a member weft does not know", node, want[node-2].Key, edit(node, func(d map[string]any) { member(d, "spec")["colour"] = "blue" })},
		{"a route whose regex does not compile", route, want[route-2].Key, edit(route, regex)},
		{"a route of two types", route, want[route-2].Key, edit(route, func(d map[string]any) {
			member(d, "spec")["tcpRoute"] = map[string]any{"action": map[string]any{"weightedTargets": []any{map[string]any{"virtualNode": "red", "weight": 1}}}}
		})},
		{"a service with a DNS TTL of -1", service, want[service-2].Key, edit(service, func(d map[string]any) {
			member(d, "Service", "DnsConfig")["DnsRecords"] = []any{map[string]any{"Type": "A", "TTL": -1}}
		})},
		{"a service with no attributes left", service, want[service-2].Key, edit(service, func(d map[string]any) { d["Attributes"] = map[string]any{} })},
		{"a mesh whose owner is not 12 digits", otherMesh, "appmesh/mesh/acme/other-mesh", edit(otherMesh, func(d map[string]any) {
			member(d, "metadata")["meshOwner"], member(d, "metadata")["resourceOwner"] = "acme", "acme"
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed, _ := with(tc.line, tc.key, tc.value)
			target, err := restore(t, changed)
			if err != nil {
				t.Fatalf("restore of a record the server reads: %v", err)
			}
			got := keys(t, target)
			for _, l := range changed[1 : len(changed)-2] {
				var bl backupLine
				if err := json.Unmarshal([]byte(l), &bl); err != nil {
					t.Fatal(err)
				}
				if v, ok := got[bl.Key]; !ok || v != string(bl.Value) {
					t.Fatalf("restored %s = %q, backup has %q", bl.Key, v, bl.Value)
				}
			}
			if len(got) != len(changed)-3 {
				t.Fatalf("restored %d keys, the backup holds %d", len(got), len(changed)-3)
			}
		})
	}
}

// TestRestoreSpoolLimit: weft restore from a FIFO whose backup is larger
// than --max-spool, and weft store copy of a store whose snapshot is,
// are refused with an error naming the flag, and write nothing.
func TestRestoreSpoolLimit(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	src := filepath.Join(dir, "src.db")
	st, err := bolt.Open(src, bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(t.Context(), func(tx store.Tx) error {
		for i := range 50 {
			if err := tx.Put(fmt.Sprintf("weft/zz/%02d", i), bytes.Repeat([]byte("x"), 100)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	if _, _, err := dump.Write(t.Context(), st, &data); err != nil {
		t.Fatal(err)
	}
	st.Close()

	fifo := filepath.Join(dir, "weft.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { // ends when restore has read the FIFO through or closed it, or once it is opened and closed below
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = w.Write(data.Bytes())
			w.Close()
		}
		wrote <- err
	}()
	var out, errOut bytes.Buffer
	target := filepath.Join(dir, "target.db")
	err = runRestore(t.Context(), []string{"--in", fifo, "--store", "bolt://" + target, "--max-spool", "1000"}, &out, &errOut)
	if r, oerr := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); oerr == nil {
		r.Close() // releases the writer if restore never opened the FIFO
	}
	<-wrote // restore stops reading at the limit: the writer may fail (EPIPE)
	if err == nil || !strings.Contains(err.Error(), "more than --max-spool (1000 bytes)") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("restore of a %d-byte backup from a FIFO with --max-spool 1000: %v", data.Len(), err)
	}
	if n := len(keys(t, target)); n != 0 {
		t.Fatalf("%d keys written", n)
	}
	copied := filepath.Join(dir, "copied.db")
	err = runStore(t.Context(), []string{"copy", "--from", "bolt://" + src, "--to", "bolt://" + copied, "--max-spool", "1000"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "larger than --max-spool (1000 bytes)") {
		t.Fatalf("copy of a %d-byte snapshot with --max-spool 1000: %v", data.Len(), err)
	}
	if n := len(keys(t, copied)); n != 0 {
		t.Fatalf("%d keys copied", n)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "weft-spool-") {
			t.Errorf("spool file %s left", e.Name())
		}
	}
}
