package server

import (
	"testing"

	weftproxy "github.com/weftmesh/weft/internal/proxy"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestNodeMetadataKeysAgree: weft proxy cannot import the control plane,
// so the node metadata keys it sends are declared on both sides; a key
// renamed on one side only would be silently ignored by the other (the
// proxy's moved ports or its SDS socket unseen).
func TestNodeMetadataKeysAgree(t *testing.T) {
	for _, k := range []struct{ proxy, server string }{
		{weftproxy.SDSSocketMetadata, SDSSocketMetadataKey},
		{weftproxy.IngressPortMetadata, translate.IngressPortMetadataKey},
		{weftproxy.EgressPortMetadata, translate.EgressPortMetadataKey},
	} {
		if k.proxy != k.server {
			t.Errorf("weft proxy sends node metadata %q, weft server reads %q", k.proxy, k.server)
		}
	}
}
