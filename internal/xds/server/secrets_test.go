package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

const sdsType = resource.SecretType

// fakeClock is a Clock the test moves: After fires when Advance passes
// its deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// tlsStore holds mesh m with node red, STRICT mutual TLS on its listener
// from the secrets "cert" and "trust", providing red.local; and a CA.
func tlsStore(t *testing.T) (store.Store, *ca.Authority) {
	st := openStore(t)
	putMesh(t, st, "m")
	vn := nodeData("m", "red")
	vn.Spec.Listeners[0].Tls = &appmesh.ListenerTls{Mode: appmesh.ListenerTlsModeStrict,
		Certificate: &appmesh.ListenerTlsCertificate{Sds: &appmesh.ListenerTlsSdsCertificate{SecretName: ptr("cert")}},
		Validation: &appmesh.ListenerTlsValidationContext{Trust: &appmesh.ListenerTlsValidationContextTrust{
			Sds: &appmesh.TlsValidationContextSdsTrust{SecretName: ptr("trust")}}}}
	put(t, st, ref("m", appmesh.KindVirtualNode, "", "red").Key(), vn)
	putService(t, st, "m", "red.local", "red")
	a, err := ca.Open(context.Background(), st, ca.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st, a
}

// secrets decodes an SDS response by name.
func secrets(t *testing.T, r *discovery.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	if r.GetTypeUrl() != sdsType {
		t.Fatalf("got %s version %s, want secrets", r.GetTypeUrl(), r.GetVersionInfo())
	}
	out := map[string]*tlsv3.Secret{}
	for _, a := range r.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[s.GetName()] = &s
	}
	return out
}

// bundleOf returns a validation secret's trusted CAs.
func bundleOf(t *testing.T, s *tlsv3.Secret) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("secret %s holds no trusted CA", s.GetName())
	}
	return out
}

// checkLeaf checks a certificate secret as a peer would: the chain and key
// pair up, the SPIFFE ID and DNS names are the node's, and it verifies
// against the bundle at now.
func checkLeaf(t *testing.T, s *tlsv3.Secret, bundle []*x509.Certificate, now time.Time) *x509.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("leaf %s: %v", s.GetName(), err)
	}
	if got := cert.Leaf.URIs; len(got) != 1 || got[0].String() != "spiffe://weft.local/mesh/m/virtualNode/red" {
		t.Fatalf("leaf URI SANs %v", got)
	}
	if !slices.Equal(cert.Leaf.DNSNames, []string{"red.colors.local", "red.local"}) {
		t.Fatalf("leaf DNS SANs %v", cert.Leaf.DNSNames)
	}
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify against the bundle: %v", err)
	}
	return cert.Leaf
}

func fingerprints(cs []*x509.Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, ca.Fingerprint(c))
	}
	return out
}

// TestSecrets: a proxy gets its own leaf and the bundle over ADS; the leaf
// is renewed at two thirds of its life and the bundle follows the three
// steps of a CA rotation, each a new Secret version, and no cluster or
// listener is resent meanwhile.
func TestSecrets(t *testing.T) {
	st, authority := tlsStore(t)
	clock := &fakeClock{now: time.Now()}
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) {
		o.Clock, o.InsecureSecrets, o.CertLifetime = clock, true, 3*time.Hour
	})
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(cdsType, "", "", nil, "")
	c.request(ldsType, "", "", nil, "")
	cds := c.next()
	lds := c.next()
	if cds.GetTypeUrl() != cdsType || lds.GetTypeUrl() != ldsType {
		t.Fatalf("got %s then %s", cds.GetTypeUrl(), lds.GetTypeUrl())
	}
	c.ack(cds)
	c.ack(lds)
	// The listener names the secrets over ADS; Envoy asks for them.
	var names []string
	if !strings.Contains(lds.String(), "cert") || !strings.Contains(lds.String(), "trust") {
		t.Fatalf("listener does not reference the secrets: %v", lds)
	}
	names = []string{"cert", "trust"}
	c.request(sdsType, "", "", names, "")
	sds := c.next()
	got := secrets(t, sds)
	bundle := bundleOf(t, got["trust"])
	if !slices.Equal(fingerprints(bundle), []string{authority.State().SignerRoot().Fingerprint()}) {
		t.Fatal("bundle is not the CA's root")
	}
	leaf := checkLeaf(t, got["cert"], bundle, clock.Now())
	if want := clock.Now().Add(3 * time.Hour); leaf.NotAfter.Sub(want).Abs() > time.Second {
		t.Fatalf("leaf not after %v, want %v", leaf.NotAfter, want)
	}
	c.ack(sds, names...)
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["sds"].Acked == sds.GetVersionInfo() })
	if p.Certificate == nil || p.Certificate.Serial != leaf.SerialNumber.Text(16) || p.Certificate.SPIFFEID != "spiffe://weft.local/mesh/m/virtualNode/red" || p.CertificateError != "" {
		t.Fatalf("/v1/proxies certificate %+v, error %q", p.Certificate, p.CertificateError)
	}
	cdsVersion, ldsVersion := p.Types["cds"].Version, p.Types["lds"].Version

	// Renewal: nothing at 1 h 59 min; at 2 h (two thirds of 3 h), a new
	// leaf, the same bundle.
	clock.Advance(119 * time.Minute)
	clock.Advance(time.Minute)
	sds2 := c.next()
	got = secrets(t, sds2)
	renewed := checkLeaf(t, got["cert"], bundleOf(t, got["trust"]), clock.Now())
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || sds2.GetVersionInfo() == sds.GetVersionInfo() {
		t.Fatal("renewal sent the same leaf")
	}
	c.ack(sds2, names...)
	lastSDS := sds2

	// CA rotation, three store writes, each a new bundle or leaf.
	ctx := context.Background()
	old := authority.State().SignerRoot().Fingerprint()
	next, err := authority.AddRoot(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	step := func(wantBundle []string, wantSigner string) *x509.Certificate {
		t.Helper()
		r := c.next()
		got := secrets(t, r)
		b := bundleOf(t, got["trust"])
		if !slices.Equal(fingerprints(b), wantBundle) {
			t.Fatalf("bundle %v, want %v", fingerprints(b), wantBundle)
		}
		l := checkLeaf(t, got["cert"], b, clock.Now())
		var signer string
		for _, rc := range b {
			if l.CheckSignatureFrom(rc) == nil {
				signer = ca.Fingerprint(rc)
			}
		}
		if signer != wantSigner {
			t.Fatalf("leaf signed by %s, want %s", signer, wantSigner)
		}
		if r.GetVersionInfo() == lastSDS.GetVersionInfo() {
			t.Fatal("a new bundle with the same version")
		}
		c.ack(r, names...)
		lastSDS = r
		return l
	}
	// 1: both roots trusted, the old one signs (the leaf is unchanged).
	l1 := step([]string{old, next.Fingerprint()}, old)
	if l1.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatal("introducing a root re-issued the leaf")
	}
	// 2: the new one signs.
	if _, err := authority.Activate(ctx, next.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	step([]string{old, next.Fingerprint()}, next.Fingerprint())
	// 3: the old one is gone.
	if _, err := authority.RemoveRoot(ctx, old); err != nil {
		t.Fatal(err)
	}
	step([]string{next.Fingerprint()}, next.Fingerprint())

	// Through all of it, no cluster or listener version changed, so
	// none was resent.
	p = waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["sds"].Acked == lastSDS.GetVersionInfo() })
	if p.Types["cds"].Version != cdsVersion || p.Types["lds"].Version != ldsVersion {
		t.Fatalf("cds %s -> %s, lds %s -> %s", cdsVersion, p.Types["cds"].Version, ldsVersion, p.Types["lds"].Version)
	}
	select {
	case r := <-c.recv:
		t.Fatalf("unexpected %s push", r.GetTypeUrl())
	default:
	}
}

// TestSecretsNeedProof: a stream that proved nothing, on a server that is
// not insecure, gets the bundle but not the leaf, and /v1/proxies says
// why; a proven stream of the same identity gets the leaf; Authorize's
// error closes the stream.
func TestSecretsNeedProof(t *testing.T) {
	st, _ := tlsStore(t)
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) {
		o.Authorize = func(ctx context.Context, id translate.Identity) (bool, error) {
			if id.Name != "red" {
				return false, status.Error(codes.PermissionDenied, "not you")
			}
			md := metadataOf(ctx)
			return md == "proof", nil
		}
	})
	names := []string{"cert", "trust"}
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(sdsType, "", "", names, "")
	sds := c.next()
	got := secrets(t, sds)
	if got["cert"] != nil || got["trust"] == nil {
		t.Fatalf("unproven stream got %v", slices.Sorted(mapKeys(got)))
	}
	c.ack(sds, names...)
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Types["sds"].Acked == sds.GetVersionInfo() })
	if p.Certificate != nil || !strings.Contains(p.CertificateError, "did not prove its identity") {
		t.Fatalf("/v1/proxies: certificate %+v, error %q", p.Certificate, p.CertificateError)
	}

	// A proven replica of the same node gets its leaf.
	proven := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"), proofDial()...)
	proven.request(sdsType, "", "", names, "")
	got = secrets(t, proven.next())
	if got["cert"] == nil || got["trust"] == nil {
		t.Fatalf("proven stream got %v", slices.Sorted(mapKeys(got)))
	}
	checkLeaf(t, got["cert"], bundleOf(t, got["trust"]), time.Now())

	// Authorize's error closes the stream.
	putNode(t, st, "m", "blue")
	bad := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/blue"))
	bad.request(cdsType, "", "", nil, "")
	if err := bad.ended(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream ended with %v, want PermissionDenied", err)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestSDSSocketMetadata: a proxy with a local SDS agent asks it for the
// sds secrets, so weft serves it none and issues it no certificate.
func TestSDSSocketMetadata(t *testing.T) {
	st, _ := tlsStore(t)
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) { o.InsecureSecrets = true })
	node := envoyNode("mesh/m/virtualNode/red")
	node.Metadata, _ = structpb.NewStruct(map[string]any{SDSSocketMetadataKey: true})
	c := dialADS(t, srv.addr, node)
	c.request(ldsType, "", "", nil, "")
	lds := c.next()
	if !strings.Contains(lds.String(), "static_cluster_sds_unix_socket") {
		t.Fatal("the listener does not ask the agent")
	}
	c.ack(lds)
	c.request(sdsType, "", "", []string{"cert", "trust"}, "")
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { _, ok := p.Types["sds"]; return ok })
	if p.Certificate != nil || p.Types["sds"].Version != versionOfItems(nil, "") {
		t.Fatalf("a proxy with an SDS agent was served secrets: %+v", p)
	}
}

// TestCorpusACMCertificate: tls-with-acm's node serves its listener with
// certificate.acm; weft serves that ARN's secret as the node's leaf.
func TestCorpusACMCertificate(t *testing.T) {
	st := openStore(t)
	loadCase(t, st, "../../../testdata/appmesh-examples/tls-with-acm")
	if _, err := ca.Open(context.Background(), st, ca.Config{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) { o.InsecureSecrets = true })
	c := dialADS(t, srv.addr, envoyNode("mesh/ColorApp-TLS/virtualNode/ColorTellerWhite"))
	c.request(ldsType, "", "", nil, "")
	lds := c.next()
	const arn = "arn:aws:acm:us-west-2:111122223333:certificate/00000000-0000-0000-0000-000000000001"
	if !strings.Contains(lds.String(), arn) {
		t.Fatal("the listener does not reference the ACM certificate")
	}
	c.ack(lds)
	c.request(sdsType, "", "", []string{arn}, "")
	got := secrets(t, c.next())
	tc := got[arn].GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if u := cert.Leaf.URIs; len(u) != 1 || u[0].String() != "spiffe://weft.local/mesh/ColorApp-TLS/virtualNode/ColorTellerWhite" {
		t.Fatalf("URI SANs %v", u)
	}
	if !slices.Contains(cert.Leaf.DNSNames, "colorteller.default.svc.cluster.local") {
		t.Fatalf("DNS SANs %v", cert.Leaf.DNSNames)
	}
}

// loadCase writes a corpus case's setup calls into the store, as the API
// stores them (the Describe shape: names and spec).
func loadCase(t *testing.T, st store.Store, dir string) {
	t.Helper()
	var steps struct {
		Setup []struct{ Op, Input string } `json:"setup"`
	}
	readFile := func(name string, v any) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	readFile("steps.json", &steps)
	for _, s := range steps.Setup {
		var in map[string]any
		readFile(s.Input, &in)
		mesh, _ := in["meshName"].(string)
		name := func(k string) string { v, _ := in[k].(string); return v }
		doc := map[string]any{"meshName": mesh, "spec": in["spec"]}
		var r appmesh.Ref
		switch s.Op {
		case "create-mesh":
			put(t, st, appmesh.MeshKey(owner, mesh), appmesh.MeshData{MeshName: ptr(mesh), Spec: &appmesh.MeshSpec{}})
			continue
		case "create-virtual-node":
			r, doc["virtualNodeName"] = ref(mesh, appmesh.KindVirtualNode, "", name("virtualNodeName")), name("virtualNodeName")
		case "create-virtual-service":
			r, doc["virtualServiceName"] = ref(mesh, appmesh.KindVirtualService, "", name("virtualServiceName")), name("virtualServiceName")
		case "create-virtual-router":
			r, doc["virtualRouterName"] = ref(mesh, appmesh.KindVirtualRouter, "", name("virtualRouterName")), name("virtualRouterName")
		case "create-route":
			r = ref(mesh, appmesh.KindRoute, name("virtualRouterName"), name("routeName"))
			doc["virtualRouterName"], doc["routeName"] = name("virtualRouterName"), name("routeName")
		case "create-virtual-gateway":
			r, doc["virtualGatewayName"] = ref(mesh, appmesh.KindVirtualGateway, "", name("virtualGatewayName")), name("virtualGatewayName")
		case "create-gateway-route":
			r = ref(mesh, appmesh.KindGatewayRoute, name("virtualGatewayName"), name("gatewayRouteName"))
			doc["virtualGatewayName"], doc["gatewayRouteName"] = name("virtualGatewayName"), name("gatewayRouteName")
		default:
			t.Fatalf("op %s in setup", s.Op)
		}
		put(t, st, r.Key(), doc)
	}
}

// proofDial dials with a header the test's Authorize takes as proof.
func proofDial() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, "x-test-proof", "proof"), desc, cc, method, opts...)
		}),
	}
}

func metadataOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-test-proof"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// TestSecretsNotServed: /v1/proxies says why a referenced secret is not
// served: no CA in the store, or one name used both as a certificate and
// as a trust.
func TestSecretsNotServed(t *testing.T) {
	st := openStore(t)
	putMesh(t, st, "m")
	vn := nodeData("m", "red")
	vn.Spec.Listeners[0].Tls = &appmesh.ListenerTls{Mode: appmesh.ListenerTlsModeStrict,
		Certificate: &appmesh.ListenerTlsCertificate{Sds: &appmesh.ListenerTlsSdsCertificate{SecretName: ptr("same")}},
		Validation: &appmesh.ListenerTlsValidationContext{Trust: &appmesh.ListenerTlsValidationContextTrust{
			Sds: &appmesh.TlsValidationContextSdsTrust{SecretName: ptr("same")}}}}
	put(t, st, ref("m", appmesh.KindVirtualNode, "", "red").Key(), vn)
	srv := startServer(t, st, translate.TranslateWith, withChecks, func(o *Options) { o.InsecureSecrets = true })
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	c.request(sdsType, "", "", []string{"same"}, "")
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return strings.Contains(p.CertificateError, "no certificate authority")
	})
	// A CA appears: still nothing for a name in both roles.
	if _, err := ca.Open(context.Background(), st, ca.Config{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	p := waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return strings.Contains(p.CertificateError, "both as a certificate and as a validation context")
	})
	if p.Certificate != nil {
		t.Fatal("a leaf was issued for a name nothing can serve")
	}
}

// TestBatchIssuesInParallel: proxies attaching in one batch (a restart)
// get their leaves issued together, one per node, each its own.
func TestBatchIssuesInParallel(t *testing.T) {
	st, _ := tlsStore(t)
	var ids []translate.Identity
	for _, n := range []string{"a", "b", "c", "d"} {
		vn := nodeData("m", n)
		vn.Spec.Listeners[0].Tls = &appmesh.ListenerTls{Mode: appmesh.ListenerTlsModeStrict,
			Certificate: &appmesh.ListenerTlsCertificate{Sds: &appmesh.ListenerTlsSdsCertificate{SecretName: ptr("cert")}}}
		put(t, st, ref("m", appmesh.KindVirtualNode, "", n).Key(), vn)
		ids = append(ids, translate.Identity{MeshOwner: owner, Mesh: "m", Kind: appmesh.KindVirtualNode, Name: n})
	}
	log := slog.New(slog.DiscardHandler)
	m := newMetrics(nil)
	l := newTestMachine(&Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: log}, m)
	if _, err := l.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := l.count(id); err != nil {
			t.Fatal(err)
		}
	}
	l.recompute(whole(ids), time.Time{}, time.Now())
	serials := map[string]bool{}
	for _, id := range ids {
		c := l.proxies[id].snap.cert
		if c == nil || c.SPIFFEID != "spiffe://weft.local/mesh/m/virtualNode/"+id.Name {
			t.Fatalf("%s: certificate %+v", id.Name, c)
		}
		serials[c.Serial] = true
	}
	if n := testutil.ToFloat64(m.certIssued); n != float64(len(ids)) || len(serials) != len(ids) {
		t.Fatalf("%v issued, %d distinct serials; want %d", n, len(serials), len(ids))
	}
}
