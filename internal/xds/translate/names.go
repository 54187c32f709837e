package translate

import (
	"strconv"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Ports App Mesh's traffic interception uses (ECS APPMESH proxyConfiguration
// ProxyIngressPort and ProxyEgressPort, the K8s controller's defaults). A
// virtual gateway's self-redirect hop also lands on the egress port. A
// proxy may name others (Identity.IngressPort, EgressPort).
const (
	DefaultIngressPort = 15000
	DefaultEgressPort  = 15001
)

// ingressPort and egressPort are the ports the proxy's interception sends
// traffic to.
func (b *build) ingressPort() uint32 { return b.id.ingressPort() }
func (b *build) egressPort() uint32  { return b.id.egressPort() }

func (id Identity) ingressPort() uint32 {
	if id.IngressPort != 0 {
		return id.IngressPort
	}
	return DefaultIngressPort
}

func (id Identity) egressPort() uint32 {
	if id.EgressPort != 0 {
		return id.EgressPort
	}
	return DefaultEgressPort
}

// Names below follow App Mesh's scheme (reference §2.1) so that dashboards
// and alerts keyed on stat names keep working.

func port(p uint32) string { return strconv.FormatUint(uint64(p), 10) }

// listenerName is lds_<direction>_0.0.0.0_<port>, whatever the bound address.
func listenerName(direction string, p uint32) string {
	return "lds_" + direction + "_0.0.0.0_" + port(p)
}

func ingressRouteName(proto appmesh.PortProtocol, p uint32) string {
	return "rds_ingress_" + string(proto) + "_" + port(p)
}

func egressRouteName(proto appmesh.PortProtocol, p uint32) string {
	return "rds_egress_" + string(proto) + "_" + port(p)
}

// localClusterName is the cluster of a virtual node's own application.
func localClusterName(mesh, node string, proto appmesh.PortProtocol, p uint32) string {
	return "cds_ingress_" + mesh + "_" + node + "_" + string(proto) + "_" + port(p)
}

// egressClusterName is the cluster of a target virtual node, seen by a caller.
func egressClusterName(mesh, node string, proto appmesh.PortProtocol, p uint32) string {
	return "cds_egress_" + mesh + "_" + node + "_" + string(proto) + "_" + port(p)
}

func amazonawsClusterName(mesh string) string { return "cds_egress_" + mesh + "_amazonaws" }

func allowAllClusterName(mesh string) string { return "cds_egress_" + mesh + "_mesh-allow-all" }

// selfRedirectClusterName names the gateway's hop from a listener to its own
// egress listener; App Mesh adds the listener port only when the gateway has
// several listeners.
func selfRedirectClusterName(mesh, gateway string, listenerPort uint32, several bool, proto appmesh.PortProtocol, egressPort uint32) string {
	n := "cds_ingress_" + mesh + "_" + gateway + "_self_redirect_"
	if several {
		n += port(listenerPort) + "_"
	}
	return n + string(proto) + "_" + port(egressPort)
}
