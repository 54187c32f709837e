package server

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// A fleet is what a route write costs the streams' side of the server
// when every proxy is affected, one identity each (xdsbench's headline
// shape), without gRPC: the hub's delivery of a new snapshot to each
// identity, each stream's push (next, and the codec's encoding, as
// pushNow sends it), and each stream's ACK as its receiving goroutine
// handles it (handle, then next finding nothing more to send). Unlike
// BenchmarkPush's lone stream, a thousand streams, identities, loggers and
// snapshots do not stay in the processor's caches from one push to the
// next, as they do not in the server; the loggers are a text handler at
// Info, as weft server's.
type fleet struct {
	c     *hub
	codec xdsCodec
	ss    []*stream
	ups   []update
	out   [][]outgoing
	// names is each identity's nameSet, shared by its snapshots as the
	// core's install shares it between snapshots with the same names.
	names []*nameSet
}

func newFleet(t testing.TB, n int) *fleet {
	t.Helper()
	codec, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{c: newHub(slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics(nil), owner), codec: codec, out: make([][]outgoing, n), names: make([]*nameSet, n)}
	for i := range f.names {
		f.names[i] = &nameSet{}
	}
	first := f.snapshots(n, 0)
	for i := range n {
		s := f.c.open(int64(i+1), false, "")
		s.preEncode = true
		id := translate.Identity{Mesh: "m", Kind: "virtualNode", Name: "n" + strconv.Itoa(i)}
		s.ident, s.log = id, s.log.With("node", id.Name)
		f.c.mu.Lock()
		s.is = f.c.ident(id)
		s.is.streams = append(s.is.streams, s)
		s.is.replicas.Store(1)
		f.c.mu.Unlock()
		s.is.snap.Store(first[i].snap)
		s.seen = first[i].snap
		out := &f.out[i]
		s.send = func(limit int) (int, bool, error) { return f.send(s, out, limit) }
		if err := s.handle(context.Background(), f.c, request{typeURL: rdsType, names: routeNames}); err != nil {
			t.Fatal(err)
		}
		f.ss = append(f.ss, s)
	}
	f.write(t, first) // the first responses, ACKed
	return f
}

// send is serve's push: the responses the stream owes, encoded as the
// server's codec encodes them for gRPC.
func (f *fleet) send(s *stream, out *[]outgoing, limit int) (int, bool, error) {
	o, more, err := s.next(f.c, (*out)[:0], limit)
	*out = o
	if err != nil {
		return 0, false, err
	}
	for i := range o {
		var m any = o[i].sotw
		if o[i].enc.set() {
			m = &o[i].enc
		}
		data, err := f.codec.Marshal(m)
		if err != nil {
			return 0, false, err
		}
		data.Free()
	}
	clear(o)
	return len(o), more, nil
}

// snapshots are n identities' snapshots of write w: new contents of the
// same two route tables each.
func (f *fleet) snapshots(n, w int) []update {
	ups := f.ups[:0]
	for i := range n {
		snap := routeSnapshots(1)[0]
		ts := snap.types[typeRoute]
		ts.version = "v" + strconv.Itoa(w) + "." + strconv.Itoa(i)
		ts.full.names = f.names[i]
		ups = append(ups, update{id: translate.Identity{Mesh: "m", Kind: "virtualNode", Name: "n" + strconv.Itoa(i)}, snap: snap})
	}
	f.ups = ups
	return ups
}

// write delivers ups, a write's snapshots, and ACKs every push as a
// stream's receiving goroutine does (ads.go: handle, then push(0)).
func (f *fleet) write(t testing.TB, ups []update) {
	f.c.deliver(ups)
	for _, s := range f.ss {
		s.turn.Lock()
		st := &s.types[typeRoute]
		err := s.handle(context.Background(), f.c, request{typeURL: rdsType, version: st.sentVersion, nonce: st.sentNonce, names: routeNames})
		if err == nil {
			_, _, err = s.send(0)
		}
		s.turn.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkPushFleet: one route write pushed to and ACKed by 1,000
// streams of one identity each; ns/op is per stream (push and ACK).
//
//	go test -run '^$' -bench BenchmarkPushFleet -benchtime 30000x -benchmem ./internal/xds/server
func BenchmarkPushFleet(b *testing.B) {
	const n = 1000
	f := newFleet(b, n)
	b.ReportAllocs()
	var cpu time.Duration
	b.ResetTimer()
	for w := range b.N / n {
		b.StopTimer()
		ups := f.snapshots(n, w+1)
		runtime.GC() // the snapshots' garbage collected outside the timer
		before := processCPU(b)
		b.StartTimer()
		f.write(b, ups)
		b.StopTimer()
		cpu += processCPU(b) - before
		b.StartTimer()
	}
	if b.N >= n {
		// The process's CPU time per stream: on a machine others load,
		// steadier than the wall-clock ns/op.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N/n*n), "cpu-ns/stream")
	}
	for _, s := range f.ss {
		if st := &s.types[typeRoute]; st.awaiting || st.acked != s.is.snap.Load().types[typeRoute].version {
			b.Fatalf("stream %d: awaiting %v, acked %q", s.id, st.awaiting, st.acked)
		}
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
