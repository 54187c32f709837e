package follow_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/follow"
)

const wait = 20 * time.Second

// flaky is a real store whose watches the test can break: the first
// Watch fails with ErrCompacted (as when the snapshot's revision was
// compacted before the watch opened), and drop closes the open watch's
// channel (as a store does to a reader that fell behind).
type flaky struct {
	*bolt.Store
	mu        sync.Mutex
	compacted bool
	cancel    context.CancelFunc
	watches   int
}

func (f *flaky) Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches++
	if !f.compacted {
		f.compacted = true
		return nil, store.ErrCompacted
	}
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	return f.Store.Watch(ctx, prefix, from)
}

func (f *flaky) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancel()
}

func put(t *testing.T, st store.Store, key, value string) store.Revision {
	t.Helper()
	rev, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, []byte(value)) })
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestRun: a reader following with Run holds exactly the store's keys
// after each write, across a compacted first watch and a dropped one,
// and Run returns ctx's error when ctx ends.
func TestRun(t *testing.T) {
	bs, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	src := &flaky{Store: bs}
	put(t, src, "a/1", "x")
	put(t, src, "b/1", "ignored: outside the prefix")

	type step struct {
		full bool
		rev  store.Revision
		keys map[string]string
	}
	steps := make(chan step, 16)
	keys := map[string]string{}
	read := func(tx store.Tx) error {
		kvs, err := tx.List("a/", "", 0)
		if err != nil {
			return err
		}
		keys = map[string]string{}
		for _, kv := range kvs {
			keys[kv.Key] = string(kv.Value)
		}
		return nil
	}
	snapshot := func(full bool, rev store.Revision) {
		c := make(map[string]string, len(keys))
		for k, v := range keys {
			c[k] = v
		}
		steps <- step{full, rev, c}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { // ends when ctx is cancelled below
		done <- follow.Run(ctx, src, "a/", read, func(rev store.Revision) { snapshot(true, rev) }, func(batch []store.Change) {
			for _, c := range batch {
				for _, ev := range c.Events {
					if ev.Type == store.EventPut {
						keys[ev.KV.Key] = string(ev.KV.Value)
					} else {
						delete(keys, ev.KV.Key)
					}
				}
			}
			snapshot(false, batch[len(batch)-1].Revision)
		})
	}()
	next := func(want step) {
		t.Helper()
		select {
		case got := <-steps:
			if got.full != want.full || got.rev != want.rev || len(got.keys) != len(want.keys) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			for k, v := range want.keys {
				if got.keys[k] != v {
					t.Fatalf("got %+v, want %+v", got, want)
				}
			}
		case err := <-done:
			t.Fatalf("Run returned %v", err)
		case <-time.After(wait):
			t.Fatal("no step")
		}
	}
	// The first watch was compacted: Run read a second snapshot.
	next(step{true, bs.Revision(), map[string]string{"a/1": "x"}})
	if src.watches != 2 {
		t.Fatalf("%d watches, want 2 (one compacted)", src.watches)
	}
	rev := put(t, src, "a/2", "y")
	next(step{false, rev, map[string]string{"a/1": "x", "a/2": "y"}})
	// A dropped watch: Run reads the store again, whole.
	src.drop()
	next(step{true, bs.Revision(), map[string]string{"a/1": "x", "a/2": "y"}})
	rev = put(t, src, "a/1", "z")
	next(step{false, rev, map[string]string{"a/1": "z", "a/2": "y"}})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after ctx ended")
	}
}

// down is a real store whose reads fail with ErrUnavailable the first
// failures times, as etcd's do while the cluster cannot be reached.
type down struct {
	*bolt.Store
	mu       sync.Mutex
	failures int
}

func (d *down) View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	d.mu.Lock()
	fail := d.failures > 0
	d.failures--
	d.mu.Unlock()
	if fail {
		return 0, errors.Join(store.ErrUnavailable, errors.New("etcd: no leader"))
	}
	return d.Store.View(ctx, fn)
}

// TestLoadWaitsForAnUnavailableStore: Load retries a store that cannot be
// reached instead of failing the reader (the xDS server and DNS would
// stop), and gives up only when ctx ends.
func TestLoadWaitsForAnUnavailableStore(t *testing.T) {
	bs, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	want := put(t, bs, "a/1", "x")
	src := &down{Store: bs, failures: 3}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	f := follow.New(src, "a/")
	var seen int
	rev, err := f.Load(ctx, func(tx store.Tx) error {
		seen++
		return nil
	})
	if err != nil || rev != want || seen != 1 {
		t.Fatalf("Load after 3 unavailable reads = rev %d, %v, read called %d times; want rev %d, nil, once", rev, err, seen, want)
	}

	src.mu.Lock()
	src.failures = 1 << 30
	src.mu.Unlock()
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := f.Load(short, func(store.Tx) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Load on a store that stays unavailable = %v, want ctx's deadline", err)
	}
}
