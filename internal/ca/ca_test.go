package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store/bolt"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func newState(t *testing.T, now time.Time) *State {
	t.Helper()
	r, err := NewRoot(rand.Reader, now, "weft.local")
	if err != nil {
		t.Fatal(err)
	}
	return &State{Roots: []*Root{r}}
}

// verify checks a leaf chain against a PEM bundle, as a peer does at now.
func verify(t *testing.T, l *Leaf, bundle []byte, now time.Time) error {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("bundle holds no certificate")
	}
	cert, err := tls.X509KeyPair(l.ChainPEM, l.KeyPEM)
	if err != nil {
		t.Fatalf("leaf chain and key do not pair: %v", err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	return err
}

func parseLeaf(t *testing.T, l *Leaf) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(l.ChainPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssue(t *testing.T) {
	s := newState(t, t0)
	id := SPIFFEID("weft.local", "m", appmesh.KindVirtualNode, "red")
	if id != "spiffe://weft.local/mesh/m/virtualNode/red" {
		t.Fatalf("SPIFFE ID %s", id)
	}
	now := t0.Add(time.Hour)
	l, err := s.Issue(rand.Reader, now, DefaultLeafLifetime, LeafRequest{SPIFFEID: id, DNSNames: []string{"red.m.local", "color.local", "red.m.local"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(t, l, s.Bundle(), now); err != nil {
		t.Fatalf("leaf does not verify against the bundle: %v", err)
	}
	c := parseLeaf(t, l)
	if len(c.URIs) != 1 || c.URIs[0].String() != id {
		t.Fatalf("URI SANs %v, want %s", c.URIs, id)
	}
	if !slices.Equal(c.DNSNames, []string{"color.local", "red.m.local"}) {
		t.Fatalf("DNS SANs %v", c.DNSNames)
	}
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Fatalf("leaf key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.IsCA {
		t.Fatal("leaf is a CA")
	}
	if !c.NotAfter.Equal(now.Add(24*time.Hour)) || c.SerialNumber.Cmp(l.Serial) != 0 {
		t.Fatalf("not after %v, serial %v", c.NotAfter, c.SerialNumber)
	}
	// Renewed two thirds into its life: 16 h after issuance.
	if want := now.Add(16 * time.Hour); !l.RenewAt.Equal(want) {
		t.Fatalf("renew at %v, want %v", l.RenewAt, want)
	}
	// Expired a day later, not before.
	if err := verify(t, l, s.Bundle(), now.Add(25*time.Hour)); err == nil {
		t.Fatal("an expired leaf verifies")
	}
	// A second leaf has another key and serial.
	l2, err := s.Issue(rand.Reader, now, time.Hour, LeafRequest{SPIFFEID: id})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Serial.Cmp(l.Serial) == 0 || bytes.Equal(l2.KeyPEM, l.KeyPEM) {
		t.Fatal("two leaves share a serial or key")
	}
	if !l2.RenewAt.Equal(now.Add(40 * time.Minute)) {
		t.Fatalf("1 h leaf renews at %v", l2.RenewAt)
	}
	// Bad input.
	if _, err := s.Issue(rand.Reader, now, time.Millisecond, LeafRequest{SPIFFEID: id}); err == nil {
		t.Fatal("a 1 ms lifetime was accepted")
	}
	if _, err := s.Issue(rand.Reader, now, time.Hour, LeafRequest{SPIFFEID: "https://x/y"}); err == nil {
		t.Fatal("a non-SPIFFE ID was accepted")
	}
}

// A leaf never outlives its signer.
func TestIssueCappedBySigner(t *testing.T) {
	s := newState(t, t0)
	end := s.SignerRoot().Cert.NotAfter
	l, err := s.Issue(rand.Reader, end.Add(-time.Hour), 24*time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/x"})
	if err != nil {
		t.Fatal(err)
	}
	if !l.NotAfter.Equal(end) {
		t.Fatalf("leaf ends %v, signer %v", l.NotAfter, end)
	}
	if _, err := s.Issue(rand.Reader, end.Add(time.Hour), 24*time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/x"}); err == nil {
		t.Fatal("an expired signer issued")
	}
}

// externalCA is a private CA as a user has one: a root, and an
// intermediate that signs, each with an RSA or ECDSA key.
func externalCA(t *testing.T) (rootCert *x509.Certificate, interPEM, interKeyPEM []byte) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Corp Root"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, rt, rt, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ = x509.ParseCertificate(der)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Example Corp Mesh Intermediate"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ider, err := x509.CreateCertificate(rand.Reader, it, rootCert, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	interPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ider}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	kder, _ := x509.MarshalECPrivateKey(interKey)
	return rootCert, interPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestImportIntermediate(t *testing.T) {
	root, certPEM, keyPEM := externalCA(t)
	r, err := ParseRoot(certPEM, keyPEM, t0)
	if err != nil {
		t.Fatal(err)
	}
	s := &State{Roots: []*Root{r}}
	// The bundle is the external root, not the intermediate.
	if Fingerprint(r.Anchor()) != Fingerprint(root) {
		t.Fatal("anchor is not the external root")
	}
	l, err := s.Issue(rand.Reader, t0, time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/mesh/m/virtualNode/a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(t, l, s.Bundle(), t0); err != nil {
		t.Fatalf("leaf of an imported intermediate: %v", err)
	}
	if n := strings.Count(string(l.ChainPEM), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("leaf chain holds %d certificates, want leaf + intermediate", n)
	}
	// Bad imports.
	for name, tc := range map[string][2][]byte{
		"no certificate": {nil, keyPEM},
		"garbage":        {[]byte("not pem"), keyPEM},
		"no key":         {certPEM, nil},
		"wrong key":      {certPEM, mustKeyPEM(t)},
		"not a CA":       {leafPEM(t, s), keyPEM},
	} {
		if _, err := ParseRoot(tc[0], tc[1], t0); err == nil {
			t.Errorf("%s: imported", name)
		}
	}
	if _, err := ParseRoot(certPEM, keyPEM, t0.Add(2*365*24*time.Hour)); err == nil {
		t.Error("an expired CA was imported")
	}
}

func mustKeyPEM(t *testing.T) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func leafPEM(t *testing.T, s *State) []byte {
	l, err := s.Issue(rand.Reader, t0, time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/x"})
	if err != nil {
		t.Fatal(err)
	}
	return l.ChainPEM
}

func bundleFingerprints(t *testing.T, bundle []byte) []string {
	t.Helper()
	var out []string
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Fingerprint(c))
	}
}

func TestRotationSteps(t *testing.T) {
	s0 := newState(t, t0)
	old := s0.SignerRoot()
	oldLeaf, err := s0.Issue(rand.Reader, t0, 24*time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/a"})
	if err != nil {
		t.Fatal(err)
	}
	next, err := NewRoot(rand.Reader, t0, "weft.local")
	if err != nil {
		t.Fatal(err)
	}
	// 1: both in the bundle, the old one signs.
	s1, err := s0.WithRoot(next)
	if err != nil {
		t.Fatal(err)
	}
	if got := bundleFingerprints(t, s1.Bundle()); !slices.Equal(got, []string{old.Fingerprint(), next.Fingerprint()}) {
		t.Fatalf("step 1 bundle %v", got)
	}
	if s1.SignerRoot() != old {
		t.Fatal("step 1 changed the signer")
	}
	if _, err := s1.WithRoot(next); err == nil {
		t.Fatal("the same root was added twice")
	}
	if _, err := s1.Without(0); err == nil {
		t.Fatal("the signer was removed")
	}
	// 2: the new one signs; leaves of both verify against the bundle.
	i, err := s1.Find(next.Fingerprint()[:12])
	if err != nil || i != 1 {
		t.Fatalf("find by prefix: %d %v", i, err)
	}
	s2, err := s1.Activated(i, t0)
	if err != nil {
		t.Fatal(err)
	}
	newLeaf, err := s2.Issue(rand.Reader, t0, 24*time.Hour, LeafRequest{SPIFFEID: "spiffe://weft.local/b"})
	if err != nil {
		t.Fatal(err)
	}
	if newLeaf.Signer != next.Fingerprint() {
		t.Fatal("step 2 leaf not signed by the new root")
	}
	for _, l := range []*Leaf{oldLeaf, newLeaf} {
		if err := verify(t, l, s2.Bundle(), t0); err != nil {
			t.Fatalf("step 2: leaf of %s does not verify: %v", l.Signer, err)
		}
	}
	// 3: the old root leaves the bundle; its leaves stop verifying.
	s3, err := s2.Without(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bundleFingerprints(t, s3.Bundle()); !slices.Equal(got, []string{next.Fingerprint()}) {
		t.Fatalf("step 3 bundle %v", got)
	}
	if s3.SignerRoot() != next {
		t.Fatal("step 3 signer")
	}
	if err := verify(t, oldLeaf, s3.Bundle(), t0); err == nil {
		t.Fatal("a leaf of the removed root still verifies")
	}
	if err := verify(t, newLeaf, s3.Bundle(), t0); err != nil {
		t.Fatal(err)
	}
	// The states before are unchanged.
	if len(s0.Roots) != 1 || len(s1.Roots) != 2 || s1.Signer != 0 {
		t.Fatal("a step modified its input")
	}
	if _, err := s3.Find("0000"); err == nil {
		t.Fatal("a 4-digit prefix was accepted")
	}
}

func TestEncodeDecode(t *testing.T) {
	_, certPEM, keyPEM := externalCA(t)
	imp, err := ParseRoot(certPEM, keyPEM, t0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newState(t, t0).WithRoot(imp)
	if err != nil {
		t.Fatal(err)
	}
	s, _ = s.Activated(1, t0)
	v, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(v)
	if err != nil {
		t.Fatal(err)
	}
	if d.Signer != 1 || len(d.Roots) != 2 || d.Roots[1].Fingerprint() != imp.Fingerprint() || len(d.Roots[1].Chain) != 1 || !d.Roots[1].Imported {
		t.Fatalf("decoded %+v", d)
	}
	if !bytes.Equal(d.Bundle(), s.Bundle()) {
		t.Fatal("bundle changed through the store")
	}
	if _, err := Decode([]byte(`{"roots":[],"signer":"x"}`)); err == nil {
		t.Fatal("a state without its signer decoded")
	}
}

// The Authority end to end on a real store: created once, kept across
// restarts, rotated through its HTTP endpoints, never serving a key; the
// store file is readable by its owner only.
func TestAuthority(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "weft.db")
	st, err := bolt.Open(path, bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	a, err := Open(ctx, st, Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	first := a.State().SignerRoot().Fingerprint()
	a2, err := Open(ctx, st, Config{TrustDomain: "weft.local"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if a2.State().SignerRoot().Fingerprint() != first {
		t.Fatal("a second start made another CA")
	}
	// Importing into a store that has a CA is refused, and says how.
	_, certPEM, keyPEM := externalCA(t)
	if _, err := Open(ctx, st, Config{ImportCert: certPEM, ImportKey: keyPEM, Now: func() time.Time { return t0 }}, log); err == nil || !strings.Contains(err.Error(), "add-root") {
		t.Fatalf("import over an existing CA: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v, want 0600", fi.Mode().Perm())
	}

	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	do := func(method, path, body string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Fatalf("%s %s served a private key", method, path)
		}
		return b
	}
	status := func() Status {
		var s Status
		if err := json.Unmarshal(do("GET", "/v1/ca", "", 200), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := status(); len(s.Roots) != 1 || !s.Roots[0].Signing || s.Roots[0].Fingerprint != first || s.TrustDomain != "weft.local" {
		t.Fatalf("status %+v", s)
	}
	var added RootStatus
	json.Unmarshal(do("POST", "/v1/ca/roots", "", 201), &added)
	pool1 := a.TrustPool()
	// An import through the API, then bad input changing nothing.
	body, _ := json.Marshal(AddRootRequest{Certificate: string(certPEM), PrivateKey: string(keyPEM)})
	do("POST", "/v1/ca/roots", string(body), 201)
	do("POST", "/v1/ca/roots", `{"certificate":"x"}`, 400)
	do("POST", "/v1/ca/roots", `{"bogus":1}`, 400)
	do("POST", "/v1/ca/roots/"+first+"/activate", "", 200)
	do("DELETE", "/v1/ca/roots/"+first, "", 409) // it signs
	do("POST", "/v1/ca/roots/ffffffffff/activate", "", 404)
	do("POST", "/v1/ca/roots/ffff/activate", "", 400) // too short to name a root
	if s := status(); len(s.Roots) != 3 {
		t.Fatalf("status after bad input %+v", s)
	}
	do("POST", "/v1/ca/roots/"+added.Fingerprint[:10]+"/activate", "", 200)
	do("DELETE", "/v1/ca/roots/"+first, "", 200)
	s := status()
	if len(s.Roots) != 2 || s.Roots[0].Fingerprint != added.Fingerprint || !s.Roots[0].Signing {
		t.Fatalf("status after rotation %+v", s)
	}
	if pool1.Equal(a.TrustPool()) {
		t.Fatal("TrustPool did not follow the rotation")
	}
	// A restart reads the rotated CA.
	a3, err := Open(ctx, st, Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if a3.State().SignerRoot().Fingerprint() != added.Fingerprint {
		t.Fatal("rotation lost across a restart")
	}
}

// BenchmarkIssue is the cost of one leaf: a P-256 key, a signature, PEM.
func BenchmarkIssue(b *testing.B) {
	r, err := NewRoot(rand.Reader, t0, "weft.local")
	if err != nil {
		b.Fatal(err)
	}
	s := &State{Roots: []*Root{r}}
	req := LeafRequest{SPIFFEID: "spiffe://weft.local/mesh/m/virtualNode/red", DNSNames: []string{"red.m.local", "red.local"}}
	for b.Loop() {
		if _, err := s.Issue(rand.Reader, t0, DefaultLeafLifetime, req); err != nil {
			b.Fatal(err)
		}
	}
}
