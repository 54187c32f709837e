package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// BenchmarkRouteWrite is the push loop's work for one route weight change
// in bench/xdsbench's mesh: 500 client nodes, 10 routed services, each
// node with two as backends, so one write recomputes 100 identities. No
// streams: this is the recompute alone (translate, validate, marshal,
// intern, index), on the benchmark's cores.
func BenchmarkRouteWrite(b *testing.B) {
	benchWrites(b, shapeFifth, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, i%benchServices, 1+i%98) })
}

// BenchmarkRouteWriteEvery is bench/xdsbench's headline shape: every
// client node has service 0 as a backend, one other, and one of its own
// (so no two share an egress), and each write changes service 0's
// weights, so every one of the 500 identities is recomputed.
func BenchmarkRouteWriteEvery(b *testing.B) {
	benchWrites(b, shapeEvery, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, 0, 1+i%98) })
}

// BenchmarkRouteWriteEveryOwnTable is BenchmarkRouteWriteEvery with no
// two nodes sharing a route table: besides service 0, each node calls a
// subset of services 1-9 of its own, so each identity's route table is
// its own, made of the virtual hosts the services have in common.
func BenchmarkRouteWriteEveryOwnTable(b *testing.B) {
	benchWrites(b, shapeOwnTable, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, 0, 1+i%98) })
}

// BenchmarkRouteWriteGateways is BenchmarkRouteWriteEvery with 500
// virtual gateways in the clients' stead, each with gateway routes to
// service 0 and one other: each write changes service 0's weights and
// keeps its timeouts, so every gateway is affected.
func BenchmarkRouteWriteGateways(b *testing.B) {
	benchWrites(b, shapeGateways, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, 0, 1+i%98) })
}

// BenchmarkRouteWriteProxyless is BenchmarkRouteWriteEvery with every
// client a proxyless gRPC client (translate.Identity.Proxyless).
func BenchmarkRouteWriteProxyless(b *testing.B) {
	benchWrites(b, shapeProxyless, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, 0, 1+i%98) })
}

// BenchmarkEndpointWrite is the same for a Cloud Map instance registered
// or deregistered: the 100 identities that read it get their
// ClusterLoadAssignments rebuilt, nothing is translated.
func BenchmarkEndpointWrite(b *testing.B) {
	benchWrites(b, shapeFifth, func(b *testing.B, st store.Store, i int) {
		k := i % benchServices
		key := cloudmap.InstanceKey(fmt.Sprintf("srv-tgt-%d", k), "extra")
		if i/benchServices%2 == 1 {
			del(b, st, key)
			return
		}
		put(b, st, key, cloudmap.InstanceRecord{
			Instance: cloudmap.Instance{Id: ptr("extra"), Attributes: map[string]string{cloudmap.AttrIPv4: fmt.Sprintf("10.1.%d.2", k), "version": "a"}},
			Health:   cloudmap.HealthStatusHealthy,
		})
	})
}

// benchMachine is a core on benchMesh's store, its benchNodes identities
// attached, and the store's changes from then on, until the test ends.
func benchMachine(t testing.TB, shape benchShape, checks func(*Options)) (*bolt.Store, *testMachine, <-chan store.Change) {
	t.Helper()
	st := openStore(t)
	benchMesh(t, st, benchNodes, benchServices, shape)
	opts := &Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: slog.New(slog.DiscardHandler)}
	checks(opts)
	l := newTestMachine(opts, nil)
	ctx := context.Background()
	rev, err := l.resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for j := range benchNodes {
		id := translate.Identity{MeshOwner: owner, Mesh: "bench", Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("client-%d", j)}
		if shape == shapeGateways {
			id.Kind, id.Name = appmesh.KindVirtualGateway, fmt.Sprintf("gw-%d", j)
		}
		id.Proxyless = shape == shapeProxyless
		if err := l.attach(id); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	changes, err := st.Watch(wctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	return st, l, changes
}

const benchNodes, benchServices = 500, 10

// benchShape is how benchMesh's client nodes pick their backends.
type benchShape int

const (
	// shapeFifth: two services each, so a route write affects a fifth of
	// the nodes.
	shapeFifth benchShape = iota
	// shapeEvery: bench/xdsbench's headline shape, service 0 and one
	// other for every node, and a backend of its own (a service that does
	// not exist), so that no two nodes share an egress.
	shapeEvery
	// shapeOwnTable: service 0 for every node and a subset of the others
	// of its own (node j calls service k when bit k-1 of j is set), so
	// that no two nodes share a route table.
	shapeOwnTable
	// shapeGateways: gateways instead of client nodes, each routing to
	// service 0 and one other (as shapeEvery's nodes call them).
	shapeGateways
	// shapeProxyless: shapeEvery's mesh, every client proxyless.
	shapeProxyless
)

// benchWrites times the push loop's apply of each write, with and
// without validation.
func benchWrites(b *testing.B, shape benchShape, write func(b *testing.B, st store.Store, i int)) {
	affected := 2 * benchNodes / benchServices
	if shape != shapeFifth {
		affected = benchNodes
	}
	for _, bc := range []struct {
		name   string
		checks func(*Options)
	}{
		{"check", withChecks},
		{"nocheck", func(*Options) {}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st, l, changes := benchMachine(b, shape, bc.checks)
			translations0, updates0 := testutil.ToFloat64(l.metrics.translations), testutil.ToFloat64(l.metrics.epUpdates)
			shared0 := testutil.ToFloat64(l.metrics.sharedEgress)
			routes0 := testutil.ToFloat64(l.metrics.routeUpdates)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				write(b, st, i)
				c := <-changes
				b.StartTimer()
				l.apply([]store.Change{c}, time.Now())
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6/float64(affected), "ms/identity")
			b.ReportMetric((testutil.ToFloat64(l.metrics.translations)-translations0)/float64(b.N), "translations/op")
			b.ReportMetric((testutil.ToFloat64(l.metrics.epUpdates)-updates0)/float64(b.N), "endpoint-updates/op")
			b.ReportMetric((testutil.ToFloat64(l.metrics.sharedEgress)-shared0)/float64(b.N), "shared-egress/op")
			b.ReportMetric((testutil.ToFloat64(l.metrics.routeUpdates)-routes0)/float64(b.N), "route-updates/op")
		})
	}
}

// benchMesh is bench/xdsbench's mesh: nodes client nodes calling
// services routed services, with backends as shape says.
func benchMesh(t testing.TB, st store.Store, nodes, services int, shape benchShape) {
	putNamespace(t, st)
	putRaw(t, st, ref("bench", appmesh.KindMesh, "", "bench"), `{"meshName":"bench","spec":{"egressFilter":{"type":"DROP_ALL"}}}`)
	listener := `[{"portMapping":{"port":8080,"protocol":"http"}}]`
	for k := range services {
		putCMService(t, st, fmt.Sprintf("tgt-%d", k))
		for _, v := range []string{"a", "b"} {
			name := fmt.Sprintf("tgt-%d-%s", k, v)
			putRaw(t, st, ref("bench", appmesh.KindVirtualNode, "", name), fmt.Sprintf(`{"meshName":"bench","virtualNodeName":%q,"spec":{"listeners":%s,
				"serviceDiscovery":{"awsCloudMap":{"namespaceName":"colors.local","serviceName":"tgt-%d","attributes":[{"key":"version","value":%q}]}}}}`, name, listener, k, v))
		}
		putInstance(t, st, fmt.Sprintf("tgt-%d", k), fmt.Sprintf("i-%d", k), fmt.Sprintf("10.0.%d.1", k))
		putRaw(t, st, ref("bench", appmesh.KindVirtualRouter, "", fmt.Sprintf("router-%d", k)), fmt.Sprintf(
			`{"meshName":"bench","virtualRouterName":"router-%d","spec":{"listeners":%s}}`, k, listener))
		benchRoute(t, st, k, 50)
		putRaw(t, st, ref("bench", appmesh.KindVirtualService, "", fmt.Sprintf("svc-%d.bench.local", k)), fmt.Sprintf(
			`{"meshName":"bench","virtualServiceName":"svc-%d.bench.local","spec":{"provider":{"virtualRouter":{"virtualRouterName":"router-%d"}}}}`, k, k))
	}
	for j := range nodes {
		if shape == shapeGateways {
			putRaw(t, st, ref("bench", appmesh.KindVirtualGateway, "", fmt.Sprintf("gw-%d", j)), fmt.Sprintf(
				`{"meshName":"bench","virtualGatewayName":"gw-%d","spec":{"listeners":[{"portMapping":{"port":9080,"protocol":"http"}}]}}`, j))
			for r, k := range []int{0, 1 + j%(services-1)} {
				putRaw(t, st, ref("bench", appmesh.KindGatewayRoute, fmt.Sprintf("gw-%d", j), fmt.Sprintf("to-%d", r)), fmt.Sprintf(
					`{"meshName":"bench","virtualGatewayName":"gw-%d","gatewayRouteName":"to-%d","spec":{"httpRoute":{"match":{"prefix":"/%d"},
					"action":{"target":{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}}}}}}`, j, r, k, k))
			}
			continue
		}
		a, b, own := j%services, (j+1)%services, ""
		switch shape {
		case shapeEvery, shapeProxyless:
			a, b = 0, 1+j%(services-1)
			own = fmt.Sprintf(`,{"virtualService":{"virtualServiceName":"own-%d.bench.local"}}`, j)
		case shapeOwnTable:
			a, b = 0, 0
			for k := 1; k < services; k++ {
				if j&(1<<(k-1)) != 0 {
					own += fmt.Sprintf(`,{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}}`, k)
				}
			}
		}
		putRaw(t, st, ref("bench", appmesh.KindVirtualNode, "", fmt.Sprintf("client-%d", j)), fmt.Sprintf(`{"meshName":"bench","virtualNodeName":"client-%d","spec":{"listeners":%s,
			"serviceDiscovery":{"dns":{"hostname":"client-%d.bench.local"}},
			"backends":[{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}},{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}}%s]}}`,
			j, listener, j, a, b, own))
	}
}

func benchRoute(t testing.TB, st store.Store, k, a int) {
	putRaw(t, st, ref("bench", appmesh.KindRoute, fmt.Sprintf("router-%d", k), "split"), fmt.Sprintf(
		`{"meshName":"bench","virtualRouterName":"router-%d","routeName":"split","spec":{"httpRoute":{"match":{"prefix":"/"},
		"action":{"weightedTargets":[{"virtualNode":"tgt-%d-a","weight":%d},{"virtualNode":"tgt-%d-b","weight":%d}]}}}}`, k, k, a, k, 100-a))
}
