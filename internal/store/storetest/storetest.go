// Package storetest is the behaviour every store.Store must show. Each
// implementation's tests call Run with a constructor.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
)

// Factory returns an empty store for one test. Reopen, when set, closes s
// and opens the same data again, to test durability. Compact makes the
// history before the current revision unavailable to Watch (bolt: reopen;
// etcd: compact) and returns the store to use afterwards.
type Factory struct {
	New     func(t *testing.T) store.Store
	Reopen  func(t *testing.T, s store.Store) store.Store
	Compact func(t *testing.T, s store.Store) store.Store
}

func put(t *testing.T, s store.Store, kvs ...string) store.Revision {
	t.Helper()
	rev, err := s.Update(context.Background(), func(tx store.Tx) error {
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := tx.Put(kvs[i], []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	return rev
}

func get(t *testing.T, s store.Store, key string) (store.KV, bool) {
	t.Helper()
	var kv store.KV
	var ok bool
	_, err := s.View(context.Background(), func(tx store.Tx) error {
		var err error
		kv, ok, err = tx.Get(key)
		return err
	})
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	return kv, ok
}

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
	}
	return store.Change{}
}

// Run runs the suite.
func Run(t *testing.T, f Factory) {
	ctx := context.Background()

	t.Run("PutGetRevisions", func(t *testing.T) {
		s := f.New(t)
		r1 := put(t, s, "a", "1")
		r2 := put(t, s, "a", "2", "b", "x")
		if r2 != r1+1 {
			t.Fatalf("revisions %d then %d, want +1", r1, r2)
		}
		kv, ok := get(t, s, "a")
		if !ok || string(kv.Value) != "2" || kv.CreateRevision != r1 || kv.ModRevision != r2 {
			t.Fatalf("got %+v ok=%v, want value 2 created %d modified %d", kv, ok, r1, r2)
		}
		if _, ok := get(t, s, "missing"); ok {
			t.Fatal("missing key found")
		}
	})

	t.Run("FailedUpdateWritesNothing", func(t *testing.T) {
		s := f.New(t)
		r1 := put(t, s, "a", "1")
		boom := errors.New("boom")
		_, err := s.Update(ctx, func(tx store.Tx) error {
			tx.Put("a", []byte("2"))
			tx.Put("b", []byte("2"))
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		kv, _ := get(t, s, "a")
		if string(kv.Value) != "1" {
			t.Fatalf("a = %q after failed update", kv.Value)
		}
		if _, ok := get(t, s, "b"); ok {
			t.Fatal("b written by failed update")
		}
		rev, err := s.Update(ctx, func(tx store.Tx) error { return nil })
		if err != nil || rev != r1 {
			t.Fatalf("empty update: rev %d err %v, want %d", rev, err, r1)
		}
	})

	t.Run("PanicInUpdateIsAnError", func(t *testing.T) {
		s := f.New(t)
		_, err := s.Update(ctx, func(tx store.Tx) error { panic("bad") })
		if err == nil {
			t.Fatal("panic did not become an error")
		}
		put(t, s, "still", "works")
	})

	t.Run("ReadOwnWrites", func(t *testing.T) {
		s := f.New(t)
		put(t, s, "p/1", "a", "p/3", "c")
		_, err := s.Update(ctx, func(tx store.Tx) error {
			tx.Put("p/2", []byte("b"))
			tx.Delete("p/3")
			kv, ok, _ := tx.Get("p/2")
			if !ok || string(kv.Value) != "b" {
				return fmt.Errorf("own put not visible: %+v", kv)
			}
			if _, ok, _ := tx.Get("p/3"); ok {
				return errors.New("own delete not visible")
			}
			list, err := tx.List("p/", "", 0)
			if err != nil {
				return err
			}
			if len(list) != 2 || list[0].Key != "p/1" || list[1].Key != "p/2" {
				return fmt.Errorf("list in tx = %v", keys(list))
			}
			if n, _ := tx.Count("p/"); n != 2 {
				return fmt.Errorf("count in tx = %d", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	// Unguarded reads the transaction's snapshot with its writes, as the
	// Tx's own reads do; in a View, the same.
	t.Run("UnguardedReads", func(t *testing.T) {
		s := f.New(t)
		put(t, s, "p/1", "a", "p/3", "c", "q/1", "x", "q/2", "y")
		check := func(r store.Reader, own bool) error {
			want := []string{"p/1", "p/3"}
			if own {
				want = []string{"p/1", "p/2"}
			}
			list, err := r.List("p/", "", 0)
			if err != nil {
				return err
			}
			if fmt.Sprint(keys(list)) != fmt.Sprint(want) {
				return fmt.Errorf("unguarded list = %v, want %v", keys(list), want)
			}
			if n, err := r.Count("p/"); err != nil || n != 2 {
				return fmt.Errorf("unguarded count of p/ = %d, %v; want 2", n, err)
			}
			if n, err := r.Count("q/"); err != nil || n != 2 {
				return fmt.Errorf("unguarded count of q/ = %d, %v; want 2", n, err)
			}
			if page, err := r.List("q/", "q/1", 1); err != nil || fmt.Sprint(keys(page)) != "[q/2]" {
				return fmt.Errorf("unguarded page after q/1 = %v, %v; want [q/2]", keys(page), err)
			}
			kv, ok, err := r.Get("p/3")
			if err != nil || ok == own || !own && string(kv.Value) != "c" {
				return fmt.Errorf("unguarded get of p/3 = %+v, %v, %v", kv, ok, err)
			}
			if kv, ok, err := r.Get(want[1]); err != nil || !ok || kv.Key != want[1] {
				return fmt.Errorf("unguarded get of %s = %+v, %v, %v", want[1], kv, ok, err)
			}
			return nil
		}
		_, err := s.Update(ctx, func(tx store.Tx) error {
			if err := check(tx.Unguarded(), false); err != nil {
				return fmt.Errorf("before the writes: %w", err)
			}
			tx.Put("p/2", []byte("b"))
			tx.Delete("p/3")
			if err := check(tx.Unguarded(), true); err != nil {
				return fmt.Errorf("after the writes: %w", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.View(ctx, func(tx store.Tx) error { return check(tx.Unguarded(), true) }); err != nil {
			t.Fatalf("in a view: %v", err)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		s := f.New(t)
		for i := 0; i < 25; i++ {
			put(t, s, fmt.Sprintf("l/%02d", i), "v")
		}
		put(t, s, "m/0", "other prefix", "l", "shorter")
		var all []string
		after := ""
		for {
			var page []store.KV
			_, err := s.View(ctx, func(tx store.Tx) error {
				var err error
				page, err = tx.List("l/", after, 10)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, keys(page)...)
			if len(page) < 10 {
				break
			}
			after = page[len(page)-1].Key
		}
		if len(all) != 25 || all[0] != "l/00" || all[24] != "l/24" {
			t.Fatalf("paged keys = %v", all)
		}
	})

	t.Run("ReadOnlyView", func(t *testing.T) {
		s := f.New(t)
		_, err := s.View(ctx, func(tx store.Tx) error { return tx.Put("x", nil) })
		if !errors.Is(err, store.ErrReadOnly) {
			t.Fatalf("put in view: %v", err)
		}
	})

	t.Run("WatchFromRevision", func(t *testing.T) {
		s := f.New(t)
		r1 := put(t, s, "w/a", "1")
		put(t, s, "x/ignored", "1")
		r3 := put(t, s, "w/b", "1")
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := s.Watch(wctx, "w/", r1)
		if err != nil {
			t.Fatal(err)
		}
		c := next(t, ch)
		if c.Revision != r3 || len(c.Events) != 1 || c.Events[0].KV.Key != "w/b" {
			t.Fatalf("replayed %+v, want w/b at %d", c, r3)
		}
		if c.Committed.IsZero() || c.Committed.After(time.Now()) {
			t.Fatalf("commit time %v: want the moment the change became durable", c.Committed)
		}
		var r4 store.Revision
		r4, _ = s.Update(ctx, func(tx store.Tx) error { return tx.Delete("w/a") })
		c = next(t, ch)
		if c.Revision != r4 || c.Events[0].Type != store.EventDelete || string(c.Events[0].KV.Value) != "1" {
			t.Fatalf("delete event %+v", c)
		}
		cancel()
		for range ch { // must close after cancel
		}
	})

	t.Run("ConcurrentUpdatesAllCommitted", func(t *testing.T) {
		s := f.New(t)
		const n = 200
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := s.Watch(wctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		revs := make([]store.Revision, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() { // ends when its Update returns; waited for by wg
				defer wg.Done()
				r, err := s.Update(ctx, func(tx store.Tx) error {
					kv, _, _ := tx.Get("counter")
					return tx.Put("counter", append(kv.Value, 'x'))
				})
				if err != nil {
					t.Error(err)
				}
				revs[i] = r
			}()
		}
		wg.Wait()
		seen := map[store.Revision]bool{}
		for _, r := range revs {
			if seen[r] {
				t.Fatalf("revision %d returned twice", r)
			}
			seen[r] = true
		}
		kv, _ := get(t, s, "counter")
		if len(kv.Value) != n {
			t.Fatalf("counter has %d increments, want %d (lost update)", len(kv.Value), n)
		}
		last := store.Revision(0)
		for i := 0; i < n; i++ {
			c := next(t, ch)
			if c.Revision != last+1 && last != 0 {
				t.Fatalf("watch revision %d after %d", c.Revision, last)
			}
			last = c.Revision
		}
	})

	if f.Reopen != nil {
		t.Run("DurableAcrossReopen", func(t *testing.T) {
			s := f.New(t)
			put(t, s, "d/1", "one")
			r := put(t, s, "d/2", "two")
			s = f.Reopen(t, s)
			kv, ok := get(t, s, "d/2")
			if !ok || string(kv.Value) != "two" || kv.ModRevision != r {
				t.Fatalf("after reopen: %+v ok=%v", kv, ok)
			}
			if r2 := put(t, s, "d/3", "three"); r2 != r+1 {
				t.Fatalf("revision after reopen %d, want %d", r2, r+1)
			}
		})
	}

	t.Run("WatchCompactedThenResync", func(t *testing.T) {
		s := f.New(t)
		r1 := put(t, s, "c/1", "a")
		put(t, s, "c/2", "b")
		s = f.Compact(t, s)
		if _, err := s.Watch(ctx, "c/", r1-1); !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("watch from compacted revision %d: %v, want ErrCompacted", r1-1, err)
		}
		// The documented resync: a snapshot, then a watch from its revision.
		var n int
		rev, err := s.View(ctx, func(tx store.Tx) error {
			var err error
			n, err = tx.Count("c/")
			return err
		})
		if err != nil || n != 2 {
			t.Fatalf("snapshot: %d keys, err %v", n, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := s.Watch(wctx, "c/", rev)
		if err != nil {
			t.Fatalf("watch from the snapshot's revision: %v", err)
		}
		r3 := put(t, s, "c/3", "c")
		if c := next(t, ch); c.Revision != r3 || c.Events[0].KV.Key != "c/3" {
			t.Fatalf("after resync got %+v, want c/3 at %d", c, r3)
		}
	})

	// A name checked absent then created: of many concurrent creators of
	// the same name exactly one may succeed (App Mesh's name uniqueness).
	t.Run("UniqueNameUnderContention", func(t *testing.T) {
		s := f.New(t)
		errExists := errors.New("exists")
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() { // ends when its Update returns; waited for by wg
				defer wg.Done()
				_, err := s.Update(ctx, func(tx store.Tx) error {
					if _, ok, err := tx.Get("route/r1"); err != nil {
						return err
					} else if ok {
						return errExists
					}
					return tx.Put("route/r1", fmt.Appendf(nil, "writer %d", i))
				})
				switch {
				case err == nil:
					mu.Lock()
					won++
					mu.Unlock()
				case !errors.Is(err, errExists):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d creators of one name succeeded, want 1", won)
		}
	})

	// A quota checked with Count: concurrent creators under one prefix must
	// not exceed it, although each creates a different key.
	t.Run("QuotaUnderContention", func(t *testing.T) {
		s := f.New(t)
		const quota = 3
		errQuota := errors.New("quota")
		put(t, s, "q", "outside the prefix", "qz/0", "outside too")
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() { // ends when its Update returns; waited for by wg
				defer wg.Done()
				_, err := s.Update(ctx, func(tx store.Tx) error {
					n, err := tx.Count("q/")
					if err != nil {
						return err
					}
					if n >= quota {
						return errQuota
					}
					return tx.Put(fmt.Sprintf("q/%02d", i), nil)
				})
				if err != nil && !errors.Is(err, errQuota) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		var n int
		s.View(ctx, func(tx store.Tx) error { n, _ = tx.Count("q/"); return nil })
		if n != quota {
			t.Fatalf("%d keys under the quota'd prefix, want %d", n, quota)
		}
	})

	// ResourceInUse: a parent is deleted only when List finds no child, and
	// a child is created only when its parent exists. Run concurrently,
	// never a child without its parent.
	t.Run("DeleteParentVersusCreateChild", func(t *testing.T) {
		s := f.New(t)
		errInUse := errors.New("in use")
		errNoParent := errors.New("no parent")
		for round := 0; round < 10; round++ {
			parent := fmt.Sprintf("mesh/m%d", round)
			put(t, s, parent, "m")
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // ends when its Update returns; waited for by wg
				defer wg.Done()
				_, err := s.Update(ctx, func(tx store.Tx) error {
					kids, err := tx.List(parent+"/", "", 1)
					if err != nil {
						return err
					}
					if len(kids) > 0 {
						return errInUse
					}
					return tx.Delete(parent)
				})
				if err != nil && !errors.Is(err, errInUse) {
					t.Error(err)
				}
			}()
			go func() { // ends when its Update returns; waited for by wg
				defer wg.Done()
				_, err := s.Update(ctx, func(tx store.Tx) error {
					if _, ok, err := tx.Get(parent); err != nil {
						return err
					} else if !ok {
						return errNoParent
					}
					return tx.Put(parent+"/vn", nil)
				})
				if err != nil && !errors.Is(err, errNoParent) {
					t.Error(err)
				}
			}()
			wg.Wait()
			_, okParent := get(t, s, parent)
			_, okChild := get(t, s, parent+"/vn")
			// Either the delete won (neither left) or the create did (both).
			if okChild && !okParent {
				t.Fatalf("round %d: child written under a deleted parent", round)
			}
			if okParent && !okChild {
				t.Fatalf("round %d: neither writer succeeded", round)
			}
		}
	})
}

func keys(kvs []store.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}
