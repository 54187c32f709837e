package dump

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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
	if got, err := Restore(ctx, bytes.NewReader(buf.Bytes()), dst, anyKey, DefaultMaxSpool); err != nil || got != n {
		t.Fatalf("restore: %d keys, %v", got, err)
	}
	same(t, src, dst)

	// Refusals: a store with keys, a truncated file, a foreign file, a
	// file from a newer weft.
	if _, err := Restore(ctx, bytes.NewReader(buf.Bytes()), dst, anyKey, DefaultMaxSpool); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a full store: %v", err)
	}
	cut := buf.Bytes()[:buf.Len()/2]
	if _, err := Restore(ctx, bytes.NewReader(cut), newBolt(t), anyKey, DefaultMaxSpool); err == nil {
		t.Fatal("a truncated backup restored without error")
	}
	if _, err := Restore(ctx, strings.NewReader("hello\n"), newBolt(t), anyKey, DefaultMaxSpool); err == nil || !strings.Contains(err.Error(), "not a weft backup") {
		t.Fatalf("foreign file: %v", err)
	}
	newer := strings.Replace(buf.String(), fmt.Sprintf(`"storeFormat":%d`, store.FormatVersion), fmt.Sprintf(`"storeFormat":%d`, store.FormatVersion+1), 1)
	if _, err := Restore(ctx, strings.NewReader(newer), newBolt(t), anyKey, DefaultMaxSpool); err == nil || !strings.Contains(err.Error(), "newer weft") {
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
	if n, err := Copy(ctx, src, e, anyKey, DefaultMaxSpool); err != nil || n != 1234 {
		t.Fatalf("copy to etcd: %d, %v", n, err)
	}
	same(t, src, e)
	back := newBolt(t)
	if n, err := Copy(ctx, e, back, anyKey, DefaultMaxSpool); err != nil || n != 1234 {
		t.Fatalf("copy back: %d, %v", n, err)
	}
	same(t, src, back)
	if _, err := Copy(ctx, src, e, anyKey, DefaultMaxSpool); !errors.Is(err, ErrNotEmpty) {
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
			n, err := Restore(ctx, strings.NewReader(tc.dump), dst, tc.check, DefaultMaxSpool)
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
	if _, err := Copy(ctx, src, dst, refuse, DefaultMaxSpool); err == nil || !strings.Contains(err.Error(), `key "k/00321": not a key weft writes`) {
		t.Fatalf("copy: %v", err)
	}
	if got := all(t, dst); len(got) != 0 {
		t.Fatalf("copy refused, the store holds %d keys", len(got))
	}
}

// spoolFiles returns the names and modes of the files in dir.
func spoolFiles(t *testing.T, dir string) map[string]os.FileMode {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]os.FileMode{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Mode()
	}
	return out
}

// TestRestoreSpoolsAPipe: a dump read from a pipe, which cannot be read
// twice, is restored through a spool file of mode 0600 in the temporary
// directory, removed afterwards, after a refused restore too; store copy
// spools its dump the same way.
func TestRestoreSpoolsAPipe(t *testing.T) {
	ctx := context.Background()
	spoolDir := t.TempDir()
	t.Setenv("TMPDIR", spoolDir)
	src := newBolt(t)
	fill(t, src, 2*BatchSize+10)
	var buf bytes.Buffer
	if _, _, err := Write(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	// seen checks, at the first key, that one spool file of mode 0600 is
	// there; refuse makes the check fail after that.
	check := func(refuse bool) (Check, *int) {
		calls := 0
		return func(string, []byte) error {
			if calls++; calls == 1 {
				files := spoolFiles(t, spoolDir)
				for name, mode := range files {
					if len(files) != 1 || mode.Perm() != 0o600 {
						t.Errorf("spool files during the restore: %s %v of %d", name, mode, len(files))
					}
				}
				if len(files) == 0 {
					t.Error("no spool file during the restore")
				}
			}
			if refuse {
				return errors.New("refused")
			}
			return nil
		}, &calls
	}
	for _, refuse := range []bool{false, true} {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		wrote := make(chan error, 1)
		go func() { // ends when the whole dump is written, or when pr is closed below
			_, err := pw.Write(buf.Bytes())
			pw.Close()
			wrote <- err
		}()
		dst := newBolt(t)
		c, calls := check(refuse)
		n, err := Restore(ctx, pr, dst, c, DefaultMaxSpool)
		pr.Close()
		if werr := <-wrote; werr != nil {
			t.Fatalf("write the pipe: %v", werr)
		}
		switch {
		case !refuse && (err != nil || n != 2*BatchSize+10):
			t.Fatalf("restore from a pipe: %d keys, %v", n, err)
		case !refuse:
			same(t, src, dst)
		case err == nil || !strings.Contains(err.Error(), "refused"):
			t.Fatalf("a refused restore from a pipe: %v", err)
		}
		if *calls == 0 {
			t.Fatal("the check was not called")
		}
		if files := spoolFiles(t, spoolDir); len(files) != 0 {
			t.Fatalf("spool files left after the restore (refused: %v): %v", refuse, files)
		}
	}
	c, _ := check(false)
	if n, err := Copy(ctx, src, newBolt(t), c, DefaultMaxSpool); err != nil || n != 2*BatchSize+10 {
		t.Fatalf("copy: %d keys, %v", n, err)
	}
	if files := spoolFiles(t, spoolDir); len(files) != 0 {
		t.Fatalf("spool files left after the copy: %v", files)
	}
}

// TestSpoolLimit: a restore from a pipe whose dump is larger than the
// spool limit, and a copy whose dump is, are refused with ErrSpoolLimit
// before anything is checked or written, and the spool file is removed.
// A dump of exactly the limit is spooled.
func TestSpoolLimit(t *testing.T) {
	ctx := context.Background()
	spoolDir := t.TempDir()
	t.Setenv("TMPDIR", spoolDir)
	src := newBolt(t)
	fill(t, src, 2*BatchSize+10)
	var buf bytes.Buffer
	if _, _, err := Write(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	size := int64(buf.Len())
	checked := 0
	count := func(string, []byte) error { checked++; return nil }
	// A pipe holding the dump and 1 MiB more: past the limit.
	pipe := func() io.Reader {
		return io.MultiReader(bytes.NewReader(buf.Bytes()), strings.NewReader(strings.Repeat("x", 1<<20)))
	}
	dst := newBolt(t)
	if _, err := Restore(ctx, pipe(), dst, count, size); !errors.Is(err, ErrSpoolLimit) {
		t.Fatalf("restore of %d bytes and more with a limit of %d: %v, want ErrSpoolLimit", size, size, err)
	}
	// (A copy's dump is another snapshot: its header's time may be a few
	// bytes longer or shorter.)
	if _, err := Copy(ctx, src, dst, count, size/2); !errors.Is(err, ErrSpoolLimit) {
		t.Fatalf("copy of a %d-byte dump with a limit of %d: %v, want ErrSpoolLimit", size, size/2, err)
	}
	if checked != 0 {
		t.Errorf("%d keys checked", checked)
	}
	if err := checkEmpty(ctx, dst); err != nil {
		t.Errorf("the target after the refusals: %v", err)
	}
	if files := spoolFiles(t, spoolDir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
	if n, err := Restore(ctx, io.MultiReader(bytes.NewReader(buf.Bytes())), dst, anyKey, size); err != nil || n != 2*BatchSize+10 {
		t.Fatalf("restore of a dump of exactly the limit: %d keys, %v", n, err)
	}
	if n, err := Copy(ctx, src, newBolt(t), anyKey, size+64); err != nil || n != 2*BatchSize+10 {
		t.Fatalf("copy of a dump under the limit: %d keys, %v", n, err)
	}
	// The largest limit the flag takes: one byte more does not fit an int64.
	if n, err := Restore(ctx, io.MultiReader(bytes.NewReader(buf.Bytes())), newBolt(t), anyKey, math.MaxInt64); err != nil || n != 2*BatchSize+10 {
		t.Fatalf("restore from a pipe with a limit of math.MaxInt64: %d keys, %v", n, err)
	}
	if n, err := Copy(ctx, src, newBolt(t), anyKey, math.MaxInt64); err != nil || n != 2*BatchSize+10 {
		t.Fatalf("copy with a limit of math.MaxInt64: %d keys, %v", n, err)
	}
}

// TestRestoreChecksWhatItWrites: a dump file that changes between the
// check and the write, so that a key no longer checks, stops the restore
// before the batch that holds that key is written.
func TestRestoreChecksWhatItWrites(t *testing.T) {
	ctx := context.Background()
	src := newBolt(t)
	fill(t, src, 3*BatchSize)
	var buf bytes.Buffer
	if _, _, err := Write(ctx, src, &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "weft.backup")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The line of k/00150 (its value {"n":150,...}), and the same line
	// with a value of the same length that the check refuses.
	enc := func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
	good := enc(`{"n":150,"bin":"\u0000\u00ff"}`)
	bad := enc(`{"n":bad,"bin":"\u0000\u00ff"}`)
	at := bytes.Index(buf.Bytes(), []byte(good))
	if at < 0 || len(bad) != len(good) {
		t.Fatalf("no value %s in the dump", good)
	}
	changed := false
	check := func(key string, value []byte) error {
		if bytes.Contains(value, []byte("bad")) {
			return errors.New("refused")
		}
		if key == fmt.Sprintf("k/%05d", 3*BatchSize-1) && !changed {
			// The first pass's last key: the file changes now.
			changed = true
			w, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer w.Close()
			_, err = w.WriteAt([]byte(bad), int64(at))
			return err
		}
		return nil
	}
	dst := newBolt(t)
	n, err := Restore(ctx, f, dst, check, DefaultMaxSpool)
	if err == nil || !strings.Contains(err.Error(), `backup line 152: key "k/00150" changed since it was checked, after 100 keys were written: refused`) {
		t.Fatalf("restore of a file changed between the passes: %d keys, %v", n, err)
	}
	if got := all(t, dst); n != BatchSize || len(got) != BatchSize {
		t.Fatalf("%d keys written, the store holds %d; want the first batch, %d", n, len(got), BatchSize)
	}
}
