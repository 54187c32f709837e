package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// Two writers interleaved by hand: both read before either commits, so
// the second to commit must see its read invalidated and run again.
func TestInterleavedConflicts(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	errExists := errors.New("exists")
	cases := []struct {
		name  string
		setup func(tx store.Tx) error
		read  func(tx store.Tx) error // the check each writer makes
		write func(tx store.Tx, i int) error
	}{{
		name: "GetAbsentThenCreate",
		read: func(tx store.Tx) error {
			if _, ok, err := tx.Get("route/r"); err != nil {
				return err
			} else if ok {
				return errExists
			}
			return nil
		},
		write: func(tx store.Tx, i int) error { return tx.Put("route/r", fmt.Appendf(nil, "%d", i)) },
	}, {
		name:  "GetThenUpdateWeight",
		setup: func(tx store.Tx) error { return tx.Put("route/r", []byte("v0")) },
		read: func(tx store.Tx) error {
			kv, ok, err := tx.Get("route/r")
			if err != nil || !ok {
				return fmt.Errorf("route missing: %v", err)
			}
			if string(kv.Value) != "v0" {
				return errExists // someone already updated from v0
			}
			return nil
		},
		write: func(tx store.Tx, i int) error { return tx.Put("route/r", fmt.Appendf(nil, "v1 by %d", i)) },
	}, {
		name: "ListEmptyThenCreateInPrefix",
		read: func(tx store.Tx) error {
			l, err := tx.List("routes/", "", 0)
			if err != nil {
				return err
			}
			if len(l) > 0 {
				return errExists
			}
			return nil
		},
		write: func(tx store.Tx, i int) error { return tx.Put(fmt.Sprintf("routes/r%d", i), nil) },
	}, {
		name: "CountThenCreateInPrefix",
		read: func(tx store.Tx) error {
			n, err := tx.Count("routes/")
			if err != nil {
				return err
			}
			if n > 0 {
				return errExists
			}
			return nil
		},
		write: func(tx store.Tx, i int) error { return tx.Put(fmt.Sprintf("routes/r%d", i), nil) },
	}, {
		// A delete inside a listed range: no range compare sees a key
		// that is gone, the per-key compare must.
		name:  "ListThenDeleteInPrefix",
		setup: func(tx store.Tx) error { tx.Put("routes/a", nil); return tx.Put("routes/b", nil) },
		read: func(tx store.Tx) error {
			n, err := tx.Count("routes/")
			if err != nil {
				return err
			}
			if n < 2 {
				return errExists
			}
			return nil
		},
		write: func(tx store.Tx, i int) error { return tx.Delete([]string{"routes/a", "routes/b"}[i]) },
	}}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, c.Endpoints(), fmt.Sprintf("/interleave%d", ci))
			if tc.setup != nil {
				if _, err := s.Update(ctx, tc.setup); err != nil {
					t.Fatal(err)
				}
			}
			// Both first attempts read, then wait for each other, then
			// try to commit; later attempts run freely.
			var read sync.WaitGroup
			read.Add(2)
			var wg sync.WaitGroup
			results := make([]error, 2)
			attempts := make([]int, 2)
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() { // ends when its Update returns; waited for by wg
					defer wg.Done()
					_, results[i] = s.Update(ctx, func(tx store.Tx) error {
						attempts[i]++
						err := tc.read(tx)
						if attempts[i] == 1 {
							read.Done()
							read.Wait()
						}
						if err != nil {
							return err
						}
						return tc.write(tx, i)
					})
				}()
			}
			wg.Wait()
			ok := 0
			for i, err := range results {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, errExists):
					t.Fatalf("writer %d: %v", i, err)
				}
			}
			if ok != 1 {
				t.Fatalf("%d writers succeeded after the same check, want exactly 1 (attempts %v)", ok, attempts)
			}
			if attempts[0]+attempts[1] < 3 {
				t.Fatalf("attempts %v: the losing writer was not run again", attempts)
			}
		})
	}
}

// A transaction reading more keys than MaxCompares falls back to the
// sequence key and still conflicts correctly.
func TestManyReadsFallBackToSequence(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	s := open(t, c.Endpoints(), "/many")
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		for i := 0; i < 120; i++ {
			tx.Put(fmt.Sprintf("k/%03d", i), nil)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var read sync.WaitGroup
	read.Add(1)
	attempts := 0
	done := make(chan error, 1)
	go func() { // ends when the Update returns
		_, err := s.Update(ctx, func(tx store.Tx) error {
			attempts++
			l, err := tx.List("k/", "", 0)
			if err != nil {
				return err
			}
			if attempts == 1 {
				read.Done()
				<-done
			}
			return tx.Put("sum", fmt.Appendf(nil, "%d", len(l)))
		})
		done <- err
	}()
	read.Wait()
	if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Delete("k/007") }); err != nil {
		t.Fatal(err)
	}
	done <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Fatalf("attempts = %d, want 2 (conflict, then success)", attempts)
	}
	var sum string
	s.View(ctx, func(tx store.Tx) error { kv, _, _ := tx.Get("sum"); sum = string(kv.Value); return nil })
	if sum != "119" {
		t.Fatalf("sum = %s, want 119 (computed after the delete)", sum)
	}
}

// What a transaction read through Unguarded is not compared at its
// commit: a concurrent write there (through another replica) neither
// makes it conflict nor, however much it read, makes it fall back to the
// sequence key. The same reads guarded do both.
func TestUnguardedReadsDoNotConflict(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	tests := []struct {
		name      string
		guarded   bool
		read      func(r store.Reader) error
		attempts  int
		conflicts float64
	}{
		{"guarded list", true, func(r store.Reader) error { _, err := r.List("k/", "", 0); return err }, 2, 1},
		{"guarded count", true, func(r store.Reader) error { _, err := r.Count("k/"); return err }, 2, 1},
		{"unguarded list", false, func(r store.Reader) error { _, err := r.List("k/", "", 0); return err }, 1, 0},
		{"unguarded count", false, func(r store.Reader) error { _, err := r.Count("k/"); return err }, 1, 0},
		{"unguarded get", false, func(r store.Reader) error { _, _, err := r.Get("k/007"); return err }, 1, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("/unguarded%d", i)
			s, other := open(t, c.Endpoints(), prefix), open(t, c.Endpoints(), prefix)
			if _, err := s.Update(ctx, func(tx store.Tx) error {
				for i := range 120 { // more than MaxCompares
					tx.Put(fmt.Sprintf("k/%03d", i), nil)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			conflicts, seq := testutil.ToFloat64(s.metrics.conflicts), testutil.ToFloat64(s.metrics.seqGuarded)
			attempts := 0
			_, err := s.Update(ctx, func(tx store.Tx) error {
				attempts++
				r := tx.Unguarded()
				if tt.guarded {
					r = tx
				}
				if err := tt.read(r); err != nil {
					return err
				}
				if attempts == 1 {
					// Another replica changes what was read, before
					// this commit.
					if _, err := other.Update(ctx, func(tx store.Tx) error {
						tx.Put("k/500", nil)
						return tx.Delete("k/007")
					}); err != nil {
						return err
					}
				}
				return tx.Put("sum", nil)
			})
			if err != nil {
				t.Fatal(err)
			}
			conflicts, seq = testutil.ToFloat64(s.metrics.conflicts)-conflicts, testutil.ToFloat64(s.metrics.seqGuarded)-seq
			wantSeq := 0.0
			if tt.guarded {
				wantSeq = float64(tt.attempts) // each read 120 keys
			}
			if attempts != tt.attempts || conflicts != tt.conflicts || seq != wantSeq {
				t.Errorf("%d attempts, %.0f conflicts, %.0f commits guarded by the sequence key; want %d, %.0f, %.0f", attempts, conflicts, seq, tt.attempts, tt.conflicts, wantSeq)
			}
		})
	}
}
