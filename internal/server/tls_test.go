package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/ca"
	xdsserver "github.com/weftmesh/weft/internal/xds/server"
)

// freeAddr returns a loopback address nothing listens on now; Run
// listens on it itself (a test that races for the port fails loudly).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStrictTLSNode runs the real server, creates a virtual node with a
// STRICT mutual TLS listener through the AWS SDK, and connects as its
// proxy with a raw ADS client: every secret name the listener references
// over ADS is served, the certificate is the node's and verifies against
// the bundle, and the store file holding the CA is the owner's only.
func TestStrictTLSNode(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), DataDir: dir, Region: "us-east-1", AccountID: "111122223333"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }() // ends with cancel below
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + cfg.APIAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "weft.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file: %v %v", fi.Mode(), err)
	}

	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	if _, err := mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	const certARN = "arn:aws:acm:us-east-1:111122223333:certificate/00000000-0000-0000-0000-000000000001"
	_, err := mesh.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String("red"),
		Spec: &types.VirtualNodeSpec{
			Listeners: []types.Listener{{
				PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp},
				Tls: &types.ListenerTls{Mode: types.ListenerTlsModeStrict,
					Certificate: &types.ListenerTlsCertificateMemberAcm{Value: types.ListenerTlsAcmCertificate{CertificateArn: aws.String(certARN)}},
					Validation: &types.ListenerTlsValidationContext{
						Trust: &types.ListenerTlsValidationContextTrustMemberSds{Value: types.TlsValidationContextSdsTrust{SecretName: aws.String("mesh-trust")}},
						SubjectAlternativeNames: &types.SubjectAlternativeNames{Match: &types.SubjectAlternativeNameMatchers{
							Exact: []string{"spiffe://weft.local/mesh/m/virtualNode/blue"}}},
					}},
			}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String("red.m.local")}},
		}})
	if err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(cfg.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "mesh/m/virtualNode/red", UserAgentName: "envoy"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	lds, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// Every secret the listeners ask of the control plane.
	var names []string
	for _, a := range lds.GetResources() {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.GetFilterChains() {
			if fc.GetTransportSocket() == nil {
				continue
			}
			var dtc tlsv3.DownstreamTlsContext
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&dtc); err != nil {
				t.Fatal(err)
			}
			c := dtc.GetCommonTlsContext()
			for _, s := range append(c.GetTlsCertificateSdsSecretConfigs(), c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()) {
				if s.GetSdsConfig().GetAds() != nil {
					names = append(names, s.GetName())
				}
			}
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{certARN, "mesh-trust"}) {
		t.Fatalf("listener secrets %v", names)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: lds.GetVersionInfo(), ResponseNonce: lds.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	sds, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if sds.GetTypeUrl() != resource.SecretType {
		t.Fatalf("got %s, want secrets", sds.GetTypeUrl())
	}
	got := map[string]*tlsv3.Secret{}
	for _, a := range sds.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		got[s.GetName()] = &s
	}
	for _, n := range names {
		if got[n] == nil {
			t.Fatalf("secret %q not served (served: %v)", n, got)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(got["mesh-trust"].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("the trust secret holds no CA")
	}
	tc := got[certARN].GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("certificate does not verify against the bundle: %v", err)
	}
	if u := cert.Leaf.URIs; len(u) != 1 || u[0].String() != "spiffe://weft.local/mesh/m/virtualNode/red" || !slices.Equal(cert.Leaf.DNSNames, []string{"red.m.local"}) {
		t.Fatalf("SANs %v %v", cert.Leaf.URIs, cert.Leaf.DNSNames)
	}

	// /v1/ca shows the one root, which signed it; /v1/proxies the
	// certificate served.
	var st ca.Status
	getJSON(t, base+"/v1/ca", &st)
	if len(st.Roots) != 1 || !st.Roots[0].Signing || cert.Leaf.CheckSignatureFrom(anchor(t, got["mesh-trust"].GetValidationContext().GetTrustedCa().GetInlineBytes(), st.Roots[0].Fingerprint)) != nil {
		t.Fatalf("/v1/ca %+v", st)
	}
	var proxies struct{ Proxies []xdsserver.ProxyStatus }
	getJSON(t, base+"/v1/proxies", &proxies)
	if len(proxies.Proxies) != 1 || proxies.Proxies[0].Certificate == nil || proxies.Proxies[0].Certificate.Serial != cert.Leaf.SerialNumber.Text(16) {
		t.Fatalf("/v1/proxies %+v", proxies)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// anchor finds the certificate with fingerprint fp in a PEM bundle.
func anchor(t *testing.T, bundle []byte, fp string) *x509.Certificate {
	t.Helper()
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			t.Fatalf("no certificate %s in the bundle", fp)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if ca.Fingerprint(c) == fp {
			return c
		}
	}
}

// Leaves go to unproven streams only on a loopback xDS listener.
func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:15010": true, "[::1]:15010": true, "0.0.0.0:15010": false, "10.0.0.5:15010": false, "[::]:15010": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, want)
		}
	}
}
