package appmesh

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits are App Mesh's service quotas. Exceeding one is a
// LimitExceededException. A field of zero or less means no limit (but
// ops.Config reads an all-zero Limits as "the defaults").
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
func (l *Limits) fields() []struct {
	name string
	v    *int
} {
	return []struct {
		name string
		v    *int
	}{
		{"meshes", &l.Meshes},
		{"virtualNodesPerMesh", &l.VirtualNodesPerMesh},
		{"virtualServicesPerMesh", &l.VirtualServicesPerMesh},
		{"virtualRoutersPerMesh", &l.VirtualRoutersPerMesh},
		{"virtualGatewaysPerMesh", &l.VirtualGatewaysPerMesh},
		{"routesPerVirtualRouter", &l.RoutesPerVirtualRouter},
		{"gatewayRoutesPerVirtualGateway", &l.GatewayRoutesPerVirtualGateway},
		{"backendsPerVirtualNode", &l.BackendsPerVirtualNode},
	}
}

// String writes the limits in the form ParseLimits reads.
func (l Limits) String() string {
	var parts []string
	for _, f := range l.fields() {
		parts = append(parts, f.name+"="+strconv.Itoa(*f.v))
	}
	return strings.Join(parts, ",")
}

// ParseLimits applies "name=value,..." to base and returns the result, so a
// flag can raise one quota and keep the defaults of the others.
func ParseLimits(s string, base Limits) (Limits, error) {
	out := base
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, ok := strings.Cut(item, "=")
		if !ok {
			return base, fmt.Errorf("limit %q: want name=value", item)
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return base, fmt.Errorf("limit %q: %w", item, err)
		}
		found := false
		for _, f := range out.fields() {
			if strings.EqualFold(f.name, strings.TrimSpace(name)) {
				*f.v, found = n, true
			}
		}
		if !found {
			return base, fmt.Errorf("unknown limit %q (known: %s)", name, DefaultLimits())
		}
	}
	return out, nil
}
