package proxy

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// agentSecretConfig names a secret of the SDS agent on the Unix socket,
// as weft's translator (and App Mesh) emit sds.secretName.
func agentSecretConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "static_cluster_sds_unix_socket"}}}}}}}}
}

// sdsAgent is a real gRPC SecretDiscoveryService on a Unix socket, as the
// SPIRE agent served Envoy.
type sdsAgent struct {
	path    string
	cache   cachev3.SnapshotCache
	version int
}

func startSDSAgent(t *testing.T) *sdsAgent {
	a := &sdsAgent{path: filepath.Join(t.TempDir(), "sds.sock"), cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)}
	ln, err := net.Listen("unix", a.path)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(g, serverv3.NewServer(context.Background(), a.cache, nil))
	done := make(chan struct{})
	go func() { // the SDS server; ends when Stop is called at cleanup
		defer close(done)
		_ = g.Serve(ln)
	}()
	t.Cleanup(func() { g.Stop(); <-done })
	return a
}

func (a *sdsAgent) set(t *testing.T, secrets ...*tlsv3.Secret) {
	a.version++
	var rs []types.Resource
	for _, s := range secrets {
		rs = append(rs, s)
	}
	snap, err := cachev3.NewSnapshot(string(rune('a'+a.version)), map[resourcev3.Type][]types.Resource{resourcev3.SecretType: rs})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
}

func TestSDSSocket(t *testing.T) {
	agent := startSDSAgent(t)
	ca := tlstest.NewCA(t, "spire")
	first := ca.Issue(t, []string{"svc.local"}, "spiffe://example.org/front")
	agent.set(t, certSecret("spiffe://example.org/front", first), trustSecret("spiffe://example.org", ca))

	h := newHarness(t, func(c *Config) { c.SDSSocket = agent.path })
	b := newBackend(t, "a")
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{agentSecretConfig("spiffe://example.org/front")},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: agentSecretConfig("spiffe://example.org")}}}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", b.addr()))
	if err := h.p.WaitLive(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := h.addr("ingress")
	client := ca.Issue(t, nil, "spiffe://example.org/back").TLS(t)
	_, cs, err := tlsGet(addr, clientTLS(ca, "svc.local", client))
	if err != nil || cs.PeerCertificates[0].SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("with the agent's secrets: %v", err)
	}
	if !strings.Contains(h.admin("/config_dump"), `"weft.sds_socket": true`) {
		t.Error("the node metadata does not say weft.sds_socket")
	}

	// The agent rotates the certificate: new handshakes use it.
	second := ca.Issue(t, []string{"svc.local"}, "spiffe://example.org/front")
	agent.set(t, certSecret("spiffe://example.org/front", second), trustSecret("spiffe://example.org", ca))
	waitUntil(t, 10*time.Second, "the rotated certificate", func() bool {
		_, cs, err := tlsGet(addr, clientTLS(ca, "svc.local", client))
		return err == nil && cs.PeerCertificates[0].SerialNumber.Cmp(second.Cert.SerialNumber) == 0
	})
	if strings.Contains(h.admin("/config_dump"), "PRIVATE KEY") {
		t.Error("/config_dump shows a private key")
	}
}

// Without --sds-socket, a secret of the SDS agent cannot be had: the
// listener is NACKed with a message saying so, never served in plaintext.
func TestSDSSocketMissingNACKed(t *testing.T) {
	h := newHarness(t)
	b := newBackend(t, "a")
	mark := h.xds.Mark()
	h.xds.Set(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{agentSecretConfig("spiffe://example.org/front")}}}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", b.addr()))
	r := h.xds.WaitSince(mark, 10*time.Second, "LDS NACK", func(r xdstestRequest) bool {
		return r.TypeURL == xdsclient.ListenerType && r.Error != ""
	})
	if !strings.Contains(r.Error, "--sds-socket") || !strings.Contains(r.Error, "tls_certificate_sds_secret_configs[0]") {
		t.Errorf("NACK: %s", r.Error)
	}
}
