package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// Names Envoy gives the TLS transport socket, and the raw one.
const (
	SocketTLS = "envoy.transport_sockets.tls"
	SocketRaw = "envoy.transport_sockets.raw_buffer"
	// AgentCluster is the bootstrap cluster App Mesh's Envoy image
	// defined for the SDS agent on APPMESH_SDS_SOCKET_PATH.
	AgentCluster = "static_cluster_sds_unix_socket"
)

// HandshakeTimeout bounds a TLS handshake, downstream and upstream, when
// nothing tighter (connect_timeout) does.
const HandshakeTimeout = 10 * time.Second

// common is a compiled CommonTlsContext.
type common struct {
	certs      []*entry // or static
	static     []*Material
	trust      *entry                              // nil: no validation
	staticCA   *Material                           // trusted_ca inline
	vc         *tlsv3.CertificateValidationContext // the default validation context
	minV, maxV uint16
	alpn       []string
}

// Unpack returns the TLS context of a transport socket: nil for none or
// raw_buffer; *tlsv3.DownstreamTlsContext or *tlsv3.UpstreamTlsContext.
func Unpack(ts *corev3.TransportSocket, path string) (proto.Message, error) {
	if ts == nil {
		return nil, nil
	}
	if err := strict.Fields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		if ts.GetName() == SocketRaw || ts.GetName() == "raw_buffer" {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: typed_config is required for transport socket %q", path, ts.GetName())
	}
	m, err := tc.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("%s.typed_config: %w", path, err)
	}
	switch m.(type) {
	case *tlsv3.DownstreamTlsContext, *tlsv3.UpstreamTlsContext:
		return m, nil
	}
	if proto.MessageName(m) == "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" {
		return nil, nil
	}
	return nil, fmt.Errorf("%s.typed_config: transport socket %s is not supported by weft proxy", path, proto.MessageName(m))
}

func (s *Store) compileCommon(c *tlsv3.CommonTlsContext, path string) (*common, error) {
	if c == nil {
		return &common{}, nil
	}
	// key_log and custom handshakers are not implemented.
	if err := strict.Fields(c, path, "tls_params", "tls_certificates", "tls_certificate_sds_secret_configs",
		"validation_context", "validation_context_sds_secret_config", "combined_validation_context",
		"alpn_protocols"); err != nil {
		return nil, err
	}
	out := &common{alpn: c.GetAlpnProtocols()}
	if p := c.GetTlsParams(); p != nil {
		pp := path + ".tls_params"
		// Cipher suites, curves and signature algorithms are crypto/tls's
		// own choice: naming them is refused rather than ignored.
		if err := strict.Fields(p, pp, "tls_minimum_protocol_version", "tls_maximum_protocol_version"); err != nil {
			return nil, err
		}
		var err error
		if out.minV, err = version(p.GetTlsMinimumProtocolVersion(), pp+".tls_minimum_protocol_version"); err != nil {
			return nil, err
		}
		if out.maxV, err = version(p.GetTlsMaximumProtocolVersion(), pp+".tls_maximum_protocol_version"); err != nil {
			return nil, err
		}
		if out.minV != 0 && out.maxV != 0 && out.minV > out.maxV {
			return nil, fmt.Errorf("%s: tls_minimum_protocol_version is above tls_maximum_protocol_version", pp)
		}
	}
	for i, tc := range c.GetTlsCertificates() {
		fp := strict.Join(path, "tls_certificates", i)
		// watched_directory only says which directory Envoy watches for a
		// symlink swap; weft polls the files themselves, which sees it.
		if err := strict.Fields(tc, fp, "certificate_chain", "private_key", "watched_directory"); err != nil {
			return nil, err
		}
		if tc.GetCertificateChain() == nil || tc.GetPrivateKey() == nil {
			return nil, fmt.Errorf("%s: certificate_chain and private_key are both required", fp)
		}
		chainFile, chainIn, err := dataSource(tc.GetCertificateChain(), fp+".certificate_chain")
		if err != nil {
			return nil, err
		}
		keyFile, keyIn, err := dataSource(tc.GetPrivateKey(), fp+".private_key")
		if err != nil {
			return nil, err
		}
		switch {
		case chainFile != "" && keyFile != "":
			e, err := s.file(fp, false, chainFile, keyFile)
			if err != nil {
				return nil, err
			}
			out.certs = append(out.certs, e)
		case chainFile == "" && keyFile == "":
			m, err := parseCert(chainIn, keyIn, fp+".certificate_chain", fp+".private_key")
			if err != nil {
				return nil, err
			}
			out.static = append(out.static, m)
		default:
			return nil, fmt.Errorf("%s: certificate_chain and private_key must both be files or both be inline", fp)
		}
	}
	for i, sc := range c.GetTlsCertificateSdsSecretConfigs() {
		fp := strict.Join(path, "tls_certificate_sds_secret_configs", i)
		e, err := s.sdsSecret(sc, false, fp)
		if err != nil {
			return nil, err
		}
		out.certs = append(out.certs, e)
	}
	var err error
	switch v := c.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		err = out.validation(s, v.ValidationContext, path+".validation_context", true)
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		out.vc = &tlsv3.CertificateValidationContext{}
		out.trust, err = s.sdsSecret(v.ValidationContextSdsSecretConfig, true, path+".validation_context_sds_secret_config")
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cp := path + ".combined_validation_context"
		cv := v.CombinedValidationContext
		if err = strict.Fields(cv, cp, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return nil, err
		}
		if cv.GetValidationContextSdsSecretConfig() == nil {
			return nil, fmt.Errorf("%s: validation_context_sds_secret_config is required", cp)
		}
		if err = out.validation(s, cv.GetDefaultValidationContext(), cp+".default_validation_context", false); err != nil {
			return nil, err
		}
		out.trust, err = s.sdsSecret(cv.GetValidationContextSdsSecretConfig(), true, cp+".validation_context_sds_secret_config")
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// validation compiles a static validation context; trusted_ca is required
// unless a secret supplies it (needCA false).
func (c *common) validation(s *Store, vc *tlsv3.CertificateValidationContext, path string, needCA bool) error {
	if vc == nil {
		vc = &tlsv3.CertificateValidationContext{}
	}
	if err := checkVC(vc, path); err != nil {
		return err
	}
	if _, err := compileSANs(vc.GetMatchTypedSubjectAltNames(), path+".match_typed_subject_alt_names"); err != nil {
		return err
	}
	c.vc = vc
	ca := vc.GetTrustedCa()
	if ca == nil {
		if needCA {
			return fmt.Errorf("%s: trusted_ca is required (weft proxy does not use the system roots)", path)
		}
		return nil
	}
	file, inline, err := dataSource(ca, path+".trusted_ca")
	if err != nil {
		return err
	}
	if file != "" {
		c.trust, err = s.file(path+".trusted_ca", true, file)
		return err
	}
	c.staticCA, err = parseTrust(inline, path+".trusted_ca")
	return err
}

// checkVC accepts the validation fields weft implements: the trusted CA
// and exact, prefix, suffix, contains or regex SAN matchers.
func checkVC(vc *tlsv3.CertificateValidationContext, path string) error {
	return strict.Fields(vc, path, "trusted_ca", "match_typed_subject_alt_names", "watched_directory")
}

func version(v tlsv3.TlsParameters_TlsProtocol, path string) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return 0, nil
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, strict.Value(path, "", v, "unknown TLS version")
}

// dataSource returns a file name, or the inline bytes.
func dataSource(d *corev3.DataSource, path string) (file string, inline []byte, err error) {
	if err := strict.Fields(d, path, "filename", "inline_bytes", "inline_string"); err != nil {
		return "", nil, err
	}
	switch x := d.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		if x.Filename == "" {
			return "", nil, fmt.Errorf("%s.filename: empty", path)
		}
		return x.Filename, nil, nil
	case *corev3.DataSource_InlineBytes:
		return "", x.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return "", []byte(x.InlineString), nil
	}
	return "", nil, fmt.Errorf("%s: a filename, inline_bytes or inline_string is required", path)
}

// sdsSecret resolves an SdsSecretConfig: a secret on the ADS stream
// (sds_config {ads: {}}) or on the SDS socket (sds_config naming the
// api_config_source cluster static_cluster_sds_unix_socket).
func (s *Store) sdsSecret(sc *tlsv3.SdsSecretConfig, trust bool, path string) (*entry, error) {
	if err := strict.Fields(sc, path, "name", "sds_config"); err != nil {
		return nil, err
	}
	if sc.GetName() == "" {
		return nil, fmt.Errorf("%s.name: required", path)
	}
	src, err := s.secretSource(sc.GetSdsConfig(), path+".sds_config")
	if err != nil {
		return nil, err
	}
	e := s.secret(src, sc.GetName(), trust, path)
	if t := sc.GetSdsConfig().GetInitialFetchTimeout(); t != nil && t.AsDuration() > 0 {
		s.setFetchTimeout(e, t.AsDuration())
	}
	return e, nil
}

func (s *Store) secretSource(cs *corev3.ConfigSource, path string) (Source, error) {
	if cs == nil {
		return 0, fmt.Errorf("%s: required (weft proxy has no static secrets)", path)
	}
	// initial_fetch_timeout bounds how long the proxy waits for the
	// secret before going LIVE without it (15 s at most, and when 0).
	if err := strict.Fields(cs, path, "ads", "api_config_source", "resource_api_version", "initial_fetch_timeout"); err != nil {
		return 0, err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return 0, strict.Value(path, "resource_api_version", v, "V3 only")
	}
	if cs.GetAds() != nil {
		return FromADS, nil
	}
	api := cs.GetApiConfigSource()
	if api == nil {
		return 0, fmt.Errorf("%s: ads or api_config_source is required", path)
	}
	ap := path + ".api_config_source"
	if err := strict.Fields(api, ap, "api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"); err != nil {
		return 0, err
	}
	if api.GetApiType() != corev3.ApiConfigSource_GRPC {
		return 0, strict.Value(ap, "api_type", api.GetApiType(), "GRPC only")
	}
	gs := api.GetGrpcServices()
	if len(gs) != 1 || gs[0].GetEnvoyGrpc() == nil {
		return 0, fmt.Errorf("%s.grpc_services: weft proxy takes one envoy_grpc service naming cluster %s", ap, AgentCluster)
	}
	if err := strict.Fields(gs[0], ap+".grpc_services[0]", "envoy_grpc", "timeout"); err != nil {
		return 0, err
	}
	eg := gs[0].GetEnvoyGrpc()
	if err := strict.Fields(eg, ap+".grpc_services[0].envoy_grpc", "cluster_name"); err != nil {
		return 0, err
	}
	if eg.GetClusterName() != AgentCluster {
		return 0, strict.Value(ap, "grpc_services[0].envoy_grpc.cluster_name", eg.GetClusterName(),
			"weft proxy fetches secrets over ADS or from the SDS socket (cluster "+AgentCluster+")")
	}
	if !s.sdsSocket {
		return 0, fmt.Errorf("%s: the secret is served by cluster %s, the SDS socket, and weft proxy runs without --sds-socket (APPMESH_SDS_SOCKET_PATH)", ap, AgentCluster)
	}
	return FromSDS, nil
}

// parseSecret parses a secret from SDS: a certificate with its key or a
// validation context, inline.
func parseSecret(sec *tlsv3.Secret) (*Material, error) {
	path := "secret " + sec.GetName()
	if sec.GetName() == "" {
		return nil, errors.New("secret: name is required")
	}
	if err := strict.Fields(sec, path, "name", "tls_certificate", "validation_context"); err != nil {
		return nil, err
	}
	var m *Material
	switch {
	case sec.GetTlsCertificate() != nil:
		tc := sec.GetTlsCertificate()
		fp := path + ".tls_certificate"
		if err := strict.Fields(tc, fp, "certificate_chain", "private_key"); err != nil {
			return nil, err
		}
		chain, err := inlineOnly(tc.GetCertificateChain(), fp+".certificate_chain")
		if err != nil {
			return nil, err
		}
		key, err := inlineOnly(tc.GetPrivateKey(), fp+".private_key")
		if err != nil {
			return nil, err
		}
		if m, err = parseCert(chain, key, fp+".certificate_chain", fp+".private_key"); err != nil {
			return nil, err
		}
	case sec.GetValidationContext() != nil:
		vc := sec.GetValidationContext()
		fp := path + ".validation_context"
		if err := checkVC(vc, fp); err != nil {
			return nil, err
		}
		if _, err := compileSANs(vc.GetMatchTypedSubjectAltNames(), fp+".match_typed_subject_alt_names"); err != nil {
			return nil, err
		}
		ca, err := inlineOnly(vc.GetTrustedCa(), fp+".trusted_ca")
		if err != nil {
			return nil, err
		}
		if m, err = parseTrust(ca, fp+".trusted_ca"); err != nil {
			return nil, err
		}
		m.VC = vc
	default:
		return nil, fmt.Errorf("%s: tls_certificate or validation_context is required", path)
	}
	m.Secret = sec
	return m, nil
}

func inlineOnly(d *corev3.DataSource, path string) ([]byte, error) {
	if d == nil {
		return nil, fmt.Errorf("%s: required", path)
	}
	file, b, err := dataSource(d, path)
	if err != nil {
		return nil, err
	}
	if file != "" {
		return nil, strict.Value(path, "filename", file, "secrets from SDS carry their PEM inline")
	}
	return b, nil
}

// describe names a context's sources for logs.
func (c *common) describe() string {
	var parts []string
	for _, e := range c.certs {
		parts = append(parts, e.src.String()+":"+e.name)
	}
	if c.trust != nil {
		parts = append(parts, "trust "+c.trust.src.String()+":"+c.trust.name)
	}
	return strings.Join(parts, ", ")
}
