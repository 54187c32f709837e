package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Listener filter names.
const (
	originalDstName  = "envoy.filters.listener.original_dst"
	tlsInspectorName = "envoy.filters.listener.tls_inspector"
)

// bindAddress is 0.0.0.0, or :: accepting IPv4 too when an IP preference
// is set on the node or mesh, as App Mesh bound its listeners.
func bindAddress(host string, p uint32, dualStack bool) *corev3.Address {
	sa := &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}
	if dualStack {
		sa.Address, sa.Ipv4Compat = "::", true
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}}
}

func (b *build) socketListener(name string, addr *corev3.Address, dir corev3.TrafficDirection, filters []*listenerv3.ListenerFilter, chains []*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          addr,
		TrafficDirection: dir,
		ListenerFilters:  filters,
		FilterChains:     chains,
	}
}

// originalDst restores the address the application dialled before
// iptables redirected it: filter chains match on its port, and
// passthrough clusters connect to it.
func (b *build) originalDst() *listenerv3.ListenerFilter {
	return memoized(b, originalDstName, func() *listenerv3.ListenerFilter {
		return &listenerv3.ListenerFilter{Name: originalDstName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: b.any(&originaldstv3.OriginalDst{})}}
	})
}

// tlsInspector reads the SNI that server_names matches (the amazonaws
// chain) and tells TLS from plaintext (PERMISSIVE listeners).
func (b *build) tlsInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: tlsInspectorName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: b.any(&tlsinspectorv3.TlsInspector{})}}
}

// tlsInspectorOn443 runs the inspector only for connections to port 443,
// the only egress chain that reads SNI: elsewhere it would hold
// server-first protocols (MySQL, SMTP) until the listener filter timeout.
func (b *build) tlsInspectorOn443() *listenerv3.ListenerFilter {
	return memoized(b, tlsInspectorName+" on 443", b.newTLSInspectorOn443)
}

func (b *build) newTLSInspectorOn443() *listenerv3.ListenerFilter {
	f := b.tlsInspector()
	f.FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
		NotMatch: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 443, End: 444}}}}}
	return f
}

func portMatch(p uint32) *listenerv3.FilterChainMatch {
	return &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p)}
}

// apiListener is a proxyless gRPC client's listener: no socket, just the
// connection manager whose routes the client applies to its calls.
func (b *build) apiListener(name string, rds string) *listenerv3.Listener {
	m := b.hcm("egress", rds, "", nil, grpcFlavor)
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: b.any(m)}}
}
