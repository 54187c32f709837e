package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

func TestTLSFileRotation(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	dir := t.TempDir()
	first := ca.Issue(t, []string{"svc.local"})
	f := writeLeaf(t, dir, ca, first)
	a := newBackend(t, "a")
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: f.common(false)}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	addr := h.addr("ingress")

	// A keep-alive connection made with the first certificate.
	tr := &http.Transport{TLSClientConfig: clientTLS(ca, "svc.local"), MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	keep := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	serial := func(reusedWant bool) string {
		t.Helper()
		reused := false
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
		resp, err := keep.Do(req)
		if err != nil {
			t.Fatalf("keep-alive request: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if reused != reusedWant || resp.StatusCode != 200 {
			t.Fatalf("keep-alive request: reused %v, status %d", reused, resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	if s := serial(false); s != first.Cert.SerialNumber.String() {
		t.Fatalf("first certificate: serial %s", s)
	}

	second := ca.Issue(t, []string{"svc.local"})
	tlstest.Write(t, dir, "key.pem", second.KeyPEM)
	tlstest.Write(t, dir, "chain.pem", second.CertPEM)
	waitUntil(t, 10*time.Second, "new connections to get the rewritten certificate", func() bool {
		_, cs, err := tlsGet(addr, clientTLS(ca, "svc.local"))
		return err == nil && cs.PeerCertificates[0].SerialNumber.Cmp(second.Cert.SerialNumber) == 0
	})
	// The established connection was not dropped.
	if s := serial(true); s != first.Cert.SerialNumber.String() {
		t.Errorf("the keep-alive connection changed certificate: %s", s)
	}

	// A bad rewrite keeps the last good certificate, logged and counted.
	tlstest.Write(t, dir, "chain.pem", []byte("not a certificate"))
	waitUntil(t, 10*time.Second, "tls_files.reload_failed", func() bool { return h.stat("tls_files.reload_failed") >= 1 })
	_, cs, err := tlsGet(addr, clientTLS(ca, "svc.local"))
	if err != nil || cs.PeerCertificates[0].SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatalf("after a bad rewrite: %v", err)
	}
}

func TestTLSMissingFileNACKed(t *testing.T) {
	h := newHarness(t)
	a := newBackend(t, "a")
	h.push(httpListener("ingress", httpManager("ingress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	addr := h.addr("ingress")
	missing := "/nonexistent/weft/chain.pem"
	mark := h.xds.Mark()
	h.xds.Set(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: fileDS(missing), PrivateKey: fileDS("/nonexistent/weft/key.pem")}}}}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	r := h.xds.WaitSince(mark, 10*time.Second, "LDS NACK", func(r xdstestRequest) bool {
		return r.TypeURL == xdsclient.ListenerType && r.Error != ""
	})
	for _, want := range []string{"filter_chains[0].transport_socket", "tls_certificates[0]", missing} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("NACK %q does not name %q", r.Error, want)
		}
	}
	// The previous (plaintext) configuration keeps serving.
	if code, err := plainGet(addr); err != nil || code != 200 {
		t.Fatalf("after the NACK: %d %v", code, err)
	}
}

func adsSecretConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource}
}

func certSecret(name string, leaf tlstest.Leaf) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inlineDS(leaf.CertPEM), PrivateKey: inlineDS(leaf.KeyPEM)}}}
}

func trustSecret(name string, ca *tlstest.CA) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inlineDS(ca.PEM)}}}
}

func TestSDSOverADS(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	a := newBackend(t, "a")
	allowed := "spiffe://weft.local/mesh/m/virtualNode/front"
	l := strictListener("ingress", &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{adsSecretConfig("leaf")},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: exactSANs(allowed)},
				ValidationContextSdsSecretConfig: adsSecretConfig("bundle")}}}})
	rest := []proto.Message{l, routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr())}
	// Configuration without its secrets: the proxy asks for them and is
	// not LIVE meanwhile.
	v := h.xds.Set(toResources(rest)...)
	h.xds.WaitACK(xdsclient.ListenerType, v)
	h.xds.WaitFor(10*time.Second, "a secret subscription", func(r xdstestRequest) bool {
		return r.TypeURL == xdsclient.SecretType && strings.Join(r.Names, ",") == "bundle,leaf"
	})
	if resp, err := http.Get("http://" + h.p.AdminAddr() + "/ready"); err != nil || resp.StatusCode == 200 {
		t.Fatalf("/ready before the secrets arrived: %v %v", resp, err)
	}
	addr := h.addr("ingress")
	client := ca.Issue(t, nil, allowed).TLS(t)
	if _, _, err := tlsGet(addr, clientTLS(ca, "svc.local", client)); err == nil {
		t.Fatal("served before the certificate arrived")
	}
	if code, err := plainGet(addr); err == nil {
		t.Fatalf("served plaintext while waiting for secrets: %d", code)
	}

	first := ca.Issue(t, []string{"svc.local"})
	v = h.xds.Set(toResources(append(rest, certSecret("leaf", first), trustSecret("bundle", ca)))...)
	h.xds.WaitACK(xdsclient.SecretType, v)
	if err := h.p.WaitLive(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, cs, err := tlsGet(addr, clientTLS(ca, "svc.local", client))
	if err != nil || cs.PeerCertificates[0].SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("with the secrets: %v", err)
	}

	// Rotation: new handshakes use the new certificate.
	second := ca.Issue(t, []string{"svc.local"})
	v = h.xds.Set(toResources(append(rest, certSecret("leaf", second), trustSecret("bundle", ca)))...)
	h.xds.WaitACK(xdsclient.SecretType, v)
	_, cs, err = tlsGet(addr, clientTLS(ca, "svc.local", client))
	if err != nil || cs.PeerCertificates[0].SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatalf("after rotation: %v", err)
	}

	// No private key in any admin output; the secrets are dumped.
	dump := h.admin("/config_dump")
	if strings.Contains(dump, "PRIVATE KEY") || strings.Contains(dump, string(second.KeyPEM[30:60])) {
		t.Error("/config_dump shows a private key")
	}
	for _, want := range []string{"SecretsConfigDump", `"name": "leaf"`, "[redacted]", "DownstreamTlsContext"} {
		if !strings.Contains(dump, want) {
			t.Errorf("/config_dump lacks %s", want)
		}
	}
	for _, p := range []string{"/stats", "/stats/prometheus", "/clusters", "/listeners", "/server_info", "/config_dump?include_eds"} {
		if b := h.admin(p); strings.Contains(b, "PRIVATE KEY") {
			t.Errorf("%s shows a private key", p)
		}
	}
}

func toResources(ms []proto.Message) []types.Resource {
	out := make([]types.Resource, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func TestConfigDumpRedactsInlineKeys(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	leaf := ca.Issue(t, []string{"svc.local"})
	a := newBackend(t, "a")
	h.push(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inlineDS(leaf.CertPEM), PrivateKey: inlineDS(leaf.KeyPEM)}}}}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	if code, _, err := tlsGet(h.addr("ingress"), clientTLS(ca, "svc.local")); err != nil || code != 200 {
		t.Fatalf("inline certificate: %d %v", code, err)
	}
	dump := h.admin("/config_dump")
	if strings.Contains(dump, "PRIVATE KEY") || bytes.Contains([]byte(dump), leaf.KeyPEM[40:70]) {
		t.Fatal("/config_dump shows the private key")
	}
	if !strings.Contains(dump, "[redacted]") {
		t.Error("/config_dump does not show the key as [redacted]")
	}
}

// TestTLSWarming: an update that turns TLS on with a secret not yet
// arrived leaves the configuration in force serving (Envoy warms updated
// listeners and clusters) and takes over once the secret is there.
func TestTLSWarming(t *testing.T) {
	h := newHarness(t)
	ca := tlstest.NewCA(t, "mesh")
	plain := newBackend(t, "plain")
	secure := newTLSBackend(t, ca, ca.Issue(t, []string{"back.local"}), false)
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c")))
	h.push(httpListener("ingress", httpManager("ingress", "rds")), rc, staticCluster("c", plain.addr()))
	addr := h.addr("ingress")

	l := strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{adsSecretConfig("leaf")}}})
	c := staticCluster("c", strings.TrimPrefix(secure.URL, "https://"))
	c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: "back.local", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: adsSecretConfig("bundle")}}})
	v := h.xds.Set(l, rc, c)
	h.xds.WaitACK(xdsclient.ListenerType, v)
	h.xds.WaitACK(xdsclient.ClusterType, v)
	h.xds.WaitFor(10*time.Second, "the secret subscription", func(r xdstestRequest) bool {
		return r.TypeURL == xdsclient.SecretType && strings.Join(r.Names, ",") == "bundle,leaf"
	})
	// Warming: the plaintext listener and cluster still serve.
	resp, e, _ := get(t, newClient(t), addr, "x", "/")
	if resp.StatusCode != 200 || e.Backend != "plain" {
		t.Fatalf("while warming: %d %q", resp.StatusCode, e.Backend)
	}
	v = h.xds.Set(l, rc, c, certSecret("leaf", ca.Issue(t, []string{"svc.local"})), trustSecret("bundle", ca))
	h.xds.WaitACK(xdsclient.SecretType, v)
	code, _, err := tlsGet(addr, clientTLS(ca, "svc.local"))
	if err != nil || code != 200 {
		t.Fatalf("after the secrets: %d %v", code, err)
	}
	if code, err := plainGet(addr); err == nil {
		t.Fatalf("plaintext still served after warming: %d", code)
	}
	if n := h.stat("cluster.c.ssl.handshake"); n != 1 {
		t.Errorf("cluster.c.ssl.handshake = %d, want 1 (the request went over TLS)", n)
	}
}

// TestSecretInitialFetchTimeout: a secret that never comes holds up LIVE
// only until its sds_config's initial_fetch_timeout; the listener then
// refuses handshakes (never plaintext).
func TestSecretInitialFetchTimeout(t *testing.T) {
	h := newHarness(t)
	a := newBackend(t, "a")
	sc := adsSecretConfig("never")
	sc.SdsConfig = proto.Clone(adsSource).(*corev3.ConfigSource)
	sc.SdsConfig.InitialFetchTimeout = durationpb.New(200 * time.Millisecond)
	v := h.xds.Set(strictListener("ingress", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sc}}}),
		routeConfig("rds", vhost("v", []string{"*"}, routeTo("/", "c"))), staticCluster("c", a.addr()))
	h.xds.WaitACK(xdsclient.ListenerType, v)
	// Well before the proxy's own 15 s bound.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := h.p.WaitLive(ctx); err != nil {
		t.Fatalf("not LIVE after the secret's initial_fetch_timeout: %v", err)
	}
	if code, err := plainGet(h.addr("ingress")); err == nil {
		t.Fatalf("served plaintext without its certificate: %d", code)
	}
}
