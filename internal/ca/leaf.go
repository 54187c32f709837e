package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
)

// DefaultTrustDomain is the SPIFFE trust domain without --trust-domain.
const DefaultTrustDomain = "weft.local"

// SPIFFEID is the URI SAN of a proxy's certificate:
// spiffe://<trust-domain>/mesh/<mesh>/virtualNode/<name> (virtualGateway
// for a gateway).
func SPIFFEID(trustDomain, mesh string, kind appmesh.Kind, name string) string {
	u := url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/mesh/" + mesh + "/" + string(kind) + "/" + name}
	return u.String()
}

// LeafRequest is what a leaf certificate says.
type LeafRequest struct {
	SPIFFEID string   // the URI SAN
	DNSNames []string // the DNS SANs
}

// Leaf is an issued certificate with its key, PEM encoded as Envoy's
// tls_certificate takes them.
type Leaf struct {
	ChainPEM []byte // the leaf, then the signer's intermediates (not the anchor)
	KeyPEM   []byte // PKCS#8
	Serial   *big.Int
	SPIFFEID string
	DNSNames []string
	// NotBefore and NotAfter bound its validity; RenewAt, two thirds into
	// it, is when a new one replaces it.
	NotBefore, NotAfter, RenewAt time.Time
	// Signer is the fingerprint of the root that signed it.
	Signer string
}

// Issue signs a new ECDSA P-256 leaf for req with the signing root,
// valid from now for lifetime (less when the signer expires first).
// now and rnd are inputs: Issue reads no clock.
func (s *State) Issue(rnd io.Reader, now time.Time, lifetime time.Duration, req LeafRequest) (*Leaf, error) {
	if lifetime < MinLeafLifetime {
		return nil, fmt.Errorf("leaf lifetime %v is shorter than %v: %w", lifetime, MinLeafLifetime, ErrInvalid)
	}
	id, err := url.Parse(req.SPIFFEID)
	if err != nil || id.Scheme != "spiffe" || id.Host == "" {
		return nil, fmt.Errorf("SPIFFE ID %q: want spiffe://<trust-domain>/<path>: %w", req.SPIFFEID, ErrInvalid)
	}
	signer := s.SignerRoot()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(signer.Cert.NotAfter) {
		notAfter = signer.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("signing root %s expired at %s: %w", signer.Fingerprint(), signer.Cert.NotAfter.Format(time.RFC3339), ErrInvalid)
	}
	dns := slices.Clone(req.DNSNames)
	slices.Sort(dns)
	dns = slices.Compact(dns)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id},
		DNSNames:              dns,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, signer.Cert, key.Public(), signer.Key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf certificate: %w", err)
	}
	var chain bytes.Buffer
	pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The peer holds the anchor; everything between it and the leaf goes
	// with the leaf.
	above := append([]*x509.Certificate{signer.Cert}, signer.Chain...)
	for _, c := range above {
		if c == signer.Anchor() && selfSigned(c) {
			break
		}
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode leaf key: %w", err)
	}
	return &Leaf{
		ChainPEM:  chain.Bytes(),
		KeyPEM:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		Serial:    serial,
		SPIFFEID:  req.SPIFFEID,
		DNSNames:  dns,
		NotBefore: tmpl.NotBefore,
		NotAfter:  notAfter,
		RenewAt:   now.Add(notAfter.Sub(now) * 2 / 3),
		Signer:    signer.Fingerprint(),
	}, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
