package etcdtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/store"
)

// FollowAll watches every key of st until the test ends, as weft
// server's xDS watcher does (an etcd store then keeps a mirror of its
// keys and answers writes' reads from it); caughtUp waits until the watch
// delivered every write made so far.
func FollowAll(t testing.TB, st store.Store) (caughtUp func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rev, err := st.View(ctx, func(store.Tx) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ch, err := st.Watch(ctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := rev
	moved := make(chan struct{}, 1)
	go func() { // ends when the watch's channel closes (cancel at cleanup)
		for c := range ch {
			mu.Lock()
			seen = c.Revision
			mu.Unlock()
			select {
			case moved <- struct{}{}:
			default:
			}
		}
	}()
	return func() {
		t.Helper()
		want, err := st.View(ctx, func(store.Tx) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			done := seen >= want
			mu.Unlock()
			if done {
				return
			}
			select {
			case <-moved:
			case <-deadline:
				t.Fatalf("the watch did not reach revision %d within 30 s", want)
			}
		}
	}
}

// FollowAllCaughtUp is FollowAll on each of stores, returning once every
// one has caught up with the writes made so far.
func FollowAllCaughtUp[S store.Store](t testing.TB, stores []S) {
	t.Helper()
	var caughtUp []func()
	for _, st := range stores {
		caughtUp = append(caughtUp, FollowAll(t, st))
	}
	for _, f := range caughtUp {
		f()
	}
}

// WritesDoNotConflict runs writes at once (released together, one
// goroutine each) through stores, after each store's mirror caught up
// when mirrored, and fails the test if any write failed, if any commit
// conflicted or compared the sequence key, or, mirrored, if no write read
// from a mirror (not all do: a write whose replica has seen a revision
// its mirror has not applied yet reads from etcd).
func WritesDoNotConflict[S interface {
	store.Store
	prometheus.Collector
}](t testing.TB, stores []S, mirrored bool, writes []func() error) {
	t.Helper()
	if mirrored {
		FollowAllCaughtUp(t, stores)
	}
	before := Counts(t, stores)
	errs := make(chan error, len(writes))
	start := make(chan struct{}) // releases the writers together
	var wg sync.WaitGroup
	for _, w := range writes {
		wg.Go(func() { // ends when its write returns; waited for by wg
			<-start
			errs <- w()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	after := Counts(t, stores)
	if mirrored && after.FromMirror == before.FromMirror {
		t.Errorf("no write read from a mirror, of %d", len(writes))
	}
	if n := after.Conflicts - before.Conflicts; n != 0 {
		t.Errorf("%.0f commits conflicted; want none: no write changed what another read", n)
	}
	if n := after.SequenceGuarded - before.SequenceGuarded; n != 0 {
		t.Errorf("%.0f commits compared the sequence key; want none: a write's compares must not grow with the keys it counts", n)
	}
}
