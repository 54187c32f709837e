package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"

	"github.com/weftmesh/weft/bench/internal/benchpki"
)

// Environment variables through which -tls passes the server its
// certificate and key (serve).
const (
	tlsCertEnv = "XDSBENCH_TLS_CERT"
	tlsKeyEnv  = "XDSBENCH_TLS_KEY"
)

// benchTLS writes a self-signed ECDSA P-256 certificate for 127.0.0.1
// and its key to dir, and returns the environment that gives them to
// the server (weft server --xds-tls-cert, --xds-tls-key) and the
// simulated proxies' TLS configuration, which trusts only that
// certificate.
// The proxies present no certificate: the server's listener is on
// loopback, where it asks for no proof of identity, and a record's cost
// per push is the same with mutual TLS.
func benchTLS(dir string) (env []string, cfg *tls.Config, err error) {
	c, err := benchpki.SelfSigned(benchpki.Spec{
		Serial:      1,
		CommonName:  "xdsbench",
		IPs:         []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, nil, err
	}
	key, err := c.ECKeyPEM()
	if err != nil {
		return nil, nil, err
	}
	certFile, err := benchpki.WriteFile(dir, "cert.pem", c.CertPEM())
	if err != nil {
		return nil, nil, err
	}
	keyFile, err := benchpki.WriteFile(dir, "key.pem", key)
	if err != nil {
		return nil, nil, err
	}
	cfg = &tls.Config{RootCAs: c.Pool(), MinVersion: tls.VersionTLS13}
	return []string{tlsCertEnv + "=" + certFile, tlsKeyEnv + "=" + keyFile}, cfg, nil
}
