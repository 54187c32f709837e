package cluster

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestConnectTimeoutPositive: a connect_timeout of 0 or less, or not a
// valid duration, is refused, as Envoy's proto validation refuses it
// (gt 0): the goroutine path failed every connect at once with it, and
// the loops took it for unset; 1 ns is taken.
func TestConnectTimeoutPositive(t *testing.T) {
	build := func(d *durationpb.Duration) error {
		pb := &clusterv3.Cluster{Name: "c", ConnectTimeout: d,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LoadAssignment:       assignmentOf("c", "127.0.0.1:80")}
		_, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
		return err
	}
	for _, d := range []time.Duration{0, -time.Second, -time.Nanosecond} {
		if err, want := build(durationpb.New(d)), fmt.Sprintf("cluster c: connect_timeout %v: value must be greater than 0s", d); fmt.Sprint(err) != want {
			t.Errorf("Build with %v: %v, want %s", d, err, want)
		}
	}
	if err, want := build(&durationpb.Duration{Seconds: 1, Nanos: -1}), "cluster c: connect_timeout: value is not a valid duration"; fmt.Sprint(err) != want {
		t.Errorf("Build with 1 s and -1 ns: %v, want %s", err, want)
	}
	if err := build(durationpb.New(time.Nanosecond)); err != nil {
		t.Errorf("Build with 1 ns: %v", err)
	}
}
