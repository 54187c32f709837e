package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/bench/internal/benchpki"
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

// newPKI makes the CA and the sidecars' certificates and writes them to
// dir; it exits on error, as the bench cannot run without them.
func newPKI(dir string) *pki {
	k, err := writePKI(dir)
	if err != nil {
		log.Fatal(err)
	}
	return k
}

func writePKI(dir string) (*pki, error) {
	ca, err := benchpki.NewCA(1, "weft bench CA")
	if err != nil {
		return nil, err
	}
	k := &pki{pool: ca.Pool()}
	if k.ca, err = benchpki.WriteFile(dir, "ca.pem", ca.CertPEM()); err != nil {
		return nil, err
	}
	// leaf issues a sidecar's certificate and writes it, its key, and
	// both in one file.
	leaf := func(serial int64, id string, dns []string, name string) (cert, key, both string, err error) {
		c, err := ca.Issue(benchpki.Spec{Serial: serial, CommonName: id, DNSNames: dns, URIs: []string{id},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return "", "", "", err
		}
		kb, err := c.PKCS8KeyPEM()
		if err != nil {
			return "", "", "", err
		}
		if cert, err = benchpki.WriteFile(dir, name+".pem", c.CertPEM()); err != nil {
			return "", "", "", err
		}
		if key, err = benchpki.WriteFile(dir, name+".key", kb); err != nil {
			return "", "", "", err
		}
		if both, err = benchpki.WriteFile(dir, name+"-both.pem", c.CertPEM(), kb); err != nil {
			return "", "", "", err
		}
		return cert, key, both, nil
	}
	if k.serverCert, k.serverKey, k.serverPEM, err = leaf(2, serverID, []string{serverSNI}, "server"); err != nil {
		return nil, err
	}
	if k.clientCert, k.clientKey, k.clientPEM, err = leaf(3, clientID, nil, "client"); err != nil {
		return nil, err
	}
	if k.client, err = tls.LoadX509KeyPair(k.clientCert, k.clientKey); err != nil {
		return nil, fmt.Errorf("load the client certificate: %w", err)
	}
	return k, nil
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
