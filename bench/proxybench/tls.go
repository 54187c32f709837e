package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The mesh identities of the mTLS paths, as weft issues them (SPIFFE URI
// SANs, ECDSA P-256).
const (
	serverSNI = "server.bench"
	serverID  = "spiffe://weft.local/mesh/bench/virtualNode/server"
	clientID  = "spiffe://weft.local/mesh/bench/virtualNode/client"
)

// pki is the bench's CA and the two sidecars' certificates, as files.
type pki struct {
	ca                    string // CA certificate
	serverCert, serverKey string
	clientCert, clientKey string
	serverPEM, clientPEM  string // certificate and key in one file (haproxy's crt)
	pool                  *x509.CertPool
	client                tls.Certificate
}

func newPKI(dir string) *pki {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k := &pki{pool: x509.NewCertPool()}
	k.pool.AddCert(caCert)
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			log.Fatal(err)
		}
		return p
	}
	k.ca = write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(serial int64, id string, dns []string) (*pem.Block, *pem.Block) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse(id)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: id}, DNSNames: dns, URIs: []*url.URL{u},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			log.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		return &pem.Block{Type: "CERTIFICATE", Bytes: der}, &pem.Block{Type: "PRIVATE KEY", Bytes: kd}
	}
	sc, sk := leaf(2, serverID, []string{serverSNI})
	cc, ck := leaf(3, clientID, nil)
	k.serverCert, k.serverKey, k.serverPEM = write("server.pem", sc), write("server.key", sk), write("server-both.pem", sc, sk)
	k.clientCert, k.clientKey, k.clientPEM = write("client.pem", cc), write("client.key", ck), write("client-both.pem", cc, ck)
	k.client, err = tls.LoadX509KeyPair(k.clientCert, k.clientKey)
	if err != nil {
		log.Fatal(err)
	}
	return k
}

// clientTLS is the load generator's side of a mutual-TLS path: the
// client sidecar's certificate, the mesh CA.
func (k *pki) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: k.pool, ServerName: serverSNI, Certificates: []tls.Certificate{k.client}}
}

func file(p string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
}

func uriSAN(id string) []*tlsv3.SubjectAltNameMatcher {
	return []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}}}
}

func socket(m *anypb.Any) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: m}}
}

// withMTLS makes a sidecar's resources mutual TLS as weft's translator
// emits a STRICT listener with validation and an enforced client policy:
// in, the listener serves TLS and requires the client sidecar's
// certificate; up, the cluster speaks TLS to the server sidecar, checks
// its SPIFFE ID and presents the client's certificate.
func (k *pki) withMTLS(rs []types.Resource, in, up bool) []types.Resource {
	for _, r := range rs {
		switch x := r.(type) {
		case *listenerv3.Listener:
			if in {
				a, _ := anypb.New(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
					CommonTlsContext: &tlsv3.CommonTlsContext{
						TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(k.serverCert), PrivateKey: file(k.serverKey)}},
						ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
							TrustedCa: file(k.ca), MatchTypedSubjectAltNames: uriSAN(clientID)}}}})
				x.FilterChains[0].TransportSocket = socket(a)
			}
		case *clusterv3.Cluster:
			if up {
				a, _ := anypb.New(&tlsv3.UpstreamTlsContext{Sni: serverSNI, CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(k.clientCert), PrivateKey: file(k.clientKey)}},
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
						TrustedCa: file(k.ca), MatchTypedSubjectAltNames: uriSAN(serverID)}}}})
				x.TransportSocket = socket(a)
			}
		}
	}
	return rs
}

// startHAProxyTLS is startHAProxy with TLS: in terminates mutual TLS
// (client certificate required, from the mesh CA); up connects to the
// upstream over TLS, verifying it and presenting the client certificate,
// reusing connections as the plaintext one does.
func (b *bench) startHAProxyTLS(k *pki, port int, upstream string, in, up bool) {
	bind := fmt.Sprintf("127.0.0.1:%d", port)
	if in {
		bind += fmt.Sprintf(" ssl crt %s ca-file %s verify required", k.serverPEM, k.ca)
	}
	server := upstream
	if up {
		server += fmt.Sprintf(" ssl verify required ca-file %s crt %s sni str(%s)", k.ca, k.clientPEM, serverSNI)
	}
	b.haproxy(port, bind, server)
}
