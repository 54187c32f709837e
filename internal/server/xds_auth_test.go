package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/jwt"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/auth"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// xdsEnv is an API and an xDS server on one store, with mesh m holding
// virtual nodes a and b of account 111122223333.
type xdsEnv struct {
	*authEnv
	addr       string
	serverPool *x509.CertPool // trusts the xDS server's certificate (nil: plaintext)
}

func newXDSEnv(t testing.TB, file string, tlsOn bool, clientCAs *x509.CertPool) *xdsEnv {
	t.Helper()
	e := &xdsEnv{authEnv: newAuthEnv(t, file)}
	admin := e.mesh("AKIDADMIN", "admin-secret")
	if _, err := admin.CreateMesh(t.Context(), &sdk.CreateMeshInput{MeshName: aws.String("m")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		spec := &types.VirtualNodeSpec{
			Listeners:        []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(8080), Protocol: types.PortProtocolHttp}}},
			ServiceDiscovery: &types.ServiceDiscoveryMemberDns{Value: types.DnsServiceDiscovery{Hostname: aws.String(n + ".m.local")}},
		}
		if _, err := admin.CreateVirtualNode(t.Context(), &sdk.CreateVirtualNodeInput{MeshName: aws.String("m"), VirtualNodeName: aws.String(n), Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.cfg
	if tlsOn {
		cfg.XDSTLSCert, cfg.XDSTLSKey, e.serverPool = writeCert(t, t.TempDir())
	}
	if clientCAs != nil {
		e.sec.xds.ClientCAs = func() *x509.CertPool { return clientCAs }
		e.sec.xds.TrustDomain = "weft.local"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.XDSAddr = ln.Addr().String()
	ln.Close() // startXDS listens itself; a test that races for this port fails loudly
	x, err := startXDS(t.Context(), e.st, cfg, e.sec, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.stop)
	e.addr = cfg.XDSAddr
	return e
}

// stream opens an ADS stream as node and returns the first thing the
// server answers: a response, or the error that closed the stream.
func (e *xdsEnv) stream(t testing.TB, node string, clientCert *tls.Certificate, opts ...grpc.DialOption) (*discovery.DiscoveryResponse, error) {
	t.Helper()
	creds := insecure.NewCredentials()
	if e.serverPool != nil {
		tc := &tls.Config{RootCAs: e.serverPool, ServerName: "localhost"}
		if clientCert != nil {
			tc.Certificates = []tls.Certificate{*clientCert}
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(e.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node, UserAgentName: "envoy"}, TypeUrl: resource.ClusterType}); err != nil {
		return nil, err
	}
	return st.Recv()
}

// bearer sends a join token as call credentials.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// envoySigV4 signs each call as Envoy's envoy.grpc_credentials.aws_iam
// plugin does for the App Mesh image: a POST to service URL + "/" + method
// with an empty payload, x-amz-content-sha256 set, service "appmesh".
type envoySigV4 struct{ id, secret string }

func (s envoySigV4) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	req, err := http.NewRequest("POST", uri[0]+"/StreamAggregatedResources", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Amz-Content-Sha256", auth.EmptySHA256)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: s.id, SecretAccessKey: s.secret}, req, auth.EmptySHA256, "appmesh", "us-west-2", time.Now()); err != nil {
		return nil, err
	}
	return map[string]string{
		"authorization":        req.Header.Get("Authorization"),
		"x-amz-date":           req.Header.Get("X-Amz-Date"),
		"x-amz-content-sha256": auth.EmptySHA256,
	}, nil
}
func (envoySigV4) RequireTransportSecurity() bool { return true }

func wantServed(t *testing.T, resp *discovery.DiscoveryResponse, err error) {
	t.Helper()
	if err != nil || resp.GetTypeUrl() != resource.ClusterType {
		t.Fatalf("not served: %v", err)
	}
}

// wantRefused: the stream ends with code before any response.
func wantRefused(t *testing.T, resp *discovery.DiscoveryResponse, err error, code codes.Code, msg string) {
	t.Helper()
	if resp != nil {
		t.Fatalf("served %d resources before refusing", len(resp.GetResources()))
	}
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want %s containing %q", err, code, msg)
	}
}

func TestXDSAuthWithCredentialsFile(t *testing.T) {
	e := newXDSEnv(t, authFile, true, nil)
	now := time.Now()
	nodeA := "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/a"
	tokA, err := e.sec.tokens.Mint(nodeA, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("no credentials", func(t *testing.T) {
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil)
		wantRefused(t, resp, err, codes.Unauthenticated, "Missing Authentication Token")
	})
	t.Run("join token", func(t *testing.T) {
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(bearer(tokA)))
		wantServed(t, resp, err)
	})
	t.Run("impersonation", func(t *testing.T) {
		// A's token, B's node id: refused before anything of B is sent.
		resp, err := e.stream(t, "mesh/m/virtualNode/b", nil, grpc.WithPerRPCCredentials(bearer(tokA)))
		wantRefused(t, resp, err, codes.PermissionDenied, "the join token is for "+nodeA)
	})
	t.Run("wrong token", func(t *testing.T) {
		bad := tokA[:len(tokA)-2] + "AA"
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(bearer(bad)))
		wantRefused(t, resp, err, codes.Unauthenticated, "invalid join token")
	})
	t.Run("expired token", func(t *testing.T) {
		old, _ := e.sec.tokens.Mint(nodeA, now.Add(-2*time.Hour), now.Add(-time.Hour))
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(bearer(old)))
		wantRefused(t, resp, err, codes.Unauthenticated, "join token expired")
	})
	t.Run("token file of weft proxy", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(tokA+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(xdsclient.TokenFile{Path: path, Secure: true}))
		wantServed(t, resp, err)
	})
	t.Run("proxyless gRPC JWT call credentials", func(t *testing.T) {
		// grpc-go's token-file call credentials (gRFC A97), as a
		// proxyless client configures them, send the join token as is.
		path := filepath.Join(t.TempDir(), "token.jwt")
		if err := os.WriteFile(path, []byte(tokA), 0o600); err != nil {
			t.Fatal(err)
		}
		creds, err := jwt.NewTokenFileCallCredentials(path)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(creds))
		wantServed(t, resp, err)
	})
	t.Run("token from the API", func(t *testing.T) {
		r := e.signedDo(t, "POST", "/v1/tokens", `{"resource":"mesh/m/virtualNode/b","ttl":"10m"}`, "AKIDADMIN", "admin-secret", "weft", time.Now())
		if r.status != 200 {
			t.Fatalf("POST /v1/tokens: %d %s", r.status, r.message)
		}
		tok := string(r.body)
		tok = tok[strings.Index(tok, `"token":"`)+len(`"token":"`):]
		tok = tok[:strings.IndexByte(tok, '"')]
		resp, err := e.stream(t, "mesh/m/virtualNode/b", nil, grpc.WithPerRPCCredentials(bearer(tok)))
		wantServed(t, resp, err)
	})
	t.Run("sigv4 as the App Mesh image", func(t *testing.T) {
		resp, err := e.stream(t, nodeA, nil, grpc.WithPerRPCCredentials(envoySigV4{"AKIDADMIN", "admin-secret"}))
		wantServed(t, resp, err)
	})
	t.Run("sigv4 wrong secret", func(t *testing.T) {
		resp, err := e.stream(t, nodeA, nil, grpc.WithPerRPCCredentials(envoySigV4{"AKIDADMIN", "wrong-secret"}))
		wantRefused(t, resp, err, codes.Unauthenticated, "does not match")
	})
	t.Run("sigv4 not allowed on the node", func(t *testing.T) {
		resp, err := e.stream(t, nodeA, nil, grpc.WithPerRPCCredentials(envoySigV4{"AKIDMESHA", "mesh-a-secret"}))
		wantRefused(t, resp, err, codes.PermissionDenied, "is not authorized to perform: appmesh:StreamAggregatedResources on resource: "+nodeA)
	})
}

func TestXDSAuthClientCertificate(t *testing.T) {
	ca, caKey := testCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	e := newXDSEnv(t, authFile, true, pool)
	certA := clientCert(t, ca, caKey, "spiffe://weft.local/mesh/m/virtualNode/a")
	t.Run("its own node", func(t *testing.T) {
		resp, err := e.stream(t, "mesh/m/virtualNode/a", &certA)
		wantServed(t, resp, err)
	})
	t.Run("another node", func(t *testing.T) {
		resp, err := e.stream(t, "mesh/m/virtualNode/b", &certA)
		wantRefused(t, resp, err, codes.PermissionDenied, "does not name")
	})
	t.Run("another trust domain", func(t *testing.T) {
		other := clientCert(t, ca, caKey, "spiffe://elsewhere/mesh/m/virtualNode/a")
		resp, err := e.stream(t, "mesh/m/virtualNode/a", &other)
		wantRefused(t, resp, err, codes.PermissionDenied, "does not name")
	})
	t.Run("a CA weft does not trust", func(t *testing.T) {
		ca2, key2 := testCA(t)
		forged := clientCert(t, ca2, key2, "spiffe://weft.local/mesh/m/virtualNode/a")
		resp, err := e.stream(t, "mesh/m/virtualNode/a", &forged)
		if resp != nil || err == nil {
			t.Fatalf("a certificate from another CA was served: %v", err)
		}
	})
}

// TestXDSAuthLoopbackDefault: without a credentials file streams are
// served unproven and SigV4 metadata is not checked, but a join token that
// is presented must be valid.
func TestXDSAuthLoopbackDefault(t *testing.T) {
	e := newXDSEnv(t, "", false, nil)
	resp, err := e.stream(t, "mesh/m/virtualNode/a", nil)
	wantServed(t, resp, err)
	resp, err = e.stream(t, "mesh/m/virtualNode/a", nil, grpc.WithPerRPCCredentials(bearer("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.Zm9yZ2Vk")))
	wantRefused(t, resp, err, codes.Unauthenticated, "invalid join token")
}

func testCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test mesh CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func clientCert(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, spiffe string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
