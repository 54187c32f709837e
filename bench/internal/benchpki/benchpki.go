// Package benchpki makes the benchmarks' throwaway certificates and
// writes them as PEM files: ECDSA P-256 keys, certificates valid from an
// hour ago for a day, self-signed or signed by a CA made the same way.
//
// A benchmark's certificates live as long as its run, in its temporary
// directory, so serials are small fixed numbers and nothing is rotated.
// weft's own CA (internal/ca) issues SPIFFE leaves only, from its own
// kind of root: it makes neither xdsbench's self-signed server
// certificate for an IP address nor the subjects and validity the
// benchmarks' published runs were made with.
package benchpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Validity of every certificate, around the time it is made: the hour
// before covers a peer's clock a little behind, the day any run.
const (
	backdate = time.Hour
	lifetime = 24 * time.Hour
)

// Spec is what a leaf certificate says. Its key usage is always digital
// signature, as ECDSA keys sign the TLS handshake.
type Spec struct {
	Serial      int64
	CommonName  string
	DNSNames    []string
	IPs         []net.IP
	URIs        []string // URI SANs, e.g. SPIFFE IDs
	ExtKeyUsage []x509.ExtKeyUsage
}

// Cert is a certificate and its private key. Neither is modified after
// it is made.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a self-signed CA certificate named name, which may only
// sign certificates.
func NewCA(serial int64, name string) (*Cert, error) {
	tmpl := template(serial, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign
	c, err := create(tmpl, nil)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", name, err)
	}
	return c, nil
}

// SelfSigned returns a leaf certificate signed by its own key.
func SelfSigned(s Spec) (*Cert, error) {
	tmpl, err := s.template()
	if err != nil {
		return nil, err
	}
	c, err := create(tmpl, nil)
	if err != nil {
		return nil, fmt.Errorf("create self-signed certificate %q: %w", s.CommonName, err)
	}
	return c, nil
}

// Issue returns a leaf certificate signed by ca.
func (ca *Cert) Issue(s Spec) (*Cert, error) {
	tmpl, err := s.template()
	if err != nil {
		return nil, err
	}
	c, err := create(tmpl, ca)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", s.CommonName, err)
	}
	return c, nil
}

// CertPEM is the certificate as a PEM block.
func (c *Cert) CertPEM() *pem.Block {
	return &pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}
}

// PKCS8KeyPEM is the private key as a PEM PKCS#8 block (PRIVATE KEY).
func (c *Cert) PKCS8KeyPEM() (*pem.Block, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, nil
}

// ECKeyPEM is the private key as a PEM SEC 1 block (EC PRIVATE KEY).
func (c *Cert) ECKeyPEM() (*pem.Block, error) {
	der, err := x509.MarshalECPrivateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}, nil
}

// Pool is a certificate pool holding only c.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// WriteFile writes blocks, in order, to dir/name, readable by its owner
// only, and returns the path.
func WriteFile(dir, name string, blocks ...*pem.Block) (string, error) {
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return "", err
	}
	return p, nil
}

func template(serial int64, cn string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(lifetime),
	}
}

func (s Spec) template() (*x509.Certificate, error) {
	tmpl := template(s.Serial, s.CommonName)
	tmpl.DNSNames, tmpl.IPAddresses, tmpl.ExtKeyUsage = s.DNSNames, s.IPs, s.ExtKeyUsage
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	for _, u := range s.URIs {
		p, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("certificate %q: URI SAN: %w", s.CommonName, err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	return tmpl, nil
}

// create makes a new key and the certificate tmpl describes for it,
// signed by parent, or by the new key itself when parent is nil.
func create(tmpl *x509.Certificate, parent *Cert) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key}, nil
}
