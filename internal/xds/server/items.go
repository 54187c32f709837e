package server

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// A translation's resources as the core interns them: each message's
// content sum, and its bytes when no interned entry has that sum.

// marshalled is one message's content sum and, when new, its bytes.
type marshalled struct {
	sum   [sha256.Size]byte
	value []byte // nil when the message was already interned
}

// worker is one translation worker's memory, kept from batch to batch:
// its marshalling buffer (most resources are already interned and need
// no bytes of their own), and the items of the results it computes. A
// write that affects every proxy made each proxy's item lists anew: 210
// of the 1,080 bytes of the server's garbage per proxy for a route
// weight change at 1,000 proxies (docs/bench/xds.md, round 18). A worker
// keeps at most one block of maxBlock items and a buffer of maxKeptBuf
// bytes: 1.9 MB, 3.8 MB on 2 cores.
type worker struct {
	buf   []byte
	items []item
}

const (
	// maxBlock bounds a block of items, about 1.8 MB: a batch of a few
	// thousand proxies per worker fits in one (a proxy of the headline
	// bench has 2 route tables, 15 resources in all). A larger batch
	// takes several; each worker keeps its last for the next batch.
	maxBlock = 16 << 10
	// maxKeptBuf bounds the marshalling buffer a worker keeps.
	maxKeptBuf = 64 << 10
)

// poisonItems, set by a test, makes done fill the block with poisoned
// instead of zeroing it: a result read after its batch, or a list kept
// past it, then serves an item no translation makes, and the
// incremental-equals-full test sees it (TestIncrementalEqualsFullPoisoned).
var poisonItems bool

var poisoned = item{name: "poisoned", sum: [sha256.Size]byte{1}, value: []byte("poisoned"), facts: &translate.Facts{Name: "poisoned"}}

// take returns n zeroed items, the caller's until the batch ends.
func (w *worker) take(n int) []item {
	if cap(w.items)-len(w.items) < n {
		// A new block; the results of this batch keep the old one.
		w.items = make([]item, 0, max(min(2*cap(w.items), maxBlock), n, 64))
	}
	i := len(w.items)
	w.items = w.items[:i+n]
	if poisonItems {
		clear(w.items[i:])
	}
	return w.items[i : i+n : i+n]
}

// done ends a batch: no message, bytes or facts stay held by w's items.
// A block made for one list over maxBlock, or a buffer over maxKeptBuf,
// is not kept.
func (w *worker) done() {
	if poisonItems {
		for i := range w.items {
			w.items[i] = poisoned
		}
	} else {
		clear(w.items)
	}
	w.items = w.items[:0]
	if cap(w.items) > maxBlock {
		w.items = nil
	}
	if cap(w.buf) > maxKeptBuf {
		w.buf = nil
	}
}

// itemsOf marshals and sums one type's resources of a translation (see
// item), in the translator's order: by name.
func itemsOf[M proto.Message](c *machine, t int, list []M, sh *shared, w *worker, grpc bool) ([]item, error) {
	items := w.take(len(list))[:0]
	for _, m := range list {
		it, err := c.item(t, m, sh, &w.buf, grpc)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	// The translator's lists are sorted by name already: sort only a
	// translator that does not (a test's).
	if byName := func(a, b item) int { return strings.Compare(a.name, b.name) }; !slices.IsSortedFunc(items, byName) {
		slices.SortFunc(items, byName)
	}
	return items, nil
}

// item is one resource of a translation: its sum, taken from the batch
// (a message another identity's translation handed out too) or from an
// earlier batch (a kept message), or marshalled (or, for a route table,
// assembled) and summed here; its bytes when no interned entry has that
// sum. It runs on a worker: it only reads the machine's state.
func (c *machine) item(t int, m proto.Message, sh *shared, buf *[]byte, grpc bool) (item, error) {
	sh.mu.Lock()
	mm, ok := sh.sums[m]
	sh.mu.Unlock()
	if !ok {
		if sum, hit := c.keptSums[m]; hit && c.entries[sum] != nil {
			// Kept from an earlier batch, and interned: neither
			// bytes nor hashing needed.
			ok, mm = true, marshalled{sum: sum}
			sh.mu.Lock()
			sh.sums[m] = mm
			sh.mu.Unlock()
		}
	}
	if !ok {
		if rc, isRoute := m.(*routev3.RouteConfiguration); isRoute && assemblable(rc) {
			// Assembled from its hosts' encodings (assemble.go).
			sum, value, err := sh.assembleRoute(rc, c.entries)
			if err != nil {
				return item{}, fmt.Errorf("marshal %s: %w", typeName(t), err)
			}
			mm = marshalled{sum: sum, value: value}
		} else {
			// Deterministic, so that equal resources hash equal.
			b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend((*buf)[:0], m)
			if err != nil {
				return item{}, fmt.Errorf("marshal %s: %w", typeName(t), err)
			}
			*buf = b
			mm.sum = sha256.Sum256(b)
			if c.entries[mm.sum] == nil {
				mm.value = slices.Clone(b)
			}
		}
		kept := c.kept.Holds(m)
		sh.mu.Lock()
		sh.sums[m] = mm
		if kept {
			sh.kept[m] = mm.sum
		}
		sh.mu.Unlock()
	}
	it := item{name: cache.GetResourceName(m), sum: mm.sum, msg: m}
	if e := c.entries[it.sum]; e != nil {
		it.facts = e.facts[index(grpc)]
	} else {
		it.value = mm.value
	}
	return it, nil
}
