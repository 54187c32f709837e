package server

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// windowOf sets the push window's size and timeout.
func windowOf(n int, timeout time.Duration) func(*Options) {
	return func(o *Options) { o.Limits.MaxPushesInFlight, o.Limits.PushTimeout = n, timeout }
}

// replicasOf starts n Envoy-like replicas of red, each through Envoy's
// start, and waits until the server has their ACKs.
func replicasOf(t *testing.T, srv *testServer, n int) []*adsClient {
	t.Helper()
	cs := make([]*adsClient, n)
	for i := range cs {
		cs[i] = dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
		envoyStart(t, cs[i])
	}
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Replicas == n && p.Types["rds"].AckedReplicas == n && p.Types["eds"].AckedReplicas == n
	})
	return cs
}

// pollOnce returns a response waiting on one of cs but those in skip,
// without waiting: -1 when none is.
func pollOnce(t *testing.T, cs []*adsClient, skip map[int]bool) (int, *discovery.DiscoveryResponse) {
	t.Helper()
	for i, c := range cs {
		if skip[i] {
			continue
		}
		select {
		case r, ok := <-c.recv:
			if !ok {
				t.Fatalf("replica %d: stream ended: %v", i, c.err)
			}
			return i, r
		default:
		}
	}
	return -1, nil
}

// nextOf waits for a response on any of cs but those in skip, and says
// whose it is.
func nextOf(t *testing.T, cs []*adsClient, skip map[int]bool) (int, *discovery.DiscoveryResponse) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if i, r := pollOnce(t, cs, skip); i >= 0 {
			return i, r
		}
	}
	t.Fatalf("no response within %v", wait)
	return 0, nil
}

// quiet checks that none of cs but those in skip gets a response for d.
func quiet(t *testing.T, cs []*adsClient, skip map[int]bool, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if i, r := pollOnce(t, cs, skip); i >= 0 {
			t.Fatalf("replica %d was pushed %s version %s with the window full", i, r.GetTypeUrl(), r.GetVersionInfo())
		}
	}
}

// edsPushes waits for an EDS push of the write on n replicas of cs not
// yet in got, adds each to got, and returns the pushes and whose they
// are, in the order they came.
func edsPushes(t *testing.T, cs []*adsClient, got map[int]bool, n int) ([]*discovery.DiscoveryResponse, []int) {
	t.Helper()
	var rs []*discovery.DiscoveryResponse
	var of []int
	for range n {
		i, r := nextOf(t, cs, got)
		expect(t, r, edsType, "cds_egress_m_blue")
		got[i] = true
		rs, of = append(rs, r), append(of, i)
	}
	return rs, of
}

// TestPushWindow: with a window of 2, a write that affects 4 replicas is
// pushed to 2 of them; the others wait, and are pushed to one by one as
// an ACK or a NACK frees a slot. The gauges say how many hold and wait.
func TestPushWindow(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate, windowOf(2, time.Minute))
	cs := replicasOf(t, srv, 4)
	m := srv.hub.metrics
	queuedBefore := testutil.ToFloat64(m.pushesQueued)

	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	got := map[int]bool{}
	first, firstOf := edsPushes(t, cs, got, 2)
	quiet(t, cs, got, 200*time.Millisecond)
	if in, w := testutil.ToFloat64(m.pushesInFlight), testutil.ToFloat64(m.pushesWaiting); in != 2 || w != 2 {
		t.Fatalf("in flight %v, waiting %v; want 2 and 2", in, w)
	}

	// An ACK frees a slot: one more replica is pushed to, by the
	// goroutine that read the ACK (counted as an inline push: no
	// goroutine woken for it).
	turnsFree(srv)
	inlineBefore := testutil.ToFloat64(m.inlinePushes)
	cs[firstOf[0]].ack(first[0], "cds_egress_m_blue")
	edsPushes(t, cs, got, 1)
	quiet(t, cs, got, 100*time.Millisecond)
	if n := testutil.ToFloat64(m.inlinePushes) - inlineBefore; n != 1 {
		t.Fatalf("inline_pushes_total rose by %v for the push a freed slot granted, want 1", n)
	}

	// A NACK frees one too: the last replica is pushed to.
	cs[firstOf[1]].request(edsType, "", first[1].GetNonce(), []string{"cds_egress_m_blue"}, "rejected")
	lasts, lastOf := edsPushes(t, cs, got, 1)
	if q := testutil.ToFloat64(m.pushesQueued) - queuedBefore; q != 2 {
		t.Fatalf("pushes_queued_total rose by %v, want 2", q)
	}
	cs[lastOf[0]].ack(lasts[0], "cds_egress_m_blue")
	if testutil.ToFloat64(m.pushesWaiting) != 0 {
		t.Fatal("a replica still waits")
	}
}

// TestPushWindowClose: a stream that closes holding a slot gives it to
// the next one waiting.
func TestPushWindowClose(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate, windowOf(1, time.Minute))
	cs := replicasOf(t, srv, 2)
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	got := map[int]bool{}
	_, of := edsPushes(t, cs, got, 1)
	quiet(t, cs, got, 200*time.Millisecond)
	cs[of[0]].close()
	edsPushes(t, cs, got, 1)
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool { return p.Replicas == 1 })
	if in := testutil.ToFloat64(srv.hub.metrics.pushesInFlight); in != 1 {
		t.Fatalf("in flight %v, want 1 (the remaining replica's)", in)
	}
}

// TestPushWindowTimeout: clients that never answer hold their slots for
// the push timeout only; the timer then pushes to the next ones, with no
// other event to drive it.
func TestPushWindowTimeout(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate, windowOf(1, 100*time.Millisecond))
	cs := replicasOf(t, srv, 3)
	before := testutil.ToFloat64(srv.hub.metrics.pushTimeouts)
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	edsPushes(t, cs, map[int]bool{}, 3)
	if n := testutil.ToFloat64(srv.hub.metrics.pushTimeouts) - before; n < 2 {
		t.Fatalf("push_timeouts_total rose by %v, want at least 2", n)
	}
}

// TestPushWindowUnbounded: a negative size means no window: every replica
// is pushed to at once, none answering.
func TestPushWindowUnbounded(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate, windowOf(-1, 0))
	cs := replicasOf(t, srv, 3)
	putInstance(t, st, "blue", "blue-2", "10.0.0.2")
	edsPushes(t, cs, map[int]bool{}, 3)
	if srv.hub.win != nil {
		t.Fatalf("a window of size %d", srv.hub.win.max)
	}
}

// TestPushWindowHeldBounded: the window's list of slots given stays about
// the size of the slots held, in a window that never fills (no stream
// waits, so no timer trims it) and with one stream holding its slot
// throughout, at the list's head. It grew by an entry a push before.
func TestPushWindowHeldBounded(t *testing.T) {
	w := newWindow(1024, time.Minute, newMetrics(nil))
	stuck := &stream{}
	if !w.take(stuck) {
		t.Fatal("no slot in an empty window")
	}
	streams := make([]*stream, 100)
	for i := range streams {
		streams[i] = &stream{}
	}
	for range 1000 {
		for i, s := range streams {
			if !w.take(s) {
				t.Fatalf("stream %d: no slot with %d held of %d", i, w.inFlight, w.max)
			}
		}
		for _, s := range streams {
			if next := w.release(s); next != nil {
				t.Fatal("a slot went to a waiter, with none waiting")
			}
		}
	}
	if w.inFlight != 1 || stuck.slot == 0 {
		t.Fatalf("%d slots held, the stuck stream's slot %d; want 1, its own", w.inFlight, stuck.slot)
	}
	if n := len(w.held) - w.heldAt; n > 2*len(streams)+64+1 {
		t.Fatalf("%d entries in the list of slots given after 100,000 pushes, with at most %d slots held at once", n, len(streams)+1)
	}
	// The one slot still held is still listed: its timeout still applies.
	found := false
	for _, e := range w.held[w.heldAt:] {
		found = found || e.s == stuck && e.seq == stuck.slot
	}
	if !found {
		t.Fatal("the slot still held is not in the list")
	}
}
