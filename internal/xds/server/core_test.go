package server

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// testMachine drives a machine (the synchronous core) the way the runner
// does, without streams: steps, then Ready, whose updates it drops.
type testMachine struct {
	*machine
	st            store.Store
	loadDiscovery LoadDiscovery
}

// newTestMachine returns a machine for opts with the runner's
// parallelism (translations on GOMAXPROCS goroutines), as weft server
// runs it.
func newTestMachine(opts *Options, m *metrics) *testMachine {
	if m == nil {
		m = newMetrics(nil)
	}
	c := newMachine(opts, m, rand.Reader)
	c.parallel, c.workers = parallel, workers
	return &testMachine{machine: c, st: opts.Store, loadDiscovery: opts.LoadDiscovery}
}

// resync loads the store's current state, as the runner does.
func (c *testMachine) resync(ctx context.Context) (store.Revision, error) {
	var s state
	rev, err := c.st.View(ctx, func(tx store.Tx) (err error) {
		s, _, err = readState(tx, c.loadDiscovery)
		return err
	})
	if err != nil {
		return 0, err
	}
	c.Reset(s, rev, time.Now())
	c.Ready()
	return rev, nil
}

func (c *testMachine) apply(batch []store.Change, at time.Time) {
	c.Apply(batch, at, time.Now())
	c.Ready()
}

func (c *testMachine) attach(id translate.Identity) error {
	err := c.Attach([]translate.Identity{id}, time.Now())[0]
	c.Ready()
	return err
}

func (c *testMachine) detach(id translate.Identity) {
	c.Detach(id)
	c.Ready()
}
