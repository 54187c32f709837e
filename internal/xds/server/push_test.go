package server

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// counter returns the value of a counter the server registered.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A write's response goes to an idle stream from the fan-out, without
// waking the stream's goroutine; to a stream still awaiting the answer to
// a response, from the stream's goroutine once the answer comes, never
// from the fan-out (whose SendMsg could then wait on the client).
func TestPushWithoutHandoff(t *testing.T) {
	st := colorStore(t)
	srv := startServer(t, st, fakeTranslate)
	c := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"))
	last := envoyStart(t, c)
	waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(p ProxyStatus) bool {
		return p.Types["eds"].Acked == last[edsType].GetVersionInfo() && p.Types["rds"].Acked == last[rdsType].GetVersionInfo()
	})
	turnsFree(srv)
	const inline = "weft_xds_inline_pushes_total"
	before := counter(t, srv.reg, inline)

	// delivered waits until the server has handed the store's state at
	// rev to the streams: the fan-out is over and counted.
	delivered := func(rev store.Revision) {
		t.Helper()
		waitStatus(t, srv.Server, "mesh/m/virtualNode/red", func(ProxyStatus) bool { return srv.Revision() >= rev })
	}

	// Idle: every response answered.
	delivered(put(t, st, cloudmap.InstanceKey("srv-blue", "blue-2"), cloudmap.InstanceRecord{
		Instance: cloudmap.Instance{Id: ptr("blue-2"), Attributes: map[string]string{cloudmap.AttrIPv4: "10.0.0.2", cloudmap.AttrPort: "8080"}},
		Health:   cloudmap.HealthStatusHealthy,
	}))
	eds := c.next()
	expect(t, eds, edsType, "cds_egress_m_blue")
	if n := counter(t, srv.reg, inline) - before; n != 1 {
		t.Fatalf("%s rose by %v for a push to an idle stream, want 1", inline, n)
	}

	// Not idle: eds is not answered yet. A write that changes the
	// clusters (then the endpoints and routes): the new CDS, the type
	// before the unanswered one, goes out at once, from the stream's
	// goroutine; EDS and RDS wait for the answer.
	putNode(t, st, "m", "green")
	putService(t, st, "m", "green.local", "green")
	delivered(put(t, st, ref("m", appmesh.KindVirtualNode, "", "red").Key(), nodeData("m", "red", "blue.local", "green.local")))
	cds := c.next()
	expect(t, cds, cdsType, "cds_egress_m_blue", "cds_egress_m_green")
	if n := counter(t, srv.reg, inline) - before; n != 1 {
		t.Fatalf("%s rose by %v, want 1: a stream awaiting an answer was pushed to by the fan-out", inline, n)
	}
	c.ack(eds, "cds_egress_m_blue")
	expect(t, c.next(), edsType, "cds_egress_m_blue")
	expect(t, c.next(), rdsType, "rds_egress_http_80")
	c.ack(cds)
}

// turnsFree waits until no goroutine holds a stream's turn: the status
// shows a request's ACK as soon as it is handled, but the goroutine that
// received it holds the turn a little longer (its push, with nothing to
// send), and a fan-out that finds the turn held wakes the stream instead
// of pushing inline. Called when no request is on its way.
func turnsFree(srv *testServer) {
	srv.hub.mu.Lock()
	streams := make([]*stream, 0, len(srv.hub.streams))
	for _, s := range srv.hub.streams {
		streams = append(streams, s)
	}
	srv.hub.mu.Unlock()
	for _, s := range streams {
		s.turn.Lock()
		s.turn.Unlock() //nolint:staticcheck // waiting for the holder is the point
	}
}

// A nonce carries a random part: a client cannot answer a response it
// has not read by counting (see pushNow).
func TestNonceUnguessable(t *testing.T) {
	a, b := &stream{}, &stream{}
	seen := map[string]bool{}
	for i := 1; i <= 3; i++ {
		na, nb := a.nextNonce(), b.nextNonce()
		for _, n := range []string{na, nb} {
			num, rnd, ok := strings.Cut(n, ".")
			if !ok || num != string(rune('0'+i)) || len(rnd) < 8 {
				t.Fatalf("nonce %q: want %d.<random>", n, i)
			}
			if seen[n] {
				t.Fatalf("nonce %q given twice", n)
			}
			seen[n] = true
		}
	}
}

// routeSnapshots are n snapshots of one identity in turn, each with new
// contents of the same two route tables, as route writes make them.
func routeSnapshots(n int) []*snapshot {
	names := &nameSet{}
	snaps := make([]*snapshot, n)
	for i := range snaps {
		snap := newSnapshot()
		ts := &typeSnapshot{}
		snap.types[typeRoute] = ts
		for _, name := range routeNames {
			value := []byte(strings.Repeat(name, 30) + strconv.Itoa(i))
			ts.entries = append(ts.entries, newEntry(typeRoute, name, sha256.Sum256(value), false, value))
		}
		ts.version = "v" + strconv.Itoa(i)
		ts.full = &fullResponse{names: names}
		snaps[i] = snap
	}
	return snaps
}

// pushOnce delivers snap to a lone stream subscribed to its route tables,
// sends the response as the server's codec encodes it, and ACKs it: the
// stream's share of a push, without gRPC's.
func pushOnce(t testing.TB, c *hub, s *stream, codec xdsCodec, out *[]outgoing, snap *snapshot) {
	s.is.snap.Store(snap)
	var err error
	if *out, _, err = s.next(c, (*out)[:0], 1); err != nil || len(*out) != 1 {
		t.Fatalf("next: %d responses, %v", len(*out), err)
	}
	o := &(*out)[0]
	var m any = o.sotw
	if o.enc.set() {
		m = &o.enc
	}
	data, err := codec.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	data.Free()
	clear(*out)
	ts := snap.types[typeRoute]
	st := &s.types[typeRoute]
	if err := s.handle(context.Background(), c, request{typeURL: rdsType, version: ts.version, nonce: st.sentNonce, names: routeNames}); err != nil {
		t.Fatal(err)
	}
}

// routeNames is what the stream of pushOnce subscribes to.
var routeNames = []string{"rds_egress_http_80", "rds_ingress_http_15000"}

func newPushStream(t testing.TB, preEncode bool) (*hub, *stream, xdsCodec) {
	c := newHub(slog.New(slog.DiscardHandler), newMetrics(nil), owner)
	s := c.open(1, false, "")
	s.preEncode = preEncode
	s.is = &identState{streams: []*stream{s}}
	s.is.replicas.Store(1)
	codec, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	first := routeSnapshots(1)[0]
	s.is.snap.Store(first)
	if err := s.handle(context.Background(), c, request{typeURL: rdsType, names: routeNames}); err != nil {
		t.Fatal(err)
	}
	return c, s, codec
}

// TestPushAllocations bounds what a route write's push costs a lone
// stream in allocations: its nonce and its encoding; the ACK allocates
// nothing. As proto encodes it (a DiscoveryResponse and the list of its
// resources besides): 4. The fewest of three measurements counts: the
// encoding's buffers come from sync.Pools, which a collection empties and
// which the race detector drops from at random, so that one measurement
// on a loaded machine under -race once counted 3.
func TestPushAllocations(t *testing.T) {
	c, s, codec := newPushStream(t, true)
	snaps := routeSnapshots(306)
	i := 0
	var out []outgoing
	allocs := math.Inf(1)
	for range 3 {
		allocs = min(allocs, testing.AllocsPerRun(100, func() {
			pushOnce(t, c, s, codec, &out, snaps[i])
			i++
		}))
	}
	t.Logf("%.1f allocations per push", allocs)
	if allocs > maxPushAllocs {
		t.Fatalf("%.1f allocations per push, want at most %d", allocs, maxPushAllocs)
	}
}

// maxPushAllocs is TestPushAllocations' bound.
const maxPushAllocs = 2

// BenchmarkPush is TestPushAllocations' push, timed, encoded by the
// codec from the entries or by proto from a DiscoveryResponse:
//
//	go test -run '^$' -bench BenchmarkPush -benchmem ./internal/xds/server
func BenchmarkPush(b *testing.B) {
	for _, enc := range []bool{true, false} {
		b.Run(map[bool]string{true: "entries", false: "proto"}[enc], func(b *testing.B) {
			c, s, codec := newPushStream(b, enc)
			var snaps []*snapshot
			var out []outgoing
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%1000 == 0 {
					// New snapshots, made outside the timer, a thousand
					// at a time: as many as b.N would not fit.
					b.StopTimer()
					snaps = routeSnapshots(1000)
					b.StartTimer()
				}
				pushOnce(b, c, s, codec, &out, snaps[i%1000])
			}
		})
	}
}

// TestFullResponseFollowsSubscription: a stream sent every route table of
// its identity, which then asks for one of them, gets that one alone in
// the next snapshot with the same names (the names are shared between
// the snapshots, and what the stream found of the first must not be
// assumed of the second).
func TestFullResponseFollowsSubscription(t *testing.T) {
	c, s, codec := newPushStream(t, true)
	snaps := routeSnapshots(2)
	var out []outgoing
	pushOnce(t, c, s, codec, &out, snaps[0]) // both tables, ACKed naming both
	st := &s.types[typeRoute]
	if err := s.handle(context.Background(), c, request{typeURL: rdsType, version: snaps[0].types[typeRoute].version, nonce: st.sentNonce, names: routeNames[:1]}); err != nil {
		t.Fatal(err)
	}
	s.is.snap.Store(snaps[1])
	out, _, err := s.next(c, out[:0], 0)
	if err != nil || len(out) != 1 {
		t.Fatalf("next: %d responses, %v", len(out), err)
	}
	if out[0].enc.set() || len(out[0].sotw.GetResources()) != 1 {
		t.Fatalf("sent every table (encoded whole: %v, %d resources) to a stream asking for one", out[0].enc.set(), len(out[0].sotw.GetResources()))
	}
}
