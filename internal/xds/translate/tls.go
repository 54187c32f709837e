package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/appmesh"
)

// listenerTLS is not translated yet: listeners serve plaintext.
func (b *build) listenerTLS(fc *listenerv3.FilterChain, t *appmesh.ListenerTls) {}

func hasTLSChain(chains []*listenerv3.FilterChain) bool {
	for _, fc := range chains {
		if fc.GetTransportSocket() != nil {
			return true
		}
	}
	return false
}

// clientTLS is not translated yet: clusters connect in plaintext.
func (b *build) clientTLS(c *clusterv3.Cluster, t target, fl flavor) {}

// gatewayListenerTLS is not translated yet: gateway listeners serve plaintext.
func (b *build) gatewayListenerTLS(fc *listenerv3.FilterChain, t *appmesh.VirtualGatewayListenerTls) {
}
