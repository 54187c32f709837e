package benchpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"
)

// TestIssue: a leaf the CA issues verifies against the CA's pool for
// both ends of mutual TLS and carries the SANs asked for.
func TestIssue(t *testing.T) {
	ca, err := NewCA(1, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage != x509.KeyUsageCertSign {
		t.Errorf("CA: IsCA %v, key usage %v; want a CA that only signs certificates", ca.Cert.IsCA, ca.Cert.KeyUsage)
	}
	const id = "spiffe://weft.local/mesh/m/virtualNode/n"
	leaf, err := ca.Issue(Spec{Serial: 2, CommonName: id, DNSNames: []string{"n.test"}, URIs: []string{id},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.Cert
	if c.SerialNumber.Int64() != 2 || c.Subject.CommonName != id || len(c.URIs) != 1 || c.URIs[0].String() != id {
		t.Errorf("leaf: serial %v, CN %q, URIs %v", c.SerialNumber, c.Subject.CommonName, c.URIs)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", c.PublicKey)
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != backdate+lifetime {
		t.Errorf("validity %v, want %v", got, backdate+lifetime)
	}
	if now := time.Now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
		t.Errorf("leaf not valid now: %v to %v", c.NotBefore, c.NotAfter)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "n.test", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("verify for %v: %v", u, err)
		}
	}
}

// TestSelfSigned: a self-signed certificate for an IP address verifies
// against a pool of itself, and its files load as a TLS key pair in both
// key encodings.
func TestSelfSigned(t *testing.T) {
	c, err := SelfSigned(Spec{Serial: 1, CommonName: "self", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: c.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("verify for 127.0.0.1: %v", err)
	}
	dir := t.TempDir()
	certFile, err := WriteFile(dir, "cert.pem", c.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  func() (*pem.Block, error)
		typ  string
	}{
		{"sec1", c.ECKeyPEM, "EC PRIVATE KEY"},
		{"pkcs8", c.PKCS8KeyPEM, "PRIVATE KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kb, err := tc.key()
			if err != nil {
				t.Fatal(err)
			}
			if kb.Type != tc.typ {
				t.Errorf("key block %q, want %q", kb.Type, tc.typ)
			}
			keyFile, err := WriteFile(dir, tc.name+".key", kb)
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(keyFile); err != nil {
				t.Error(err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
			}
			if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
				t.Error(err)
			}
			// Both in one file, certificate first, as haproxy's crt takes them.
			both, err := WriteFile(dir, tc.name+"-both.pem", c.CertPEM(), kb)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.LoadX509KeyPair(both, both); err != nil {
				t.Error(err)
			}
		})
	}
}
