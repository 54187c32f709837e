// Package ca is the mesh's certificate authority: the roots it trusts and
// signs with, kept in the store, and the leaf certificates it issues to
// proxies (SPIFFE IDs of their virtual node or gateway, served over SDS
// by the xDS server).
//
// State is the pure part: what the store holds, decoded, and issuing from
// it; time and randomness are inputs. Authority (authority.go) is the
// stateful part weft server runs: it creates or imports the CA at first
// start, rotates it, and serves /v1/ca (http.go).
//
// Store layout: one key, written in one transaction at every change.
//
//	weft/ca/state   JSON of storedState: every root's certificate chain
//	                and private key (PEM), and which root signs
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"time"
)

// KeyPrefix is the store prefix of the CA's state; StateKey is its one key.
const (
	KeyPrefix = "weft/ca/"
	StateKey  = KeyPrefix + "state"
)

// Limits and defaults.
const (
	// MaxRoots is how many roots the CA holds at once: the one signing,
	// one being introduced, and room for an import during a rotation.
	MaxRoots = 4
	// RootLifetime is the validity of a generated root.
	RootLifetime = 10 * 365 * 24 * time.Hour
	// DefaultLeafLifetime is a leaf certificate's validity.
	DefaultLeafLifetime = 24 * time.Hour
	// MinLeafLifetime is the shortest lifetime a leaf may be given.
	MinLeafLifetime = time.Second
	// backdate is how far before issuance a certificate becomes valid,
	// for peers whose clocks are a little behind.
	backdate = time.Minute
)

// Root is one CA the mesh trusts: a signing certificate, the chain above
// it (for an imported intermediate) and its private key.
type Root struct {
	// Cert is the certificate that signs leaves; Chain the certificates
	// above it, in order, the last one being the trust anchor when it is
	// self-signed. A generated root has no Chain.
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	Key   crypto.Signer
	Added time.Time
	// Imported is false for a root weft generated.
	Imported bool
}

// Fingerprint is the lower-case hex SHA-256 of the signing certificate.
func (r *Root) Fingerprint() string { return Fingerprint(r.Cert) }

// Fingerprint is the lower-case hex SHA-256 of a certificate's DER.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// Anchor is the certificate a peer trusts for this root: the last of the
// chain, or the signing certificate itself.
func (r *Root) Anchor() *x509.Certificate {
	if len(r.Chain) > 0 {
		return r.Chain[len(r.Chain)-1]
	}
	return r.Cert
}

// State is the CA as the store holds it. A State is never modified once
// built: the methods that change it return a new one.
type State struct {
	Roots  []*Root // in the order they were introduced
	Signer int     // index in Roots of the root that signs leaves
}

// SignerRoot is the root that signs leaves.
func (s *State) SignerRoot() *Root { return s.Roots[s.Signer] }

// Bundle is the PEM of every root's trust anchor, in order, each once:
// what a validation context trusts.
func (s *State) Bundle() []byte {
	var buf bytes.Buffer
	seen := map[string]bool{}
	for _, r := range s.Roots {
		a := r.Anchor()
		if fp := Fingerprint(a); !seen[fp] {
			seen[fp] = true
			pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})
		}
	}
	return buf.Bytes()
}

// Pool is the bundle as a certificate pool.
func (s *State) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range s.Roots {
		p.AddCert(r.Anchor())
	}
	return p
}

// Find returns the index of the root whose fingerprint is fp or starts
// with it (at least 8 hex digits, and unambiguous).
func (s *State) Find(fp string) (int, error) {
	if len(fp) < 8 {
		return -1, fmt.Errorf("fingerprint %q: give at least 8 hex digits: %w", fp, ErrInvalid)
	}
	found := -1
	for i, r := range s.Roots {
		if len(r.Fingerprint()) >= len(fp) && r.Fingerprint()[:len(fp)] == fp {
			if found >= 0 {
				return -1, fmt.Errorf("fingerprint %q names several roots: %w", fp, ErrConflict)
			}
			found = i
		}
	}
	if found < 0 {
		return -1, fmt.Errorf("no root with fingerprint %q: %w", fp, ErrNotFound)
	}
	return found, nil
}

// Errors of the rotation steps, wrapped.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// WithRoot is s with r introduced (trusted, not signing).
func (s *State) WithRoot(r *Root) (*State, error) {
	if len(s.Roots) >= MaxRoots {
		return nil, fmt.Errorf("the CA already holds %d roots, the most it may; remove one first: %w", MaxRoots, ErrConflict)
	}
	for _, o := range s.Roots {
		if o.Fingerprint() == r.Fingerprint() {
			return nil, fmt.Errorf("root %s is already trusted: %w", r.Fingerprint(), ErrConflict)
		}
	}
	return &State{Roots: append(slices.Clone(s.Roots), r), Signer: s.Signer}, nil
}

// Activated is s with root i signing, which must be valid at now.
func (s *State) Activated(i int, now time.Time) (*State, error) {
	if c := s.Roots[i].Cert; now.After(c.NotAfter) || now.Before(c.NotBefore) {
		return nil, fmt.Errorf("root %s is not valid now (%s to %s): %w", s.Roots[i].Fingerprint(), c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), ErrInvalid)
	}
	return &State{Roots: s.Roots, Signer: i}, nil
}

// Without is s without root i, which must not be the signer.
func (s *State) Without(i int) (*State, error) {
	if i == s.Signer {
		return nil, fmt.Errorf("root %s signs the leaf certificates: activate another root first: %w", s.Roots[i].Fingerprint(), ErrConflict)
	}
	n := &State{Roots: slices.Delete(slices.Clone(s.Roots), i, i+1), Signer: s.Signer}
	if i < s.Signer {
		n.Signer--
	}
	return n, nil
}

// NewRoot generates a self-signed ECDSA P-256 root valid for RootLifetime.
func NewRoot(rnd io.Reader, now time.Time, trustDomain string) (*Root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft mesh CA " + trustDomain + " " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if u, err := url.Parse("spiffe://" + trustDomain); err == nil {
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return &Root{Cert: cert, Key: key, Added: now}, nil
}

// ParseRoot reads an existing CA to import: certPEM holds the signing
// certificate first, then optionally the certificates above it up to the
// root; keyPEM the signing certificate's private key (PKCS#8, SEC 1 EC or
// PKCS#1 RSA). The certificate must be a CA valid at now, and the key
// must match it.
func ParseRoot(certPEM, keyPEM []byte, now time.Time) (*Root, error) {
	var certs []*x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w: %w", err, ErrInvalid)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("CA certificate: no PEM CERTIFICATE block: %w", ErrInvalid)
	}
	c := certs[0]
	if !c.BasicConstraintsValid || !c.IsCA {
		return nil, fmt.Errorf("CA certificate %q is not a CA (basic constraints): %w", c.Subject, ErrInvalid)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %q may not sign certificates (key usage): %w", c.Subject, ErrInvalid)
	}
	if now.After(c.NotAfter) || now.Before(c.NotBefore) {
		return nil, fmt.Errorf("CA certificate %q is not valid now (%s to %s): %w", c.Subject, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), ErrInvalid)
	}
	for i := 1; i < len(certs); i++ {
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return nil, fmt.Errorf("CA certificate chain: certificate %d is not signed by certificate %d: %w: %w", i, i+1, err, ErrInvalid)
		}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(key.Public(), c.PublicKey) {
		return nil, fmt.Errorf("CA private key does not match the certificate %q: %w", c.Subject, ErrInvalid)
	}
	return &Root{Cert: c, Chain: certs[1:], Key: key, Added: now, Imported: true}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("CA private key: no PEM PRIVATE KEY block: %w", ErrInvalid)
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("CA private key: %w: %w", err, ErrInvalid)
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("CA private key: %T is neither ECDSA nor RSA: %w", k, ErrInvalid)
	}
}

func newSerial(rnd io.Reader) (*big.Int, error) {
	s, err := randInt(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

// randInt is a uniform integer in [0, max) read from rnd.
func randInt(rnd io.Reader, max *big.Int) (*big.Int, error) {
	b := make([]byte, (max.BitLen()+7)/8)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(b)
	return n.Mod(n, max), nil
}

// storedState is the JSON of the state key.
type storedState struct {
	Roots []storedRoot `json:"roots"`
	// Signer is the fingerprint of the signing root.
	Signer string `json:"signer"`
}

type storedRoot struct {
	Cert     string    `json:"certificate"` // PEM: signing certificate, then its chain
	Key      string    `json:"privateKey"`  // PEM PKCS#8
	Added    time.Time `json:"added"`
	Imported bool      `json:"imported,omitempty"`
}

// Encode is the state's store value.
func (s *State) Encode() ([]byte, error) {
	out := storedState{Signer: s.SignerRoot().Fingerprint()}
	for _, r := range s.Roots {
		var cert bytes.Buffer
		pem.Encode(&cert, &pem.Block{Type: "CERTIFICATE", Bytes: r.Cert.Raw})
		for _, c := range r.Chain {
			pem.Encode(&cert, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		der, err := x509.MarshalPKCS8PrivateKey(r.Key)
		if err != nil {
			return nil, fmt.Errorf("encode root key: %w", err)
		}
		key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		out.Roots = append(out.Roots, storedRoot{Cert: cert.String(), Key: string(key), Added: r.Added, Imported: r.Imported})
	}
	return json.Marshal(out)
}

// Decode reads a state key's value.
func Decode(value []byte) (*State, error) {
	var in storedState
	if err := json.Unmarshal(value, &in); err != nil {
		return nil, fmt.Errorf("decode CA state: %w", err)
	}
	s := &State{Signer: -1}
	for i, sr := range in.Roots {
		var certs []*x509.Certificate
		for rest := []byte(sr.Cert); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("decode CA state: root %d: %w", i, err)
			}
			certs = append(certs, c)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("decode CA state: root %d has no certificate", i)
		}
		key, err := parseKey([]byte(sr.Key))
		if err != nil {
			return nil, fmt.Errorf("decode CA state: root %d: %w", i, err)
		}
		r := &Root{Cert: certs[0], Chain: certs[1:], Key: key, Added: sr.Added, Imported: sr.Imported}
		if r.Fingerprint() == in.Signer {
			s.Signer = i
		}
		s.Roots = append(s.Roots, r)
	}
	if s.Signer < 0 {
		return nil, fmt.Errorf("decode CA state: signer %q is not among the roots", in.Signer)
	}
	return s, nil
}
