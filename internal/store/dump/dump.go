// Package dump writes a store's keys to a portable file and reads them
// back: `weft backup` (from a live server), `weft restore` and `weft store
// copy` (bbolt to etcd and back) use it.
//
// The file is JSON lines: a header {"format":"weft-backup","version":1,
// "storeFormat":N,"created":"RFC3339"}, one {"k":key,"v":base64 value}
// per key in key order, and a trailer {"end":true,"keys":N,"revision":R}
// that proves the file is complete and names the snapshot's revision. Revisions are not kept: a
// restored store starts its own.
package dump

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/weftmesh/weft/internal/store"
)

// Limits of a dump.
const (
	// PageSize is how many keys a dump reads per List call.
	PageSize = 1000
	// BatchSize is how many keys one restore transaction writes: under
	// etcd's default --max-txn-ops (128).
	BatchSize = 100
	// MaxLine bounds one line of a dump file (a key and its value).
	MaxLine = 16 << 20
	// DefaultMaxSpool is the default bound of the spool file (newSpool)
	// of Restore and Copy, 4 GiB: what a dump of a store at etcd's
	// default backend quota (--quota-backend-bytes, 2 GiB of keys, values
	// and history) can take with room to spare, each value in base64 (4/3
	// of its bytes) beside its key. bbolt has no quota of its own.
	DefaultMaxSpool = 4 << 30
)

// ErrSpoolLimit is the error of Restore and Copy when the dump they must
// spool is larger than their limit; nothing is written to the target
// store, and the spool file is removed.
var ErrSpoolLimit = errors.New("the dump is larger than the spool file may grow")

const formatName = "weft-backup"

type header struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	StoreFormat int       `json:"storeFormat"`
	Created     time.Time `json:"created"`
}

type record struct {
	Key      string `json:"k,omitempty"`
	Value    []byte `json:"v,omitempty"`
	End      bool   `json:"end,omitempty"`
	Keys     int    `json:"keys,omitempty"`
	Revision int64  `json:"revision,omitempty"`
}

// Write writes a consistent snapshot of every key of st to w: all pages
// are read in one View. It returns the number of keys and the snapshot's
// revision.
func Write(ctx context.Context, st store.Store, w io.Writer) (int, store.Revision, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	n := 0
	wroteHeader := false
	rev, err := st.View(ctx, func(tx store.Tx) error {
		after := ""
		for {
			page, err := tx.List("", after, PageSize)
			if err != nil {
				return err
			}
			if !wroteHeader {
				wroteHeader = true
				if err := enc.Encode(header{Format: formatName, Version: 1, StoreFormat: store.FormatVersion, Created: time.Now().UTC()}); err != nil {
					return err
				}
			}
			for _, kv := range page {
				if err := enc.Encode(record{Key: kv.Key, Value: kv.Value}); err != nil {
					return err
				}
				n++
			}
			if len(page) < PageSize {
				return nil
			}
			after = page[len(page)-1].Key
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return 0, 0, fmt.Errorf("dump: %w", err)
	}
	if err := enc.Encode(record{End: true, Keys: n, Revision: int64(rev)}); err != nil {
		return 0, 0, err
	}
	return n, rev, bw.Flush()
}

// ErrNotEmpty is returned by Restore into a store that holds keys.
var ErrNotEmpty = errors.New("the target store is not empty")

// Check decides whether a restore may write a key with its value: nil,
// or what is wrong with them. This package does not know what keys mean;
// weft restore and weft store copy pass the checks of the packages that
// own each key's format (cmd/weft).
type Check func(key string, value []byte) error

// Restore writes every key of the dump in r into st, which must be empty,
// BatchSize keys per transaction. It reads the dump twice: first through
// to its trailer, checking every key with check and writing nothing, then
// again to write, checking each key again before the batch that holds it
// is written. An r that cannot be read twice (anything but a regular file
// or another io.Seeker: a pipe, a FIFO, a terminal) is first copied into
// a spool file (newSpool) of at most maxSpool bytes (ErrSpoolLimit
// beyond). It fails before writing on a truncated or foreign file, one
// written by a newer weft, keys out of order, and a key check refuses;
// the error names the line and the key. A store failure, or a file that
// changed between the passes, fails part-way and leaves the keys written
// so far: empty the store and run it again.
func Restore(ctx context.Context, r io.Reader, st store.Store, check Check, maxSpool int64) (int, error) {
	rs, ok := rereadable(r)
	if !ok {
		sp, err := newSpool()
		if err != nil {
			return 0, err
		}
		defer sp.remove()
		// One byte more than the limit tells a dump of exactly maxSpool
		// bytes from a larger one; at math.MaxInt64 (no file is larger)
		// the limit itself, as maxSpool+1 would wrap to a negative limit
		// that reads nothing.
		n, err := io.Copy(sp.f, io.LimitReader(r, maxSpool+min(1, math.MaxInt64-maxSpool)))
		if err != nil {
			return 0, fmt.Errorf("read backup: %w", err)
		}
		if n > maxSpool {
			return 0, fmt.Errorf("%w (%d bytes)", ErrSpoolLimit, maxSpool)
		}
		if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		rs = sp.f
	}
	return restore(ctx, rs, st, check, func(line int) string { return fmt.Sprintf("backup line %d: ", line) })
}

// rereadable returns r as a reader Restore can read twice, if it is one:
// a regular file, or any io.ReadSeeker but a file of another kind, which
// may seek and still not read the same bytes again.
func rereadable(r io.Reader) (io.ReadSeeker, bool) {
	if f, ok := r.(*os.File); ok {
		fi, err := f.Stat()
		return f, err == nil && fi.Mode().IsRegular()
	}
	rs, ok := r.(io.ReadSeeker)
	return rs, ok
}

// spool is a temporary file holding a dump that Restore must read twice.
type spool struct{ f *os.File }

// newSpool creates an empty spool file in os.TempDir, mode 0600 (a dump
// holds the CA's private keys); remove closes and removes it.
func newSpool() (*spool, error) {
	f, err := os.CreateTemp("", "weft-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	return &spool{f: f}, nil
}

func (s *spool) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}

// limitWriter writes to w until left bytes are written, then fails with
// ErrSpoolLimit, writing nothing of the write that would pass the limit.
type limitWriter struct {
	w    io.Writer
	left int64
	max  int64 // the limit, for the error; left's first value
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, fmt.Errorf("%w (%d bytes)", ErrSpoolLimit, l.max)
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// restore is Restore from a reader it can read twice; at starts an error
// about a line of the dump.
func restore(ctx context.Context, r io.ReadSeeker, st store.Store, check Check, at func(line int) string) (int, error) {
	if err := checkEmpty(ctx, st); err != nil {
		return 0, err
	}
	want, err := read(r, at, func(line int, rec record) error {
		if err := check(rec.Key, rec.Value); err != nil {
			return fmt.Errorf("%skey %q: %w", at(line), rec.Key, err)
		}
		return ctx.Err()
	})
	if err != nil {
		return 0, err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("read backup again: %w", err)
	}
	var batch []record
	n := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := st.Update(ctx, func(tx store.Tx) error {
			for _, rec := range batch {
				if err := tx.Put(rec.Key, rec.Value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("restore after %d keys: %w", n, err)
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	_, err = read(r, at, func(line int, rec record) error {
		// The file may have changed since the first pass read it.
		if err := check(rec.Key, rec.Value); err != nil {
			return fmt.Errorf("%skey %q changed since it was checked, after %d keys were written: %w", at(line), rec.Key, n, err)
		}
		batch = append(batch, rec)
		if len(batch) < BatchSize {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err == nil && n != want {
		err = fmt.Errorf("the backup changed while it was restored: %d keys checked, %d written", want, n)
	}
	return n, err
}

// read reads a dump through to its trailer, calling fn on each key's
// record with its line number, and returns the number of keys. A file
// that is not a dump, is cut before its trailer, says another number of
// keys than it holds, or holds a key twice or out of order fails; at
// starts the error about a line.
func read(r io.Reader, at func(line int) string, fn func(line int, rec record) error) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return 0, fmt.Errorf("read backup: %w", err)
		}
		return 0, errors.New("backup is empty")
	}
	var h header
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != formatName {
		return 0, errors.New("not a weft backup (no weft-backup header)")
	}
	if h.Version != 1 {
		return 0, fmt.Errorf("backup file version %d is not one this weft reads (1)", h.Version)
	}
	if err := store.CheckFormat(h.StoreFormat); err != nil {
		return 0, err
	}
	n, line, last := 0, 1, ""
	for sc.Scan() {
		line++
		var rec record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return n, fmt.Errorf("%s%w", at(line), err)
		}
		if rec.End {
			if rec.Keys != n {
				return n, fmt.Errorf("backup says %d keys, holds %d", rec.Keys, n)
			}
			return n, nil
		}
		if rec.Key == "" {
			return n, fmt.Errorf("%sno key", at(line))
		}
		if n > 0 && rec.Key <= last {
			return n, fmt.Errorf("%skey %q is not after %q: a dump holds each key once, in order", at(line), rec.Key, last)
		}
		if err := fn(line, rec); err != nil {
			return n, err
		}
		n++
		last = rec.Key
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("read backup: %w", err)
	}
	return n, errors.New("backup is truncated (no end record)")
}

func checkEmpty(ctx context.Context, st store.Store) error {
	var n int
	_, err := st.View(ctx, func(tx store.Tx) error {
		page, err := tx.List("", "", 1)
		n = len(page)
		return err
	})
	if err != nil {
		return err
	}
	if n > 0 {
		return ErrNotEmpty
	}
	return nil
}

// Copy copies every key of from into to, which must be empty, through a
// dump of one consistent snapshot of from, spooled to a temporary file
// (newSpool) of at most maxSpool bytes (ErrSpoolLimit beyond), so that
// every key is checked (see Restore) before any is written.
func Copy(ctx context.Context, from, to store.Store, check Check, maxSpool int64) (int, error) {
	if err := checkEmpty(ctx, to); err != nil {
		return 0, err
	}
	sp, err := newSpool()
	if err != nil {
		return 0, err
	}
	defer sp.remove()
	if _, _, err := Write(ctx, from, &limitWriter{w: sp.f, left: maxSpool, max: maxSpool}); err != nil {
		return 0, err
	}
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return restore(ctx, sp.f, to, check, func(int) string { return "" })
}

// Verify reads the dump file at path (named name in errors) through to
// its trailer and returns its key count: a truncated or foreign file
// fails.
func Verify(name, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	lines := 0
	for sc.Scan() {
		lines++
		if lines == 1 {
			var h header
			if json.Unmarshal(sc.Bytes(), &h) != nil || h.Format != formatName {
				return 0, fmt.Errorf("%s: not a weft backup", name)
			}
			continue
		}
		var rec record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return 0, fmt.Errorf("%s line %d: %w", name, lines, err)
		}
		if rec.End {
			if rec.Keys != lines-2 {
				return 0, fmt.Errorf("%s: says %d keys, holds %d", name, rec.Keys, lines-2)
			}
			return rec.Keys, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return 0, fmt.Errorf("%s: truncated (the server's snapshot was cut off)", name)
}
