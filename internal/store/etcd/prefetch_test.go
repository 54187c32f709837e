package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// PrefetchReads made before anything else is the transaction's first
// read: a write that reads keys, counts one prefix and lists the start of
// another costs one read request and its commit. Everything it answered
// is checked at commit as if read one by one: a write after the snapshot
// to a prefetched key that was read, into the counted prefix, or into the
// listed rows fails the commit, and the write runs again on what that
// write left; a write to a key prefetched but never read, or elsewhere,
// does not.
func TestPrefetchReadsFirst(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c.Endpoints(), "/prefirst")
	other := open(t, c.Endpoints(), "/prefirst")
	ctx := context.Background()
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		for _, k := range []string{"mesh", "nodes/a", "nodes/b", "exp/1", "exp/2", "exp/3", "unread"} {
			if err := tx.Put(k, []byte(k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	errExists := errors.New("exists")
	// create adds nodes/<name> as a create does: the mesh must exist, the
	// node must not, the nodes are counted, the first expiries listed.
	create := func(name string, interfere func() error) (runs int, out string) {
		t.Helper()
		if _, err := s.Update(ctx, func(tx store.Tx) error {
			runs++
			if err := tx.(interface {
				PrefetchReads(keys, counts []string, lists map[string]int) error
			}).PrefetchReads([]string{"token", "mesh", "nodes/" + name, "unread"}, []string{"nodes/"}, map[string]int{"exp/": 2}); err != nil {
				return err
			}
			if runs == 1 && interfere != nil {
				if err := interfere(); err != nil {
					return err
				}
			}
			if _, _, err := tx.Get("token"); err != nil {
				return err
			}
			if _, ok, err := tx.Get("mesh"); err != nil || !ok {
				return fmt.Errorf("mesh: %v, present %v", err, ok)
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
			if err := tx.Put("nodes/"+name, nil); err != nil {
				return err
			}
			// A write of its own among the listed rows, as remember's
			// expiry entry.
			if err := tx.Put("exp/25", nil); err != nil {
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
			return tx.Put("out/"+name, []byte(out))
		}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return runs, out
	}

	m := c.Members[0].ClientURL
	ranges, txs := etcdtest.Handled(t, m, "Range"), etcdtest.Handled(t, m, "Txn")
	if runs, out := create("c", nil); runs != 1 || out != "2 exp/1,exp/2" {
		t.Errorf("create c: %d runs, saw %q; want 1 run, \"2 exp/1,exp/2\"", runs, out)
	}
	if r, x := etcdtest.Handled(t, m, "Range")-ranges, etcdtest.Handled(t, m, "Txn")-txs; r != 0 || x != 2 {
		t.Errorf("a create reading four keys, a count and a list made %.0f Range and %.0f Txn requests, want 0 and 2 (one read, one commit)", r, x)
	}

	put := func(k string) func() error {
		return func() error {
			_, err := other.Update(ctx, func(tx store.Tx) error { return tx.Put(k, []byte("other")) })
			return err
		}
	}
	for _, tc := range []struct {
		name, what string
		interfere  func() error
		runs       int
		out        string
	}{
		{"d", "a write to a prefetched key read", put("mesh"), 2, "3 exp/1,exp/2"},
		{"e", "a key created in the counted prefix", put("nodes/x"), 2, "5 exp/0,exp/1"},
		{"f", "a key created among the listed rows", put("exp/0"), 2, "6 exp/0,exp/1"},
		{"g", "a write to a key prefetched, never read", put("unread"), 1, "7 exp/0,exp/1"},
		{"h", "a write elsewhere", put("elsewhere"), 1, "8 exp/0,exp/1"},
	} {
		if tc.name == "f" {
			// exp/0 must be new to the listed rows: remove it first.
			if _, err := other.Update(ctx, func(tx store.Tx) error { return tx.Delete("exp/0") }); err != nil {
				t.Fatal(err)
			}
		}
		if tc.name == "e" {
			// exp/0 is listed from here on.
			if err := put("exp/0")(); err != nil {
				t.Fatal(err)
			}
		}
		runs, out := create(tc.name, tc.interfere)
		if runs != tc.runs || out != tc.out {
			t.Errorf("%s during a create: %d runs, saw %q; want %d, %q", tc.what, runs, out, tc.runs, tc.out)
		}
	}
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.(interface {
			PrefetchReads(keys, counts []string, lists map[string]int) error
		}).PrefetchReads([]string{"nodes/c"}, nil, nil); err != nil {
			return err
		}
		if _, ok, err := tx.Get("nodes/c"); err != nil {
			return err
		} else if ok {
			return errExists
		}
		return nil
	}); !errors.Is(err, errExists) {
		t.Errorf("a create of a node that exists, from a prefetched read: %v, want it found", err)
	}
}
