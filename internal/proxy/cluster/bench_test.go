package cluster

import (
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// BenchmarkRequestAccounting: what the event loops do with a cluster
// for each request they route to it and whose answer comes (loopRouter
// and loopObserver in package proxy): a host picked, its request started,
// the response code counted, the request done.
func BenchmarkRequestAccounting(b *testing.B) {
	pb := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       assignmentOf("c", "127.0.0.1:8001", "127.0.0.1:8002")}
	c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.halt)
	b.ReportAllocs()
	for b.Loop() {
		h, err := c.Pick(nil, 1)
		if err != nil {
			b.Fatal(err)
		}
		h.RequestStarted()
		c.Stats.Response(200)
		c.RequestDone(h, 200, false, false)
	}
}
