package server

import (
	"crypto/x509"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// BenchmarkXDSStreamSetup: a new connection (TLS), an ADS stream, its
// first request and the first response, with each kind of proof. The
// server runs in this process. Results in docs/bench/xds.md.
func BenchmarkXDSStreamSetup(b *testing.B) {
	ca, caKey := testCA(b)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	open := newXDSEnv(b, "", true, nil)
	e := newXDSEnv(b, authFile, true, pool)
	node := "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/a"
	now := time.Now()
	tok, err := e.sec.tokens.Mint(node, now, now.Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	cert := clientCert(b, ca, caKey, "spiffe://weft.local/mesh/m/virtualNode/a")
	for _, c := range []struct {
		name string
		env  *xdsEnv
		run  func() error
	}{
		{"none", open, func() error { _, err := open.stream(b, node, nil); return err }},
		{"join-token", e, func() error {
			_, err := e.stream(b, node, nil, grpc.WithPerRPCCredentials(bearer(tok)))
			return err
		}},
		{"sigv4", e, func() error {
			_, err := e.stream(b, node, nil, grpc.WithPerRPCCredentials(envoySigV4{"AKIDADMIN", "admin-secret"}))
			return err
		}},
		{"client-cert", e, func() error { _, err := e.stream(b, node, &cert); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
