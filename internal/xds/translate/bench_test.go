package translate

import (
	"fmt"
	"testing"

	"github.com/weftmesh/weft/internal/appmesh"
)

// bigMesh is a mesh at App Mesh's default quotas: 200 nodes, 200 services
// (half behind routers with two targets), 50 backends per node, three
// Cloud Map instances per node.
func bigMesh() *View {
	mesh := "big"
	v := &View{
		Mesh:         &appmesh.MeshData{MeshName: &mesh, Spec: &appmesh.MeshSpec{}},
		VirtualNodes: map[string]*appmesh.VirtualNodeData{}, VirtualServices: map[string]*appmesh.VirtualServiceData{},
		VirtualRouters: map[string]*appmesh.VirtualRouterData{}, Routes: map[string][]*appmesh.RouteData{},
		Endpoints: map[string][]Endpoint{},
	}
	const n = 200
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		spec := &appmesh.VirtualNodeSpec{
			Listeners:        []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: ptr(int64(8080)), Protocol: appmesh.PortProtocolHttp}}},
			ServiceDiscovery: &appmesh.ServiceDiscovery{AwsCloudMap: &appmesh.AwsCloudMapServiceDiscovery{NamespaceName: ptr("big.local"), ServiceName: &name}},
		}
		for j := range 50 {
			spec.Backends = append(spec.Backends, appmesh.Backend{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: ptr(fmt.Sprintf("svc-%d.big.local", (i+j)%n))}})
		}
		v.VirtualNodes[name] = &appmesh.VirtualNodeData{VirtualNodeName: ptr(name), Spec: spec}
		for k := range 3 {
			v.Endpoints[name] = append(v.Endpoints[name], Endpoint{IPv4: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, k+1)})
		}
		svc := fmt.Sprintf("svc-%d.big.local", i)
		p := &appmesh.VirtualServiceProvider{VirtualNode: &appmesh.VirtualNodeServiceProvider{VirtualNodeName: ptr(name)}}
		if i%2 == 1 {
			r := fmt.Sprintf("router-%d", i)
			p = &appmesh.VirtualServiceProvider{VirtualRouter: &appmesh.VirtualRouterServiceProvider{VirtualRouterName: &r}}
			v.VirtualRouters[r] = &appmesh.VirtualRouterData{VirtualRouterName: &r, Spec: &appmesh.VirtualRouterSpec{
				Listeners: []appmesh.VirtualRouterListener{{PortMapping: &appmesh.PortMapping{Port: ptr(int64(8080)), Protocol: appmesh.PortProtocolHttp}}}}}
			v.Routes[r] = []*appmesh.RouteData{{RouteName: ptr("r"), VirtualRouterName: &r, Spec: &appmesh.RouteSpec{HttpRoute: &appmesh.HttpRoute{
				Match: &appmesh.HttpRouteMatch{Prefix: ptr("/")},
				Action: &appmesh.HttpRouteAction{WeightedTargets: []appmesh.WeightedTarget{
					{VirtualNode: ptr(name), Weight: ptr(int64(4))}, {VirtualNode: ptr(fmt.Sprintf("node-%d", i-1)), Weight: ptr(int64(1))}}}}}}}
		}
		v.VirtualServices[svc] = &appmesh.VirtualServiceData{VirtualServiceName: &svc, Spec: &appmesh.VirtualServiceSpec{Provider: p}}
	}
	return v
}

// BenchmarkTranslate is one proxy of a mesh at App Mesh's default quotas.
func BenchmarkTranslate(b *testing.B) {
	v := bigMesh()
	id := Identity{MeshOwner: defaultAccount, Mesh: "big", Kind: appmesh.KindVirtualNode, Name: "node-7"}
	for b.Loop() {
		if _, err := Translate(v, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTranslateMemo is the same translation through a Memo: "miss"
// with a new Memo each time (nothing shared: the Memo's own cost), "hit"
// with one Memo (the egress shared from the first translation).
func BenchmarkTranslateMemo(b *testing.B) {
	v := bigMesh()
	id := Identity{MeshOwner: defaultAccount, Mesh: "big", Kind: appmesh.KindVirtualNode, Name: "node-7"}
	b.Run("miss", func(b *testing.B) {
		for b.Loop() {
			if _, err := TranslateWith(v, id, NewMemo()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		m := NewMemo()
		for b.Loop() {
			if _, err := TranslateWith(v, id, m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCheck is Check on the same proxy's resources.
func BenchmarkCheck(b *testing.B) {
	r, err := Translate(bigMesh(), Identity{MeshOwner: defaultAccount, Mesh: "big", Kind: appmesh.KindVirtualNode, Name: "node-7"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Check(r); err != nil {
			b.Fatal(err)
		}
	}
}
