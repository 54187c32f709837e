package translate

import (
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TLS as App Mesh configured it (reference §2.3, §2.4):
//   - file certificates and trust bundles are paths on the proxy's disk;
//   - SDS names are secrets weft server serves over ADS (weft takes the
//     place of SPIRE), unless the proxy's node metadata says
//     "weft.sds_socket": then they are asked of the agent on the SDS
//     socket, the bootstrap cluster static_cluster_sds_unix_socket
//     (APPMESH_SDS_SOCKET_PATH), as App Mesh's Envoy did;
//   - ACM certificates and ACM PCA trust cannot be fetched outside AWS:
//     they are asked for as SDS secrets named by their ARN over ADS, which
//     weft server serves from its own CA.
//
// Every secret asked for over ADS is recorded with its role (Secrets): a
// name in a certificate role is served as the proxy's own leaf
// certificate, one in a validation role as the mesh's trust bundle.

const (
	tlsSocketName = "envoy.transport_sockets.tls"
	sdsCluster    = "static_cluster_sds_unix_socket"
)

// certSource is where a certificate and its key come from (one is set).
type certSource struct {
	chain, key string // files
	sds        string // secret name
	acm        string // certificate ARN
}

// trustSource is where the trusted CAs come from (one is set).
type trustSource struct {
	file string
	sds  string
	acm  []string // CA ARNs
}

// tlsSpec is one side's TLS, in either App Mesh shape.
type tlsSpec struct {
	cert  *certSource
	trust *trustSource
	sans  []string
}

func (b *build) transportSocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(m)}}
}

// commonTLS builds the certificate and validation half of a TLS context.
func (b *build) commonTLS(s tlsSpec) *tlsv3.CommonTlsContext {
	ctx := &tlsv3.CommonTlsContext{}
	switch c := s.cert; {
	case c == nil:
	case c.sds != "":
		ctx.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{b.sdsSecret(c.sds, SecretCertificate)}
	case c.acm != "":
		ctx.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{b.adsSecret(c.acm, SecretCertificate)}
	default:
		ctx.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: file(c.chain), PrivateKey: file(c.key)}}
	}
	if s.trust == nil {
		return ctx
	}
	vc := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(s.sans)}
	switch t := s.trust; {
	case t.sds != "":
		ctx.ValidationContextType = combined(vc, b.sdsSecret(t.sds, SecretValidation))
	case len(t.acm) > 0:
		// One validation secret per context: the first CA (weft serves
		// its whole bundle under that name).
		ctx.ValidationContextType = combined(vc, b.adsSecret(t.acm[0], SecretValidation))
	default:
		vc.TrustedCa = file(t.file)
		ctx.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return ctx
}

func combined(vc *tlsv3.CertificateValidationContext, secret *tlsv3.SdsSecretConfig) *tlsv3.CommonTlsContext_CombinedValidationContext {
	return &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext: vc, ValidationContextSdsSecretConfig: secret}}
}

func file(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// agentSecret is an SDS secret served by the local SDS agent (SPIRE).
func agentSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: sdsCluster}}}},
		}},
	}}
}

// sdsSecret is an App Mesh sds.secretName: asked of the local agent when
// the proxy has one (weft.sds_socket), of weft server otherwise.
func (b *build) sdsSecret(name string, role SecretRole) *tlsv3.SdsSecretConfig {
	if b.id.SDSSocket {
		return agentSecret(name)
	}
	return b.adsSecret(name, role)
}

// adsSecret is a secret asked of the control plane, recorded in role.
func (b *build) adsSecret(name string, role SecretRole) *tlsv3.SdsSecretConfig {
	b.addSecret(name, role)
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

// sanMatchers matches each name exactly: URIs (SPIFFE IDs) as URI SANs,
// anything else as a DNS SAN.
func sanMatchers(sans []string) []*tlsv3.SubjectAltNameMatcher {
	var out []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		t := tlsv3.SubjectAltNameMatcher_DNS
		if strings.Contains(s, "://") {
			t = tlsv3.SubjectAltNameMatcher_URI
		}
		out = append(out, &tlsv3.SubjectAltNameMatcher{SanType: t,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	return out
}

func sanList(s *appmesh.SubjectAlternativeNames) []string {
	if s == nil || s.Match == nil {
		return nil
	}
	return s.Match.Exact
}

// serverChains applies a listener's TLS mode to its plaintext chain:
// STRICT serves TLS only, PERMISSIVE adds a TLS chain picked by the TLS
// inspector beside the plaintext one, DISABLED (or none) stays plaintext.
// A validation context makes the client certificate required (mTLS).
func (b *build) serverChains(fc *listenerv3.FilterChain, mode string, s tlsSpec) []*listenerv3.FilterChain {
	if s.cert == nil || (mode != "STRICT" && mode != "PERMISSIVE") {
		return []*listenerv3.FilterChain{fc}
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: b.commonTLS(s)}
	if s.trust != nil {
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	if mode == "STRICT" {
		fc.TransportSocket = b.transportSocket(ctx)
		return []*listenerv3.FilterChain{fc}
	}
	tlsChain := proto.Clone(fc).(*listenerv3.FilterChain)
	tlsChain.Name += "_tls"
	if tlsChain.FilterChainMatch == nil {
		tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{}
	}
	tlsChain.FilterChainMatch.TransportProtocol = "tls"
	tlsChain.TransportSocket = b.transportSocket(ctx)
	return []*listenerv3.FilterChain{fc, tlsChain}
}

func nodeServerTLS(t *appmesh.ListenerTls) (string, tlsSpec) {
	if t == nil {
		return "", tlsSpec{}
	}
	var s tlsSpec
	if c := t.Certificate; c != nil {
		switch {
		case c.File != nil:
			s.cert = &certSource{chain: str(c.File.CertificateChain), key: str(c.File.PrivateKey)}
		case c.Sds != nil:
			s.cert = &certSource{sds: str(c.Sds.SecretName)}
		case c.Acm != nil:
			s.cert = &certSource{acm: str(c.Acm.CertificateArn)}
		}
	}
	if v := t.Validation; v != nil && v.Trust != nil {
		switch {
		case v.Trust.File != nil:
			s.trust = &trustSource{file: str(v.Trust.File.CertificateChain)}
		case v.Trust.Sds != nil:
			s.trust = &trustSource{sds: str(v.Trust.Sds.SecretName)}
		}
		s.sans = sanList(v.SubjectAlternativeNames)
	}
	return string(t.Mode), s
}

func gatewayServerTLS(t *appmesh.VirtualGatewayListenerTls) (string, tlsSpec) {
	if t == nil {
		return "", tlsSpec{}
	}
	var s tlsSpec
	if c := t.Certificate; c != nil {
		switch {
		case c.File != nil:
			s.cert = &certSource{chain: str(c.File.CertificateChain), key: str(c.File.PrivateKey)}
		case c.Sds != nil:
			s.cert = &certSource{sds: str(c.Sds.SecretName)}
		case c.Acm != nil:
			s.cert = &certSource{acm: str(c.Acm.CertificateArn)}
		}
	}
	if v := t.Validation; v != nil && v.Trust != nil {
		switch {
		case v.Trust.File != nil:
			s.trust = &trustSource{file: str(v.Trust.File.CertificateChain)}
		case v.Trust.Sds != nil:
			s.trust = &trustSource{sds: str(v.Trust.Sds.SecretName)}
		}
		s.sans = sanList(v.SubjectAlternativeNames)
	}
	return string(t.Mode), s
}

// detectsTLS says whether chains are told apart by TLS (PERMISSIVE), which
// needs the TLS inspector; STRICT chains do not.
func detectsTLS(chains []*listenerv3.FilterChain) bool {
	return slices.ContainsFunc(chains, func(fc *listenerv3.FilterChain) bool { return fc.GetFilterChainMatch().GetTransportProtocol() != "" })
}

// clientPolicy is the caller's TLS policy toward a target: enforced, and
// the ports it applies to (none: all).
type clientPolicy struct {
	tlsSpec
	enforce bool
	ports   []int64
}

// clientTLS sets how a caller connects to a target listener:
//   - an enforced client policy (the backend's, else the caller's backend
//     defaults) whose ports include the target's: TLS validated by it;
//     without names to match, the server must present the target's
//     discovery name;
//   - otherwise, if the target listener serves TLS (STRICT or PERMISSIVE):
//     TLS without validation, as App Mesh negotiated it;
//   - otherwise plaintext.
//
// Proxyless gRPC clients get no TLS: gRPC only takes certificate provider
// instances, which App Mesh specs cannot name.
func (b *build) clientTLS(c *clusterv3.Cluster, service string, t target, fl flavor) {
	if fl == grpcFlavor {
		return
	}
	host := discoveryHost(b.v.VirtualNodes[t.node])
	ctx := &tlsv3.UpstreamTlsContext{Sni: host}
	p, ok := b.callerPolicy(service)
	switch {
	case ok && p.enforce && (len(p.ports) == 0 || slices.Contains(p.ports, int64(t.port))):
		s := p.tlsSpec
		if s.trust != nil && len(s.sans) == 0 && host != "" {
			s.sans = []string{host}
		}
		ctx.CommonTlsContext = b.commonTLS(s)
	case serverTLSMode(b.v.VirtualNodes[t.node], t.port):
		ctx.CommonTlsContext = &tlsv3.CommonTlsContext{}
	default:
		return
	}
	c.TransportSocket = b.transportSocket(ctx)
}

func serverTLSMode(vn *appmesh.VirtualNodeData, p uint32) bool {
	l := nodeListener(vn, p)
	if l == nil || l.Tls == nil {
		return false
	}
	return l.Tls.Mode == appmesh.ListenerTlsModeStrict || l.Tls.Mode == appmesh.ListenerTlsModePermissive
}

// discoveryHost is the name a node is discovered by, without port.
func discoveryHost(vn *appmesh.VirtualNodeData) string {
	if vn == nil || vn.Spec == nil || vn.Spec.ServiceDiscovery == nil {
		return ""
	}
	sd := vn.Spec.ServiceDiscovery
	switch {
	case sd.Dns != nil:
		return str(sd.Dns.Hostname)
	case sd.AwsCloudMap != nil:
		return str(sd.AwsCloudMap.ServiceName) + "." + str(sd.AwsCloudMap.NamespaceName)
	}
	return ""
}

// callerPolicy finds the proxy's client policy toward a virtual service.
func (b *build) callerPolicy(service string) (clientPolicy, bool) {
	node, gateway := b.callerPolicySpec(service)
	switch {
	case gateway != nil:
		return gatewayClientPolicy(gateway)
	case node != nil:
		return nodeClientPolicy(node)
	}
	return clientPolicy{}, false
}

// callerPolicySpec is the App Mesh spec callerPolicy reads: a virtual
// node's client policy toward the service (its backend's, else its
// backend defaults'), or a virtual gateway's backend defaults'; both nil
// when there is none.
func (b *build) callerPolicySpec(service string) (*appmesh.ClientPolicyTls, *appmesh.VirtualGatewayClientPolicyTls) {
	if b.id.Kind == appmesh.KindVirtualGateway {
		vg := b.v.VirtualGateways[b.id.Name]
		if vg == nil || vg.Spec == nil || vg.Spec.BackendDefaults == nil || vg.Spec.BackendDefaults.ClientPolicy == nil {
			return nil, nil
		}
		return nil, vg.Spec.BackendDefaults.ClientPolicy.Tls
	}
	vn := b.v.VirtualNodes[b.id.Name]
	if vn == nil || vn.Spec == nil {
		return nil, nil
	}
	for _, be := range vn.Spec.Backends {
		if vs := be.VirtualService; vs != nil && str(vs.VirtualServiceName) == service && vs.ClientPolicy != nil && vs.ClientPolicy.Tls != nil {
			return vs.ClientPolicy.Tls, nil
		}
	}
	if d := vn.Spec.BackendDefaults; d != nil && d.ClientPolicy != nil {
		return d.ClientPolicy.Tls, nil
	}
	return nil, nil
}

func nodeClientPolicy(t *appmesh.ClientPolicyTls) (clientPolicy, bool) {
	if t == nil {
		return clientPolicy{}, false
	}
	// App Mesh enforces a policy unless enforce is false.
	p := clientPolicy{enforce: t.Enforce == nil || *t.Enforce, ports: t.Ports}
	if c := t.Certificate; c != nil {
		switch {
		case c.File != nil:
			p.cert = &certSource{chain: str(c.File.CertificateChain), key: str(c.File.PrivateKey)}
		case c.Sds != nil:
			p.cert = &certSource{sds: str(c.Sds.SecretName)}
		}
	}
	if v := t.Validation; v != nil && v.Trust != nil {
		switch {
		case v.Trust.File != nil:
			p.trust = &trustSource{file: str(v.Trust.File.CertificateChain)}
		case v.Trust.Sds != nil:
			p.trust = &trustSource{sds: str(v.Trust.Sds.SecretName)}
		case v.Trust.Acm != nil:
			p.trust = &trustSource{acm: v.Trust.Acm.CertificateAuthorityArns}
		}
		p.sans = sanList(v.SubjectAlternativeNames)
	}
	return p, true
}

func gatewayClientPolicy(t *appmesh.VirtualGatewayClientPolicyTls) (clientPolicy, bool) {
	if t == nil {
		return clientPolicy{}, false
	}
	p := clientPolicy{enforce: t.Enforce == nil || *t.Enforce, ports: t.Ports}
	if c := t.Certificate; c != nil {
		switch {
		case c.File != nil:
			p.cert = &certSource{chain: str(c.File.CertificateChain), key: str(c.File.PrivateKey)}
		case c.Sds != nil:
			p.cert = &certSource{sds: str(c.Sds.SecretName)}
		}
	}
	if v := t.Validation; v != nil && v.Trust != nil {
		switch {
		case v.Trust.File != nil:
			p.trust = &trustSource{file: str(v.Trust.File.CertificateChain)}
		case v.Trust.Sds != nil:
			p.trust = &trustSource{sds: str(v.Trust.Sds.SecretName)}
		case v.Trust.Acm != nil:
			p.trust = &trustSource{acm: v.Trust.Acm.CertificateAuthorityArns}
		}
		p.sans = sanList(v.SubjectAlternativeNames)
	}
	return p, true
}
