package tlsctx

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func newStore() *Store {
	return NewStore(stats.NewStore(), slog.New(slog.NewTextHandler(io.Discard, nil)), false)
}

func testStats() *Stats { return NewStats(stats.NewStore().Scope("ssl.", "ssl_")) }

// handshake runs a client and a server handshake over a real TCP
// connection and returns the client's and the server's errors.
func handshake(t *testing.T, srv *Server, client *tls.Config) (cerr, serr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() { // one server handshake; ends when it does
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc, err := srv.Handshake(context.Background(), c)
		if err == nil {
			_, _ = tc.Write([]byte("x"))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3 client certificates are checked after the client's
		// handshake ends: read to see the server's verdict.
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	return err, <-done
}

func TestSANMatchers(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	leaf := ca.Issue(t, []string{"*.svc.local", "api.example.com"}, "spiffe://td/ns/a")
	for _, tc := range []struct {
		typ  tlsv3.SubjectAltNameMatcher_SanType
		m    *matcherv3.StringMatcher
		want bool
	}{
		{tlsv3.SubjectAltNameMatcher_DNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "front.svc.local"}}, true},
		{tlsv3.SubjectAltNameMatcher_DNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a.b.svc.local"}}, false},
		{tlsv3.SubjectAltNameMatcher_DNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "API.example.com"}, IgnoreCase: true}, true},
		{tlsv3.SubjectAltNameMatcher_DNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "API.example.com"}}, false},
		{tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/ns/a"}}, true},
		{tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://td/"}}, true},
		{tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "api.example.com"}}, false},
	} {
		ms, err := compileSANs([]*tlsv3.SubjectAltNameMatcher{{SanType: tc.typ, Matcher: tc.m}}, "sans")
		if err != nil {
			t.Fatal(err)
		}
		if got := matches(ms, leaf.Cert); got != tc.want {
			t.Errorf("%v %v: matched %v, want %v", tc.typ, tc.m, got, tc.want)
		}
	}
}

func TestUnsupportedFieldsNACK(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	leaf := ca.Issue(t, []string{"a"})
	cert := []*tlsv3.TlsCertificate{{CertificateChain: inline(leaf.CertPEM), PrivateKey: inline(leaf.KeyPEM)}}
	for _, tc := range []struct {
		d    *tlsv3.DownstreamTlsContext
		want string
	}{
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: cert,
			TlsParams: &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}}}}, "field cipher_suites"},
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: cert,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.PEM), VerifyCertificateHash: []string{"ab"}}}}}, "field verify_certificate_hash"},
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: cert}, RequireClientCertificate: boolValue(true)},
			"require_client_certificate needs a validation context"},
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}, "a server needs tls_certificates"},
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: inline(leaf.CertPEM), PrivateKey: inline(ca.Issue(t, nil).KeyPEM)}}}}, "private key does not match"},
		{&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: cert,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "x"}}}}, "has no static secrets"},
	} {
		_, err := newStore().Server(tc.d, "ctx", testStats())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error with %q", err, tc.want)
		}
	}
}

func TestProtocolVersions(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	leaf := ca.Issue(t, []string{"a"})
	srv, err := newStore().Server(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(leaf.CertPEM), PrivateKey: inline(leaf.KeyPEM)}},
		TlsParams:       &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}}}, "ctx", testStats())
	if err != nil {
		t.Fatal(err)
	}
	if cerr, _ := handshake(t, srv, &tls.Config{RootCAs: ca.Pool(), ServerName: "a", MaxVersion: tls.VersionTLS12}); cerr == nil {
		t.Error("a TLS 1.2 client was served by a TLS 1.3 minimum")
	}
	if cerr, serr := handshake(t, srv, &tls.Config{RootCAs: ca.Pool(), ServerName: "a"}); cerr != nil || serr != nil {
		t.Errorf("TLS 1.3 client: %v / %v", cerr, serr)
	}
}

func TestSecretTypeMismatchRejected(t *testing.T) {
	s := newStore()
	s.secret(FromADS, "leaf", false, "ctx.tls_certificate_sds_secret_configs[0]")
	ca := tlstest.NewCA(t, "ca")
	ms, err := CheckSecrets([]*tlsv3.Secret{{Name: "leaf", Type: &tlsv3.Secret_ValidationContext{
		ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.PEM)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSecrets(FromADS, "v1", ms); err == nil || !strings.Contains(err.Error(), "needs a tls_certificate secret") {
		t.Fatalf("a trust bundle used as a certificate: %v", err)
	}
	if got, _ := s.Missing(FromADS, time.Now()); len(got) != 1 {
		t.Errorf("missing %v, want the secret still missing", got)
	}
}

func boolValue(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }
