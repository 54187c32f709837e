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
// scratch and the snapshot's shared types, 692 with them.
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
	if perIdentity > 1300 {
		t.Errorf("a route write affecting every proxy allocates %.0f bytes per identity, want at most 1,300", perIdentity)
	}
}
