package tlsrec

import (
	"crypto/tls"
	"io"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// TestMutualTLSAsWeftVerifies runs weft's own downstream handshake
// (tlsctx, as an App Mesh listener with a client policy compiles to: a
// required client certificate, the mesh's trust bundle, a SPIFFE URI SAN
// matcher) through Handshake. The client whose SPIFFE ID matches gets in
// and its identity is in ConnectionState; another ID, another CA's
// certificate or none are refused, and the failures are counted as weft
// counts them.
func TestMutualTLSAsWeftVerifies(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh ca")
	other := tlstest.NewCA(t, "other ca")
	srvLeaf := ca.Issue(t, []string{"server"}, "spiffe://mesh/server")
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	st := stats.NewStore()
	tstats := tlsctx.NewStats(st.Scope("ssl.", "ssl_"))
	store := tlsctx.NewStore(st, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	srv, err := store.Server(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(srvLeaf.CertPEM), PrivateKey: inline(srvLeaf.KeyPEM)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.PEM),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://mesh/front"}}}},
			}},
		}}, "listener.filter_chains[0].transport_socket", tstats)
	if err != nil {
		t.Fatal(err)
	}

	client := func(leaf *tlstest.Leaf) *tls.Config {
		c := &tls.Config{RootCAs: ca.Pool(), ServerName: "server", MinVersion: tls.VersionTLS13}
		if leaf != nil {
			c.Certificates = []tls.Certificate{leaf.TLS(t)}
		}
		return c
	}
	front := ca.Issue(t, nil, "spiffe://mesh/front")
	p, serr, cerr := serve(t, srv.Handshake, client(&front))
	if serr != nil || cerr != nil {
		t.Fatalf("spiffe://mesh/front: server %v, client %v", serr, cerr)
	}
	if certs := p.c.ConnectionState().PeerCertificates; len(certs) == 0 || len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != "spiffe://mesh/front" {
		t.Errorf("peer certificates after the handshake: %v", certs)
	}
	if _, err := p.peer.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	if got := p.feedUntil(t, 2); string(got) != "ok" {
		t.Fatalf("%q", got)
	}

	back := ca.Issue(t, nil, "spiffe://mesh/back")
	stranger := other.Issue(t, nil, "spiffe://mesh/front")
	for _, tc := range []struct {
		name string
		leaf *tlstest.Leaf
		want string // in the server's error
	}{
		{"another SPIFFE ID", &back, "subject alternative name"},
		{"another CA", &stranger, "certificate"},
		{"no certificate", nil, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, serr, _ := serve(t, srv.Handshake, client(tc.leaf))
			if serr == nil || !strings.Contains(serr.Error(), tc.want) {
				t.Fatalf("server handshake: %v, want an error naming %q", serr, tc.want)
			}
			// The client learns of it at its first read at the latest.
			if _, err := p.peer.Read(make([]byte, 1)); err == nil {
				t.Error("the refused client read data")
			}
		})
	}
	for name, want := range map[string]int64{"ssl.handshake": 1, "ssl.fail_verify_san": 1, "ssl.fail_verify_error": 1, "ssl.fail_verify_no_cert": 1} {
		if got, _ := st.Value(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
