package translate

import (
	"bytes"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// TestGatewayHealthCheckAsAppMesh pins how a virtual gateway listener's
// healthCheck is translated: into nothing, as App Mesh did. Nothing in a
// mesh routes to a gateway, so there is no caller cluster to carry active
// health checks (a virtual node's listener healthCheck goes there), and
// App Mesh's gateway Envoys had no health check filter on their listeners
// (their HTTP filters were the router alone); a gateway's health was its
// admin /ready. The API keeps the field (AWS's own examples set it).
func TestGatewayHealthCheckAsAppMesh(t *testing.T) {
	v, owner := replay(t, "testdata/tutorial")
	id := Identity{MeshOwner: owner, Mesh: "color-mesh", Kind: appmesh.KindVirtualGateway, Name: "color-gateway"}
	r, err := Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	without := render(t, id, r)
	orig := v.VirtualGateways["color-gateway"]
	spec := *orig.Spec
	spec.Listeners = append([]appmesh.VirtualGatewayListener(nil), spec.Listeners...)
	i64 := func(n int64) *int64 { return &n }
	path := "/ping"
	spec.Listeners[0].HealthCheck = &appmesh.VirtualGatewayHealthCheckPolicy{Protocol: "http", Path: &path,
		HealthyThreshold: i64(2), UnhealthyThreshold: i64(2), TimeoutMillis: i64(2000), IntervalMillis: i64(5000)}
	v.VirtualGateways["color-gateway"] = &appmesh.VirtualGatewayData{MeshName: orig.MeshName, VirtualGatewayName: orig.VirtualGatewayName, Spec: &spec}
	defer func() { v.VirtualGateways["color-gateway"] = orig }()
	r, err = Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	if with := render(t, id, r); !bytes.Equal(with, without) {
		t.Fatalf("a gateway listener healthCheck changed the gateway's configuration:\n%s", firstDiff(without, with))
	}
}
