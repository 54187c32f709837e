package server

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/store"
)

// TestRouteWriteGarbage bounds the bytes the core allocates per affected
// identity when a route write affects every proxy (the headline shape of
// bench/xdsbench, 500 identities): the core's working memory is reused
// from batch to batch (scratch), so what remains is each identity's new
// snapshot and route table. At 1,000 proxies this garbage sets how often
// the server collects, and a write that overlaps a collection is the
// slowest (docs/bench/xds.md, round 17). It was 1,614 bytes before the
// scratch and the snapshot's shared types, 692 with them, 466-471 with
// the workers' items kept (worker, round 18).
func TestRouteWriteGarbage(t *testing.T) {
	st, l, changes := benchMachine(t, shapeEvery, func(*Options) {})
	const warm, writes = 3, 20
	var total uint64
	var ms runtime.MemStats
	for i := range warm + writes {
		benchRoute(t, st, 0, 1+i%98)
		c := <-changes
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		l.apply([]store.Change{c}, time.Now())
		runtime.ReadMemStats(&ms)
		if i >= warm {
			total += ms.TotalAlloc - before
		}
	}
	if got := testutil.ToFloat64(l.metrics.routeUpdates); got != (warm+writes)*benchNodes {
		t.Fatalf("%v route-only updates, want every identity on every write (%d)", got, (warm+writes)*benchNodes)
	}
	perIdentity := float64(total) / writes / benchNodes
	t.Logf("%.0f bytes allocated per identity and write", perIdentity)
	if perIdentity > 600 {
		t.Errorf("a route write affecting every proxy allocates %.0f bytes per identity, want at most 600", perIdentity)
	}
}

// TestWorkerItems: the items a worker hands out are zeroed, none reaches
// into another's (an append to one cannot overwrite the next), a batch's
// end drops every reference they held, a batch of many lists takes blocks
// of at most maxBlock items, and a worker keeps no more than one block of
// maxBlock for the next batch.
func TestWorkerItems(t *testing.T) {
	var w worker
	a := w.take(3)
	b := w.take(2)
	for i := range a {
		a[i] = item{name: "a", value: []byte("x")}
	}
	if cap(a) != 3 {
		t.Fatalf("cap %d, want 3: an append would write into the next list", cap(a))
	}
	_ = append(a, item{name: "appended"})
	if b[0].name != "" || b[1].name != "" {
		t.Fatalf("the second list holds %q, %q after the first grew", b[0].name, b[1].name)
	}
	b[1] = item{name: "b"}
	block := w.items[:cap(w.items)]
	w.done()
	for i, it := range block {
		if it.name != "" || it.value != nil {
			t.Fatalf("item %d of the kept block still holds %q after done", i, it.name)
		}
	}
	c := w.take(5)
	if &c[0] != &block[0] {
		t.Fatal("the next batch did not reuse the kept block")
	}
	for range 10 { // 10 blocks' worth in lists of 1,000
		for range maxBlock / 1000 {
			w.take(1000)
		}
	}
	if cap(w.items) > maxBlock {
		t.Fatalf("a block of %d items, want at most %d", cap(w.items), maxBlock)
	}
	w.done()
	if w.items == nil || len(w.items) != 0 {
		t.Fatal("the last block was not kept for the next batch")
	}
	w.take(maxBlock + 1) // one list over a block
	w.done()
	if w.items != nil {
		t.Fatalf("a worker keeps %d items after a batch, want at most %d", cap(w.items), maxBlock)
	}
}
