package ops

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// BenchmarkMirrorMemory measures what a replica's copy of the store (the
// mirror of internal/store/etcd) costs in Go heap per App Mesh resource:
// a mesh of -nodes virtual nodes made by the real creates (each with a
// listener, DNS service discovery, two backends, a tag and a client
// token, as the SDKs send one), then a second replica's Store starts
// following every key; its heap growth, less that of following an empty
// prefix (the watch's buffers), divided by the resources. It also
// reports the keys and the bytes (keys and values) the resources hold in
// etcd, so that the mirror's overhead over the data is visible, and the
// bytes of those that each write's client token adds (its record, with
// the answer to replay, and its expiry entry), kept for the token's TTL.
//
//	go test ./internal/appmesh/ops/ -run '^$' -bench BenchmarkMirrorMemory -benchtime 1x
func BenchmarkMirrorMemory(b *testing.B) {
	const nodes = 2000
	c := etcdtest.Start(b, 1)
	ctx := context.Background()
	openStore := func(prefix string) *etcd.Store {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	writer := openStore("/mem")
	clk := &clock{time.Unix(1800000000, 0)}
	svc := New(writer, Config{Region: "us-east-1", Now: clk.now, Limits: &appmesh.Limits{VirtualNodesPerMesh: nodes + 1}}, nil)
	caller := Caller{Account: "111122223333"}
	if _, err := checked(ctx, svc.CreateMesh, caller, &appmesh.CreateMeshInput{MeshName: s("m"), ClientToken: s("t-mesh")}); err != nil {
		b.Fatal(err)
	}
	for i := range nodes {
		name := fmt.Sprintf("node-%04d", i)
		if _, err := checked(ctx, svc.CreateVirtualNode, caller, &appmesh.CreateVirtualNodeInput{MeshName: s("m"), VirtualNodeName: s(name),
			Spec: &appmesh.VirtualNodeSpec{
				Listeners:        []appmesh.Listener{{PortMapping: &appmesh.PortMapping{Port: p(8080), Protocol: appmesh.PortProtocolHttp}}},
				ServiceDiscovery: &appmesh.ServiceDiscovery{Dns: &appmesh.DnsServiceDiscovery{Hostname: s(name + ".apps.local")}},
				Backends: []appmesh.Backend{
					{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: s("colors.apps.local")}},
					{VirtualService: &appmesh.VirtualServiceBackend{VirtualServiceName: s("shapes.apps.local")}},
				},
			},
			Tags:        []appmesh.TagRef{{Key: s("team"), Value: s("payments")}},
			ClientToken: s(fmt.Sprintf("%08d-1111-2222-3333-444455556666", i))}); err != nil {
			b.Fatal(err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/mem/", clientv3.WithPrefix())
	if err != nil {
		b.Fatal(err)
	}
	var stored, tokens int
	for _, kv := range resp.Kvs {
		stored += len(kv.Key) + len(kv.Value)
		if k := strings.TrimPrefix(string(kv.Key), "/mem/kv/"); strings.HasPrefix(k, tokenPrefix) || strings.HasPrefix(k, tokenExpPrefix) {
			tokens += len(kv.Key) + len(kv.Value)
		}
	}
	// follow returns the heap the mirror of prefix (and the watch that
	// keeps it) added.
	follow := func(prefix string) float64 {
		st := openStore(prefix)
		heap := func() float64 {
			var ms runtime.MemStats
			runtime.GC() // twice: the first moves pooled buffers to the victim cache, the second frees them
			runtime.GC()
			runtime.ReadMemStats(&ms)
			return float64(ms.HeapAlloc)
		}
		h0 := heap()
		etcdtest.FollowAll(b, st)()
		return heap() - h0
	}
	for b.Loop() {
		empty := follow("/empty")
		full := follow("/mem")
		resources := float64(nodes + 1)
		b.ReportMetric((full-empty)/resources, "mirror-B/resource")
		b.ReportMetric(float64(len(resp.Kvs))/resources, "keys/resource")
		b.ReportMetric(float64(stored)/resources, "stored-B/resource")
		b.ReportMetric(float64(tokens)/resources, "token-B/write")
	}
}
