package cluster

import (
	"context"
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestTryAcquireKeepsTheQueueFair: TryAcquire is Acquire's rule without
// the wait (max_connections 1, max_pending_requests 1): a slot while one
// is free; WouldQueue, counting nothing, while max_connections is held
// and while a request waits (a release hands its slot to the waiter, not
// to a newcomer); an overflow, counted as Acquire counts it, once the
// queue is full; max_requests before either.
func TestTryAcquireKeepsTheQueueFair(t *testing.T) {
	pb := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       assignmentOf("c", "127.0.0.1:1"),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1), MaxRequests: wrapperspb.UInt32(3)}}}}
	c, err := Build(pb, stats.NewStore(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.halt)
	counts := func() [4]int64 {
		return [4]int64{c.Stats.CxOverflow.Value(), c.Stats.RqPendingTo.Value(), c.Stats.RqPendingOverflow.Value(), c.Stats.RqActive.Value()}
	}
	if s := c.TryAcquire(nil, true); s != Acquired {
		t.Fatalf("a free slot: %d, want Acquired", s)
	}
	if s := c.TryAcquire(nil, true); s != WouldQueue || counts() != [4]int64{0, 0, 0, 1} {
		t.Fatalf("max_connections held: %d, counts %v; want WouldQueue, nothing counted", s, counts())
	}
	got := make(chan error, 1)
	var release func()
	go func() { // ends once the slot is handed over, or at the test's end
		r, err := c.Acquire(context.Background(), nil, true)
		release = r
		got <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats.RqPendingActive.Value() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("Acquire did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	if s := c.TryAcquire(nil, true); s != PendingOverflow || counts() != [4]int64{2, 1, 1, 2} {
		t.Fatalf("the queue full: %d, counts %v; want PendingOverflow, cx_overflow 2, pending_total 1, pending_overflow 1, active 2", s, counts())
	}
	c.ReleaseConnection() // the first slot: handed to the waiter
	c.ReleaseRequest()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if s := c.TryAcquire(nil, true); s != WouldQueue {
		t.Fatalf("the slot handed to the waiter: %d, want WouldQueue", s)
	}
	if s := c.TryAcquire(nil, false); s != Acquired {
		t.Fatalf("an HTTP/2 request: %d, want Acquired (no connection slot)", s)
	}
	if s := c.TryAcquire(nil, false); s != Acquired {
		t.Fatalf("the third request: %d, want Acquired", s)
	}
	if s := c.TryAcquire(nil, false); s != Overflow || counts() != [4]int64{2, 1, 2, 3} {
		t.Fatalf("max_requests: %d, counts %v; want Overflow, pending_overflow 2", s, counts())
	}
	release()
	c.ReleaseRequest()
	c.ReleaseRequest()
	if s := c.TryAcquire(nil, true); s != Acquired || counts()[3] != 1 {
		t.Fatalf("all given back: %d, active %d; want Acquired, 1", s, counts()[3])
	}
}
