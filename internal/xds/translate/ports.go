package translate

import (
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"
)

// Node metadata keys by which a proxy says where its traffic interception
// sends traffic (weft proxy --ingress-port/--egress-port, weft envoy
// bootstrap): a number, or a string holding one, as a bootstrap file may
// give either. Without them the ports are App Mesh's 15000 and 15001.
const (
	IngressPortMetadataKey = "weft.ingress_port"
	EgressPortMetadataKey  = "weft.egress_port"
)

// ListenerPorts reads the ports of IngressPortMetadataKey and
// EgressPortMetadataKey; an absent key gives 0 (the default). A value
// that is not a port 1-65535 is an error naming the key; so are two equal
// ports.
func ListenerPorts(md *structpb.Struct) (ingress, egress uint32, err error) {
	if ingress, err = metadataPort(md, IngressPortMetadataKey); err != nil {
		return 0, 0, err
	}
	if egress, err = metadataPort(md, EgressPortMetadataKey); err != nil {
		return 0, 0, err
	}
	id := Identity{IngressPort: ingress, EgressPort: egress}
	in, out := id.ingressPort(), id.egressPort()
	if in == out {
		return 0, 0, fmt.Errorf("node.metadata: %s and %s are both %d: the ingress and egress listeners need a port each", IngressPortMetadataKey, EgressPortMetadataKey, in)
	}
	// The defaults are 0, so that a proxy naming them has the identity
	// of one that does not.
	if ingress == DefaultIngressPort {
		ingress = 0
	}
	if egress == DefaultEgressPort {
		egress = 0
	}
	return ingress, egress, nil
}

func metadataPort(md *structpb.Struct, key string) (uint32, error) {
	v, ok := md.GetFields()[key]
	if !ok {
		return 0, nil
	}
	var n float64
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		n = k.NumberValue
	case *structpb.Value_StringValue:
		u, err := strconv.ParseUint(k.StringValue, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("node.metadata[%q]: %q is not a port number", key, k.StringValue)
		}
		n = float64(u)
	default:
		return 0, fmt.Errorf("node.metadata[%q]: want a port number", key)
	}
	if n < 1 || n > 65535 || n != math.Trunc(n) {
		return 0, fmt.Errorf("node.metadata[%q]: %v is not a port 1-65535", key, n)
	}
	return uint32(n), nil
}
