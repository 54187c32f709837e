package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/btree"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// A replica that watches every key answers a write's reads from its
// mirror: a write that reads keys, counts a prefix and lists another is
// one etcd request, its commit. A write by another replica after the
// mirror's revision to anything the write read fails that commit, and the
// write runs again on etcd's current state, answering as if it had run
// after the other: a name taken (conflict), a resource in use, a resource
// created meanwhile found, and, with both replicas writing one counter at
// once, every increment applied exactly once.
func TestMirrorWrites(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := open(t, c.Endpoints(), "/mirror")
	b := open(t, c.Endpoints(), "/mirror")
	ctx := context.Background()
	put := func(s *Store, kvs ...string) store.Revision {
		t.Helper()
		rev, err := s.Update(ctx, func(tx store.Tx) error {
			for i := 0; i < len(kvs); i += 2 {
				if err := tx.Put(kvs[i], []byte(kvs[i+1])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	put(b, "mesh", "m", "nodes/a", "", "nodes/b", "", "exp/1", "", "exp/2", "", "exp/3", "")
	caughtA := etcdtest.FollowAll(t, a)
	put(b, "exp/4", "")
	caughtA()

	errExists := errors.New("exists")
	errInUse := errors.New("in use")
	errNoMesh := errors.New("no mesh")
	// create adds nodes/<name> as a create does: the mesh must exist, the
	// node must not; the nodes are counted, the first expiries listed.
	create := func(name string, interfere func()) (runs int, out string, err error) {
		t.Helper()
		_, err = a.Update(ctx, func(tx store.Tx) error {
			runs++
			if runs == 1 && interfere != nil {
				interfere()
			}
			if _, ok, err := tx.Get("mesh"); err != nil {
				return err
			} else if !ok {
				return errNoMesh
			}
			if _, ok, err := tx.Get("nodes/" + name); err != nil {
				return err
			} else if ok {
				return errExists
			}
			n, err := tx.Count("nodes/")
			if err != nil {
				return err
			}
			kvs, err := tx.List("exp/", "", 2)
			if err != nil {
				return err
			}
			var listed []string
			for _, kv := range kvs {
				listed = append(listed, kv.Key)
			}
			out = fmt.Sprintf("%d %s", n, strings.Join(listed, ","))
			return tx.Put("nodes/"+name, []byte("a"))
		})
		return runs, out, err
	}

	m := c.Members[0].ClientURL
	ranges, txs := etcdtest.Handled(t, m, "Range"), etcdtest.Handled(t, m, "Txn")
	if runs, out, err := create("c", nil); err != nil || runs != 1 || out != "2 exp/1,exp/2" {
		t.Errorf("create c: %d runs, saw %q, %v; want 1 run, \"2 exp/1,exp/2\"", runs, out, err)
	}
	if r, x := etcdtest.Handled(t, m, "Range")-ranges, etcdtest.Handled(t, m, "Txn")-txs; r != 0 || x != 1 {
		t.Errorf("a create reading two keys, a count and a list from the mirror made %.0f Range and %.0f Txn requests, want 0 and 1 (the commit)", r, x)
	}

	by := func(kvs ...string) func() { return func() { put(b, kvs...) } }
	for _, tc := range []struct {
		name, what string
		interfere  func()
		runs       int
		out        string
		err        error
	}{
		{"d", "a write to a key read", by("mesh", "m2"), 2, "3 exp/1,exp/2", nil},
		{"e", "a key created in the counted prefix", by("nodes/x", ""), 2, "5 exp/1,exp/2", nil},
		{"f", "a key created among the listed rows", by("exp/0", ""), 2, "6 exp/0,exp/1", nil},
		{"g", "a write elsewhere", by("elsewhere", ""), 1, "7 exp/0,exp/1", nil},
		{"h", "the same name created (conflict)", by("nodes/h", "b"), 2, "", errExists},
		{"i", "the mesh created after the mirror's revision, found on etcd", nil, 2, "9 exp/0,exp/1", nil},
	} {
		if tc.name == "i" {
			// The mesh goes; the write that creates it again is made
			// during the first run, after the mirror's revision.
			if _, err := b.Update(ctx, func(tx store.Tx) error { return tx.Delete("mesh") }); err != nil {
				t.Fatal(err)
			}
			caughtA()
			tc.interfere = by("mesh", "m3")
		}
		// The previous case's conflict made a's writes skip stale first
		// reads for a while (contentionWindow); each case is its own.
		a.contendedUntil.Store(0)
		before := staleCount(a, staleMirror)
		runs, out, err := create(tc.name, tc.interfere)
		if runs != tc.runs || out != tc.out && tc.err == nil || !errors.Is(err, tc.err) {
			t.Errorf("%s during a create: %d runs, saw %q, %v; want %d, %q, %v", tc.what, runs, out, err, tc.runs, tc.out, tc.err)
		}
		if got := staleCount(a, staleMirror) - before; got != 1 {
			t.Errorf("%s: %v first attempts read from the mirror, want 1", tc.what, got)
		}
		caughtA()
	}
	if v := get(t, a, "nodes/h"); v != "b" {
		t.Errorf("nodes/h after the conflicting creates: %q, want the other replica's \"b\"", v)
	}

	// A delete of the mesh while it has no children, racing a child's
	// create on the other replica: the delete answers "in use", and the
	// mesh stays.
	runs := 0
	a.contendedUntil.Store(0)
	_, err := a.Update(ctx, func(tx store.Tx) error {
		runs++
		if runs == 1 {
			put(b, "children/1", "")
		}
		n, err := tx.Count("children/")
		if err != nil {
			return err
		}
		if n > 0 {
			return errInUse
		}
		return tx.Delete("mesh")
	})
	if !errors.Is(err, errInUse) || runs != 2 {
		t.Errorf("delete racing a child's create: %v after %d runs, want in use after 2", err, runs)
	}
	if v := get(t, a, "mesh"); v != "m3" {
		t.Errorf("mesh after the refused delete: %q, want \"m3\"", v)
	}
	caughtA()

	// Both replicas keep a mirror and increment one counter at once:
	// each increment is applied exactly once.
	etcdtest.FollowAll(t, b)
	const writers, each = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for _, s := range []*Store{a, b} {
		for range writers {
			wg.Add(1)
			go func() { // ends after its increments
				defer wg.Done()
				for range each {
					if _, err := s.Update(ctx, func(tx store.Tx) error {
						kv, _, err := tx.Get("counter")
						if err != nil {
							return err
						}
						n, _ := strconv.Atoi(string(kv.Value))
						return tx.Put("counter", []byte(strconv.Itoa(n+1)))
					}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("increment: %v", err)
	}
	if v, want := get(t, a, "counter"), strconv.Itoa(2*writers*each); v != want {
		t.Errorf("counter after %s increments from two replicas: %s", want, v)
	}

	// Deletes from either replica: the mirror holds what etcd holds at
	// its revision, key for key.
	for _, s := range []*Store{a, b} {
		if _, err := s.Update(ctx, func(tx store.Tx) error {
			for _, k := range []string{"exp/0", "children/1", "nodes/" + s.opts.Prefix} {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return tx.Put("nodes/x", []byte(s.opts.Prefix))
		}); err != nil {
			t.Fatal(err)
		}
	}
	caughtA()
	snap, rev := a.mirror.snapshot(0)
	if snap == nil {
		t.Fatal("no mirror")
	}
	want, err := a.loadMirror(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	var got, exp []string
	for tree, out := range map[*btree.BTreeG[*mvccpb.KeyValue]]*[]string{snap: &got, want: &exp} {
		tree.Ascend(func(kv *mvccpb.KeyValue) bool {
			*out = append(*out, fmt.Sprintf("%s=%q c%d m%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision))
			return true
		})
	}
	if !slices.Equal(got, exp) {
		t.Errorf("mirror at revision %d:\n%s\netcd at that revision:\n%s", rev, strings.Join(got, "\n"), strings.Join(exp, "\n"))
	}
}

func staleCount(s *Store, outcome string) float64 {
	return testutil.ToFloat64(s.metrics.stale.WithLabelValues(outcome))
}

// A write's reads answered by the mirror are those etcd answers: keys
// present and absent, lists from the start and after a key, with and
// without a limit, with the transaction's own writes among them, counts.
func TestMirrorReadsEqualEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c.Endpoints(), "/mirreads")
	ctx := context.Background()
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		for _, k := range []string{"a", "b/1", "b/2", "b/3", "b/30", "b/4", "b0", "c/x"} {
			if err := tx.Put(k, []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reads := func(tx store.Tx) (string, error) {
		var out []string
		for _, k := range []string{"a", "b/3", "b/5", "z"} {
			kv, ok, err := tx.Get(k)
			if err != nil {
				return "", err
			}
			out = append(out, fmt.Sprintf("get %s %v %q c%d m%d", k, ok, kv.Value, kv.CreateRevision, kv.ModRevision))
		}
		for _, l := range []struct {
			prefix, after string
			limit         int
		}{{"b/", "", 0}, {"b/", "", 2}, {"b/", "b/2", 2}, {"b/", "b/30", 0}, {"b/", "b/4", 1}, {"", "", 3}, {"c/", "", 5}, {"d/", "", 1}} {
			kvs, err := tx.List(l.prefix, l.after, l.limit)
			if err != nil {
				return "", err
			}
			var keys []string
			for _, kv := range kvs {
				keys = append(keys, fmt.Sprintf("%s=%q", kv.Key, kv.Value))
			}
			out = append(out, fmt.Sprintf("list %q after %q limit %d: %s", l.prefix, l.after, l.limit, strings.Join(keys, ",")))
		}
		for _, p := range []string{"b/", "", "d/"} {
			n, err := tx.Count(p)
			if err != nil {
				return "", err
			}
			out = append(out, fmt.Sprintf("count %q %d", p, n))
		}
		return strings.Join(out, "\n"), nil
	}
	// Own writes first, so that the reads merge them in.
	write := func(tx store.Tx) error {
		if err := tx.Put("b/25", []byte("new")); err != nil {
			return err
		}
		return tx.Delete("b/3")
	}
	// What etcd answers: a View's reads, and an Update's that writes
	// first (failed on purpose, so that nothing is written; on a mirror
	// the failed attempt runs again on etcd, and its reads are kept).
	expected := func(own bool) string {
		t.Helper()
		var out string
		errDone := errors.New("done")
		if !own {
			if _, err := s.View(ctx, func(tx store.Tx) error {
				var err error
				out, err = reads(tx)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return out
		}
		if _, err := s.Update(ctx, func(tx store.Tx) error {
			if err := write(tx); err != nil {
				return err
			}
			var err error
			out, err = reads(tx)
			if err != nil {
				return err
			}
			return errDone
		}); !errors.Is(err, errDone) {
			t.Fatal(err)
		}
		return out
	}
	caughtUp := etcdtest.FollowAll(t, s)
	for _, own := range []bool{false, true} {
		w := expected(own)
		caughtUp()
		before := staleCount(s, staleMirror)
		var got string
		runs := 0
		if _, err := s.Update(ctx, func(tx store.Tx) error {
			runs++
			if runs > 1 {
				return nil
			}
			if own {
				if err := write(tx); err != nil {
					return err
				}
			}
			var err error
			got, err = reads(tx)
			if err != nil {
				return err
			}
			return tx.Put("other", []byte("x")) // so that the first run stands
		}); err != nil {
			t.Fatal(err)
		}
		if staleCount(s, staleMirror)-before != 1 {
			t.Fatal("the write did not read from the mirror")
		}
		if runs != 1 {
			t.Errorf("own writes %v: %d runs, want 1 (no other writer)", own, runs)
		}
		if got != w {
			t.Errorf("own writes %v: reads from the mirror:\n%s\nfrom etcd:\n%s", own, got, w)
		}
	}
}
