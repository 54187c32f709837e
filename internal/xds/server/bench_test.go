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
	"github.com/weftmesh/weft/internal/xds/translate"
)

// BenchmarkRouteWrite is the push loop's work for one route weight change
// in bench/xdsbench's mesh: 500 client nodes, 10 routed services, each
// node with two as backends, so one write recomputes 100 identities. No
// streams: this is the recompute alone (translate, validate, marshal,
// intern, index), on the benchmark's cores.
func BenchmarkRouteWrite(b *testing.B) {
	benchWrites(b, false, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, i%benchServices, 1+i%98) })
}

// BenchmarkRouteWriteEvery is bench/xdsbench's headline shape: every
// client node has service 0 as a backend, one other, and one of its own
// (so no two share an egress), and each write changes service 0's
// weights, so every one of the 500 identities is recomputed.
func BenchmarkRouteWriteEvery(b *testing.B) {
	benchWrites(b, true, func(b *testing.B, st store.Store, i int) { benchRoute(b, st, 0, 1+i%98) })
}

// BenchmarkEndpointWrite is the same for a Cloud Map instance registered
// or deregistered: the 100 identities that read it get their
// ClusterLoadAssignments rebuilt, nothing is translated.
func BenchmarkEndpointWrite(b *testing.B) {
	benchWrites(b, false, func(b *testing.B, st store.Store, i int) {
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

const benchNodes, benchServices = 500, 10

// benchWrites times the push loop's apply of each write, with and
// without validation; every: benchMesh's headline shape.
func benchWrites(b *testing.B, every bool, write func(b *testing.B, st store.Store, i int)) {
	affected := 2 * benchNodes / benchServices
	if every {
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
			st := openStore(b)
			benchMesh(b, st, benchNodes, benchServices, every)
			log := slog.New(slog.DiscardHandler)
			opts := &Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.TranslateWith, Log: log}
			bc.checks(opts)
			l := newTestMachine(opts, nil)
			ctx := context.Background()
			rev, err := l.resync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for j := range benchNodes {
				if err := l.attach(translate.Identity{MeshOwner: owner, Mesh: "bench", Kind: appmesh.KindVirtualNode, Name: fmt.Sprintf("client-%d", j)}); err != nil {
					b.Fatal(err)
				}
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			changes, err := st.Watch(wctx, "", rev)
			if err != nil {
				b.Fatal(err)
			}
			translations0, updates0 := testutil.ToFloat64(l.metrics.translations), testutil.ToFloat64(l.metrics.epUpdates)
			shared0 := testutil.ToFloat64(l.metrics.sharedEgress)
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
		})
	}
}

// benchMesh is bench/xdsbench's mesh: nodes client nodes calling
// services routed services. Each node has two of them as backends;
// every: service 0 and one other, and a backend of its own (a service
// that does not exist), so that no two nodes share an egress.
func benchMesh(t testing.TB, st store.Store, nodes, services int, every bool) {
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
		a, b, own := j%services, (j+1)%services, ""
		if every {
			a, b = 0, 1+j%(services-1)
			own = fmt.Sprintf(`,{"virtualService":{"virtualServiceName":"own-%d.bench.local"}}`, j)
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
