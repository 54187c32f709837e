package appmesh

import "github.com/weftmesh/weft/internal/quota"

// Limits are App Mesh's service quotas. Exceeding one is a
// LimitExceededException. A field of zero or less means no limit;
// ops.Config's nil Limits means DefaultLimits. On etcd, a count of
// resources with a quota above 20 is a bound that concurrent creates may
// pass by a few; up to 20 it is exact (ops.checkQuota says why).
type Limits struct {
	Meshes                         int // per account
	VirtualNodesPerMesh            int
	VirtualServicesPerMesh         int
	VirtualRoutersPerMesh          int
	VirtualGatewaysPerMesh         int
	RoutesPerVirtualRouter         int
	GatewayRoutesPerVirtualGateway int
	BackendsPerVirtualNode         int
}

// DefaultLimits returns App Mesh's default quotas. Weighted targets per
// route (10) is not here: the model bounds it and App Mesh never let it be
// raised.
func DefaultLimits() Limits {
	return Limits{
		Meshes:                         15,
		VirtualNodesPerMesh:            200,
		VirtualServicesPerMesh:         200,
		VirtualRoutersPerMesh:          200,
		VirtualGatewaysPerMesh:         3,
		RoutesPerVirtualRouter:         50,
		GatewayRoutesPerVirtualGateway: 10,
		BackendsPerVirtualNode:         50,
	}
}

// fields names each limit as ParseLimits and String write it.
func (l *Limits) fields() []quota.Field {
	return []quota.Field{
		{Name: "meshes", Value: &l.Meshes},
		{Name: "virtualNodesPerMesh", Value: &l.VirtualNodesPerMesh},
		{Name: "virtualServicesPerMesh", Value: &l.VirtualServicesPerMesh},
		{Name: "virtualRoutersPerMesh", Value: &l.VirtualRoutersPerMesh},
		{Name: "virtualGatewaysPerMesh", Value: &l.VirtualGatewaysPerMesh},
		{Name: "routesPerVirtualRouter", Value: &l.RoutesPerVirtualRouter},
		{Name: "gatewayRoutesPerVirtualGateway", Value: &l.GatewayRoutesPerVirtualGateway},
		{Name: "backendsPerVirtualNode", Value: &l.BackendsPerVirtualNode},
	}
}

// String writes the limits in the form ParseLimits reads.
func (l Limits) String() string { return quota.Format(l.fields()) }

// ParseLimits applies "name=value,..." to base and returns the result, so a
// flag can raise one quota and keep the defaults of the others.
func ParseLimits(s string, base Limits) (Limits, error) {
	return quota.ParseOver(s, base, (*Limits).fields)
}
