package storeurl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"etcd://a:2379,b:2379", "etcd://a:2379,b:2379"},
		{"etcd://a,b:1234/tenant/", "etcd://a:2379,b:1234/tenant"},
		{"bolt:///var/lib/weft/weft.db", "bolt:///var/lib/weft/weft.db"},
		{"weft-data/weft.db", "bolt://weft-data/weft.db"},
	} {
		got, err := Parse(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "etcd://", "etcd://,", "bolt://", "redis://x:6379"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

type pki struct {
	dir                    string
	caCert                 *x509.Certificate
	caKey                  *ecdsa.PrivateKey
	ca, srvCert, srvKey    string
	cliCert, cliKey, other string
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newCA(t *testing.T, dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(dir, name+".pem")
	writePEM(t, path, "CERTIFICATE", der)
	return cert, key, path
}

func (p *pki) leaf(t *testing.T, name string, usage x509.ExtKeyUsage, ips ...net.IP) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cp, kp := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, cp, "CERTIFICATE", der)
	writePEM(t, kp, "EC PRIVATE KEY", kder)
	return cp, kp
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir()}
	p.caCert, p.caKey, p.ca = newCA(t, p.dir, "ca")
	_, _, p.other = newCA(t, p.dir, "other-ca")
	p.srvCert, p.srvKey = p.leaf(t, "etcd", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	p.cliCert, p.cliKey = p.leaf(t, "weft", x509.ExtKeyUsageClientAuth)
	return p
}

func target(c *etcdtest.Cluster) Target {
	t := Target{Kind: "etcd"}
	for _, e := range c.Endpoints() {
		_, host, _ := strings.Cut(e, "://")
		t.Endpoints = append(t.Endpoints, host)
	}
	return t
}

func use(t *testing.T, st store.Store) {
	t.Helper()
	defer st.Close()
	if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put("k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdTLS: with etcd's CA and a client certificate the store works;
// without the certificate, or trusting another CA, it does not open.
func TestEtcdTLS(t *testing.T) {
	p := newPKI(t)
	c := etcdtest.StartTLS(t, 1, &etcdtest.TLS{CertFile: p.srvCert, KeyFile: p.srvKey, ClientCAFile: p.ca})
	tg := target(c)
	open := func(e Etcd) (store.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return Open(ctx, tg, e, nil)
	}
	st, err := open(Etcd{CACert: p.ca, Cert: p.cliCert, Key: p.cliKey})
	if err != nil {
		t.Fatal(err)
	}
	use(t, st)
	if st, err := open(Etcd{CACert: p.ca}); err == nil {
		st.Close()
		t.Fatal("opened without the client certificate etcd requires")
	}
	if st, err := open(Etcd{CACert: p.other, Cert: p.cliCert, Key: p.cliKey}); err == nil {
		st.Close()
		t.Fatal("opened trusting a CA that did not sign etcd's certificate")
	}
	if _, err := open(Etcd{CACert: p.ca, Cert: p.cliCert}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("certificate without key: %v", err)
	}
}

// TestEtcdAuth: with etcd's authentication on, the store opens with the
// user's password only.
func TestEtcdAuth(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	ctx := context.Background()
	if _, err := cli.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	tg := target(c)
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := Open(octx, tg, Etcd{Username: "root", Password: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	use(t, st)
	if st, err := Open(octx, tg, Etcd{}, nil); err == nil {
		st.Close()
		t.Fatal("opened without credentials")
	}
	if st, err := Open(octx, tg, Etcd{Username: "root", Password: "wrong"}, nil); err == nil {
		st.Close()
		t.Fatal("opened with a wrong password")
	}
}
