package tlsctx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Stats are Envoy's ssl.* stats of one listener or cluster.
type Stats struct {
	Handshake, ConnectionError, SessionReused, NoCertificate *stats.Counter
	FailVerifyNoCert, FailVerifyError, FailVerifySAN         *stats.Counter
}

// NewStats returns the ssl.* stats under sc (e.g. the scope
// "listener.0.0.0.0_15000.ssl." / "envoy_listener_ssl_").
func NewStats(sc stats.Scope) *Stats {
	return &Stats{Handshake: sc.Counter("handshake"), ConnectionError: sc.Counter("connection_error"),
		SessionReused: sc.Counter("session_reused"), NoCertificate: sc.Counter("no_certificate"),
		FailVerifyNoCert: sc.Counter("fail_verify_no_cert"), FailVerifyError: sc.Counter("fail_verify_error"),
		FailVerifySAN: sc.Counter("fail_verify_san")}
}

// snapshot is the material a tls.Config was built from.
type snapshot struct {
	certs []*Material
	trust *Material
	cfg   *tls.Config
}

func (s *snapshot) same(certs []*Material, trust *Material) bool {
	return s != nil && s.trust == trust && slices.Equal(s.certs, certs)
}

// material returns the current certificates and trust of c, or an error
// naming what has not arrived.
func (c *common) material() ([]*Material, *Material, error) {
	certs := make([]*Material, 0, len(c.certs)+len(c.static))
	for _, e := range c.certs {
		m := e.Load()
		if m == nil {
			return nil, nil, fmt.Errorf("%w: certificate secret %q (%s) has not arrived", errNotReady, e.name, e.src)
		}
		certs = append(certs, m)
	}
	certs = append(certs, c.static...)
	trust := c.staticCA
	if c.trust != nil {
		if trust = c.trust.Load(); trust == nil {
			return nil, nil, fmt.Errorf("%w: validation secret %q (%s) has not arrived", errNotReady, c.trust.name, c.trust.src)
		}
	}
	return certs, trust, nil
}

// sans returns the SAN matchers of the default validation context merged
// with a validation secret's, as Envoy merges them.
func (c *common) sans(trust *Material) []sanMatcher {
	vc := c.vc
	if trust != nil && trust.VC != nil {
		if vc == nil {
			vc = &tlsv3.CertificateValidationContext{}
		} else {
			vc = proto.Clone(vc).(*tlsv3.CertificateValidationContext)
		}
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, trust.VC.GetMatchTypedSubjectAltNames()...)
	}
	ms, _ := compileSANs(vc.GetMatchTypedSubjectAltNames(), "") // checked when compiled
	return ms
}

// verifier returns a VerifyConnection that checks the peer's chain and
// SANs and counts failures. require makes a missing certificate fail.
func verifier(roots *x509.CertPool, sans []sanMatcher, require bool, st *Stats) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if require {
				st.FailVerifyNoCert.Inc()
				return errNoCert
			}
			return nil
		}
		err := verifyChain(cs.PeerCertificates, roots, sans)
		switch {
		case err == nil:
		case errors.Is(err, errSAN):
			st.FailVerifySAN.Inc()
		default:
			st.FailVerifyError.Inc()
		}
		return err
	}
}

// Server is a compiled DownstreamTlsContext.
type Server struct {
	c       *common
	require bool
	tickets bool
	stats   *Stats
	base    *tls.Config
	cur     atomic.Pointer[snapshot]
}

// Server compiles a listener filter chain's DownstreamTlsContext.
func (s *Store) Server(d *tlsv3.DownstreamTlsContext, path string, st *Stats) (*Server, error) {
	// Session ticket keys are crypto/tls's own (rotated by it).
	if err := strict.Fields(d, path, "common_tls_context", "require_client_certificate",
		"disable_stateless_session_resumption"); err != nil {
		return nil, err
	}
	c, err := s.compileCommon(d.GetCommonTlsContext(), path+".common_tls_context")
	if err != nil {
		return nil, err
	}
	if len(c.certs)+len(c.static) == 0 {
		return nil, fmt.Errorf("%s.common_tls_context: a server needs tls_certificates or tls_certificate_sds_secret_configs", path)
	}
	hasTrust := c.trust != nil || c.staticCA != nil
	srv := &Server{c: c, require: d.GetRequireClientCertificate().GetValue(), stats: st,
		tickets: !d.GetDisableStatelessSessionResumption()}
	if srv.require && !hasTrust {
		return nil, fmt.Errorf("%s: require_client_certificate needs a validation context to check the certificate against", path)
	}
	srv.base = &tls.Config{GetConfigForClient: srv.configFor, SessionTicketsDisabled: !srv.tickets}
	return srv, nil
}

// configFor returns the tls.Config for the current material, built once
// per material version.
func (srv *Server) configFor(*tls.ClientHelloInfo) (*tls.Config, error) {
	certs, trust, err := srv.c.material()
	if err != nil {
		return nil, err
	}
	if cur := srv.cur.Load(); cur.same(certs, trust) {
		return cur.cfg, nil
	}
	cfg := &tls.Config{MinVersion: srv.c.minV, MaxVersion: srv.c.maxV, NextProtos: srv.c.alpn,
		SessionTicketsDisabled: !srv.tickets}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	for _, m := range certs {
		cfg.Certificates = append(cfg.Certificates, *m.Cert)
	}
	if trust != nil {
		// Verified by weft (not crypto/tls) to count each failure as
		// Envoy does; a certificate is always asked for.
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = verifier(trust.Roots, srv.c.sans(trust), srv.require, srv.stats)
	}
	srv.cur.Store(&snapshot{certs: certs, trust: trust, cfg: cfg})
	return cfg, nil
}

// Handshake runs the server side of a TLS handshake on c within
// HandshakeTimeout (or ctx) and counts it.
func (srv *Server) Handshake(ctx context.Context, c net.Conn) (net.Conn, error) {
	tc := tls.Server(c, srv.base)
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		srv.stats.ConnectionError.Inc()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	srv.stats.Handshake.Inc()
	if cs.DidResume {
		srv.stats.SessionReused.Inc()
	}
	if len(cs.PeerCertificates) == 0 {
		srv.stats.NoCertificate.Inc()
	}
	return tc, nil
}

// ALPN says which protocols an upstream connection offers.
type ALPN uint8

// ALPN choices: the context's alpn_protocols, or the one protocol of the
// HTTP pool the connection is for (as Envoy overrides ALPN per pool).
const (
	ALPNConfigured ALPN = iota
	ALPNH2
	ALPNHTTP11
)

// Client is a compiled UpstreamTlsContext.
type Client struct {
	c        *common
	sni      string
	reneg    tls.RenegotiationSupport
	sessions tls.ClientSessionCache // nil: no resumption
	stats    *Stats
	cur      [3]atomic.Pointer[snapshot] // by ALPN
}

// Client compiles a cluster's UpstreamTlsContext.
func (s *Store) Client(u *tlsv3.UpstreamTlsContext, path string, st *Stats) (*Client, error) {
	if err := strict.Fields(u, path, "common_tls_context", "sni", "allow_renegotiation", "max_session_keys"); err != nil {
		return nil, err
	}
	c, err := s.compileCommon(u.GetCommonTlsContext(), path+".common_tls_context")
	if err != nil {
		return nil, err
	}
	cl := &Client{c: c, sni: u.GetSni(), stats: st}
	if u.GetAllowRenegotiation() {
		cl.reneg = tls.RenegotiateFreelyAsClient
	}
	n := 1 // Envoy's default max_session_keys
	if v := u.GetMaxSessionKeys(); v != nil {
		n = int(v.GetValue())
	}
	if n > 0 {
		cl.sessions = tls.NewLRUClientSessionCache(n)
	}
	return cl, nil
}

func (cl *Client) config(alpn ALPN) (*tls.Config, error) {
	certs, trust, err := cl.c.material()
	if err != nil {
		return nil, err
	}
	if cur := cl.cur[alpn].Load(); cur.same(certs, trust) {
		return cur.cfg, nil
	}
	cfg := &tls.Config{ServerName: cl.sni, MinVersion: cl.c.minV, MaxVersion: cl.c.maxV,
		Renegotiation: cl.reneg, ClientSessionCache: cl.sessions,
		// Verified below (with Envoy's stats) when the context has a
		// validation context; without one Envoy does not verify either.
		InsecureSkipVerify: true}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	switch alpn {
	case ALPNH2:
		cfg.NextProtos = []string{"h2"}
	case ALPNHTTP11:
		cfg.NextProtos = []string{"http/1.1"}
	default:
		cfg.NextProtos = cl.c.alpn
	}
	if len(certs) > 0 {
		cert := certs[0].Cert
		// The certificate is sent whatever CA names the server lists, as
		// Envoy does.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if trust != nil {
		verify := verifier(trust.Roots, cl.c.sans(trust), true, cl.stats)
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				return verifyFailed{err} // CERTIFICATE_VERIFY_FAILED (handshakeFailure)
			}
			return nil
		}
	}
	cl.cur[alpn].Store(&snapshot{certs: certs, trust: trust, cfg: cfg})
	return cfg, nil
}

// Handshake runs the client side of a TLS handshake on c until ctx ends
// (the cluster's connect_timeout) and counts it. A failure is a
// *HandshakeError.
func (cl *Client) Handshake(ctx context.Context, c net.Conn, alpn ALPN) (net.Conn, error) {
	cfg, err := cl.config(alpn)
	if err != nil {
		cl.stats.ConnectionError.Inc()
		return nil, &HandshakeError{Err: err, reason: handshakeFailure(err)}
	}
	tc := tls.Client(c, cfg)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, HandshakeTimeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		cl.stats.ConnectionError.Inc()
		return nil, &HandshakeError{Err: err, reason: handshakeFailure(err)}
	}
	cl.stats.Handshake.Inc()
	if tc.ConnectionState().DidResume {
		cl.stats.SessionReused.Inc()
	}
	return tc, nil
}

// Ready reports whether every secret the context names has arrived.
func (srv *Server) Ready() bool {
	_, _, err := srv.c.material()
	return err == nil
}

// Ready reports whether every secret the context names has arrived.
func (cl *Client) Ready() bool {
	_, _, err := cl.c.material()
	return err == nil
}
