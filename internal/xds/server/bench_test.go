package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// BenchmarkRouteWrite is the push loop's work for one route weight change
// in bench/xdsbench's mesh: 500 client nodes, 10 routed services, each
// node with two as backends, so one write recomputes 100 identities. No
// streams: this is the recompute alone (translate, validate, marshal,
// intern, index), on the benchmark's cores.
func BenchmarkRouteWrite(b *testing.B) {
	for _, bc := range []struct {
		name   string
		checks func(*Options)
	}{
		{"check", withChecks},
		{"nocheck", func(*Options) {}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := openStore(b)
			const nodes, services = 500, 10
			benchMesh(b, st, nodes, services)
			log := slog.New(slog.DiscardHandler)
			opts := &Options{Store: st, LoadDiscovery: CloudMap, Translate: translate.Translate, Log: log}
			bc.checks(opts)
			l := newLoop(opts, newHub(log, newMetrics(nil), owner), newMetrics(nil))
			ctx := context.Background()
			rev, err := l.resync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for j := range nodes {
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
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				benchRoute(b, st, i%services, 1+i%98)
				c := <-changes
				b.StartTimer()
				l.apply([]store.Change{c}, time.Now())
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6/100, "ms/identity")
		})
	}
}

func benchMesh(t testing.TB, st store.Store, nodes, services int) {
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
		putRaw(t, st, ref("bench", appmesh.KindVirtualNode, "", fmt.Sprintf("client-%d", j)), fmt.Sprintf(`{"meshName":"bench","virtualNodeName":"client-%d","spec":{"listeners":%s,
			"serviceDiscovery":{"dns":{"hostname":"client-%d.bench.local"}},
			"backends":[{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}},{"virtualService":{"virtualServiceName":"svc-%d.bench.local"}}]}}`,
			j, listener, j, j%services, (j+1)%services))
	}
}

func benchRoute(t testing.TB, st store.Store, k, a int) {
	putRaw(t, st, ref("bench", appmesh.KindRoute, fmt.Sprintf("router-%d", k), "split"), fmt.Sprintf(
		`{"meshName":"bench","virtualRouterName":"router-%d","routeName":"split","spec":{"httpRoute":{"match":{"prefix":"/"},
		"action":{"weightedTargets":[{"virtualNode":"tgt-%d-a","weight":%d},{"virtualNode":"tgt-%d-b","weight":%d}]}}}}`, k, k, a, k, 100-a))
}
