package tlsctx

import (
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Redacted replaces private keys in /config_dump, as Envoy shows them.
const Redacted = "[redacted]"

// sockets returns the transport sockets of listeners and clusters.
func sockets(ls []*listenerv3.Listener, cs []*clusterv3.Cluster) []*corev3.TransportSocket {
	var out []*corev3.TransportSocket
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			out = append(out, fc.GetTransportSocket())
		}
		out = append(out, l.GetDefaultFilterChain().GetTransportSocket())
	}
	for _, c := range cs {
		out = append(out, c.GetTransportSocket())
	}
	return out
}

// Collect returns the files and secrets the TLS contexts of ls and cs
// name. Contexts that do not decode are skipped (they were NACKed).
func (s *Store) Collect(ls []*listenerv3.Listener, cs []*clusterv3.Cluster) Refs {
	var r Refs
	for _, ts := range sockets(ls, cs) {
		m, err := Unpack(ts, "")
		if err != nil || m == nil {
			continue
		}
		var c *tlsv3.CommonTlsContext
		switch x := m.(type) {
		case *tlsv3.DownstreamTlsContext:
			c = x.GetCommonTlsContext()
		case *tlsv3.UpstreamTlsContext:
			c = x.GetCommonTlsContext()
		}
		file := func(d *corev3.DataSource) {
			if f := d.GetFilename(); f != "" {
				r.Files = append(r.Files, f)
			}
		}
		secret := func(sc *tlsv3.SdsSecretConfig) {
			if sc == nil {
				return
			}
			src, err := s.secretSource(sc.GetSdsConfig(), "")
			switch {
			case err != nil:
			case src == FromADS:
				r.ADS = append(r.ADS, sc.GetName())
			case src == FromSDS:
				r.SDS = append(r.SDS, sc.GetName())
			}
		}
		for _, tc := range c.GetTlsCertificates() {
			file(tc.GetCertificateChain())
			file(tc.GetPrivateKey())
		}
		for _, sc := range c.GetTlsCertificateSdsSecretConfigs() {
			secret(sc)
		}
		file(c.GetValidationContext().GetTrustedCa())
		secret(c.GetValidationContextSdsSecretConfig())
		file(c.GetCombinedValidationContext().GetDefaultValidationContext().GetTrustedCa())
		secret(c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig())
	}
	r.Files = sorted(r.Files)
	r.ADS = sorted(r.ADS)
	r.SDS = sorted(r.SDS)
	return r
}

func sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	return slicesCompact(out)
}

// RedactListener returns l with inline private keys replaced by
// "[redacted]" (l itself when it has none to hide).
func RedactListener(l *listenerv3.Listener) *listenerv3.Listener {
	if !hasInlineKey(sockets([]*listenerv3.Listener{l}, nil)) {
		return l
	}
	l = proto.Clone(l).(*listenerv3.Listener)
	for _, ts := range sockets([]*listenerv3.Listener{l}, nil) {
		redactSocket(ts)
	}
	return l
}

// RedactCluster is RedactListener for clusters.
func RedactCluster(c *clusterv3.Cluster) *clusterv3.Cluster {
	if !hasInlineKey(sockets(nil, []*clusterv3.Cluster{c})) {
		return c
	}
	c = proto.Clone(c).(*clusterv3.Cluster)
	for _, ts := range sockets(nil, []*clusterv3.Cluster{c}) {
		redactSocket(ts)
	}
	return c
}

// RedactSecret returns a secret with its private key redacted.
func RedactSecret(sec *tlsv3.Secret) *tlsv3.Secret {
	if sec.GetTlsCertificate().GetPrivateKey() == nil {
		return sec
	}
	sec = proto.Clone(sec).(*tlsv3.Secret)
	redactKey(sec.GetTlsCertificate())
	return sec
}

func hasInlineKey(tss []*corev3.TransportSocket) bool {
	for _, ts := range tss {
		m, err := Unpack(ts, "")
		if err != nil || m == nil {
			continue
		}
		for _, tc := range commonOf(m).GetTlsCertificates() {
			if tc.GetPrivateKey() != nil && tc.GetPrivateKey().GetFilename() == "" {
				return true
			}
		}
	}
	return false
}

func commonOf(m proto.Message) *tlsv3.CommonTlsContext {
	switch x := m.(type) {
	case *tlsv3.DownstreamTlsContext:
		return x.GetCommonTlsContext()
	case *tlsv3.UpstreamTlsContext:
		return x.GetCommonTlsContext()
	}
	return nil
}

func redactSocket(ts *corev3.TransportSocket) {
	m, err := Unpack(ts, "")
	if err != nil || m == nil {
		return
	}
	for _, tc := range commonOf(m).GetTlsCertificates() {
		redactKey(tc)
	}
	a, err := anypb.New(m)
	if err != nil {
		ts.ConfigType = nil
		return
	}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
}

func redactKey(tc *tlsv3.TlsCertificate) {
	if k := tc.GetPrivateKey(); k != nil && k.GetFilename() == "" {
		tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: Redacted}}
	}
}
