package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// anyKey is the check of a restore that takes every key.
func anyKey(string, []byte) error { return nil }

func newBolt(t *testing.T) store.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func fill(t *testing.T, s store.Store, n int) {
	for i := 0; i < n; i += 500 {
		_, err := s.Update(context.Background(), func(tx store.Tx) error {
			for j := i; j < i+500 && j < n; j++ {
				tx.Put(fmt.Sprintf("k/%05d", j), fmt.Appendf(nil, `{"n":%d,"bin":"\u0000\u00ff"}`, j))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func all(t *testing.T, s store.Store) map[string]string {
	out := map[string]string{}
	_, err := s.View(context.Background(), func(tx store.Tx) error {
		after := ""
		for {
			page, err := tx.List("", after, 700)
			if err != nil {
				return err
			}
			for _, kv := range page {
				out[kv.Key] = string(kv.Value)
			}
			if len(page) < 700 {
				return nil
			}
			after = page[len(page)-1].Key
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func same(t *testing.T, a, b store.Store) {
	t.Helper()
	x, y := all(t, a), all(t, b)
	if len(x) != len(y) {
		t.Fatalf("%d keys, copy has %d", len(x), len(y))
	}
	for k, v := range x {
		if y[k] != v {
			t.Fatalf("key %s: %q, copy %q", k, v, y[k])
		}
	}
}

func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	src := newBolt(t)
	fill(t, src, 2345) // several pages and batches
	var buf bytes.Buffer
	n, rev, err := Write(ctx, src, &buf)
	if err != nil || n != 2345 || rev == 0 {
		t.Fatalf("write: %d keys at %d, %v", n, rev, err)
	}
	dst := newBolt(t)
	if got, err := Restore(ctx, bytes.NewReader(buf.Bytes()), dst, anyKey); err != nil || got != n {
		t.Fatalf("restore: %d keys, %v", got, err)
	}
	same(t, src, dst)

	// Refusals: a store with keys, a truncated file, a foreign file, a
	// file from a newer weft.
	if _, err := Restore(ctx, bytes.NewReader(buf.Bytes()), dst, anyKey); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a full store: %v", err)
	}
	cut := buf.Bytes()[:buf.Len()/2]
	if _, err := Restore(ctx, bytes.NewReader(cut), newBolt(t), anyKey); err == nil {
		t.Fatal("a truncated backup restored without error")
	}
	if _, err := Restore(ctx, strings.NewReader("hello\n"), newBolt(t), anyKey); err == nil || !strings.Contains(err.Error(), "not a weft backup") {
		t.Fatalf("foreign file: %v", err)
	}
	newer := strings.Replace(buf.String(), fmt.Sprintf(`"storeFormat":%d`, store.FormatVersion), fmt.Sprintf(`"storeFormat":%d`, store.FormatVersion+1), 1)
	if _, err := Restore(ctx, strings.NewReader(newer), newBolt(t), anyKey); err == nil || !strings.Contains(err.Error(), "newer weft") {
		t.Fatalf("backup from a newer weft: %v", err)
	}
}

// TestCopyBoltEtcdBolt moves a store onto etcd and back.
func TestCopyBoltEtcdBolt(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	e, err := etcd.Open(octx, etcd.Options{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	src := newBolt(t)
	fill(t, src, 1234)
	if n, err := Copy(ctx, src, e, anyKey); err != nil || n != 1234 {
		t.Fatalf("copy to etcd: %d, %v", n, err)
	}
	same(t, src, e)
	back := newBolt(t)
	if n, err := Copy(ctx, e, back, anyKey); err != nil || n != 1234 {
		t.Fatalf("copy back: %d, %v", n, err)
	}
	same(t, src, back)
	if _, err := Copy(ctx, src, e, anyKey); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("copy onto a non-empty etcd store: %v", err)
	}
}

// TestRestoreChecksEveryKeyFirst: a dump whose only flaw is far into it
// (past several batches) is refused with its line and key, and the
// target store is left empty; so is a dump cut before its trailer, or
// one that holds a key twice.
func TestRestoreChecksEveryKeyFirst(t *testing.T) {
	ctx := context.Background()
	src := newBolt(t)
	fill(t, src, 3*BatchSize+50)
	var buf bytes.Buffer
	if _, _, err := Write(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	const bad = "k/00321" // line 323: the header is line 1, k/00000 line 2
	refuse := func(key string, _ []byte) error {
		if key == bad {
			return errors.New("not a key weft writes")
		}
		return nil
	}
	lines := strings.SplitAfter(buf.String(), "\n")
	twice := strings.Join(slices.Insert(slices.Clone(lines), 200, lines[199]), "")
	twice = strings.Replace(twice, fmt.Sprintf(`"keys":%d`, 3*BatchSize+50), fmt.Sprintf(`"keys":%d`, 3*BatchSize+51), 1)
	for _, tc := range []struct {
		name  string
		dump  string
		check Check
		want  string
	}{
		{"a key the check refuses", buf.String(), refuse, `backup line 323: key "k/00321": not a key weft writes`},
		{"a truncated dump", strings.Join(lines[:len(lines)*2/3], ""), anyKey, "backup is truncated"},
		{"a key twice", twice, anyKey, `backup line 201: key "k/00198" is not after "k/00198"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newBolt(t)
			n, err := Restore(ctx, strings.NewReader(tc.dump), dst, tc.check)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v; want an error saying %q", err, tc.want)
			}
			if got := all(t, dst); n != 0 || len(got) != 0 {
				t.Fatalf("restore refused with %d keys written, the store holds %d", n, len(got))
			}
		})
	}

	// Copy checks the same way.
	dst := newBolt(t)
	if _, err := Copy(ctx, src, dst, refuse); err == nil || !strings.Contains(err.Error(), `key "k/00321": not a key weft writes`) {
		t.Fatalf("copy: %v", err)
	}
	if got := all(t, dst); len(got) != 0 {
		t.Fatalf("copy refused, the store holds %d keys", len(got))
	}
}
