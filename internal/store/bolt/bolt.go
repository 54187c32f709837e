// Package bolt is the embedded Store: one bbolt file, one writer goroutine
// that commits concurrent updates together (group commit, one fsync for all
// of them, with no added delay), and an in-memory history for Watch.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/txbuf"
)

var (
	kvBucket   = []byte("kv")
	metaBucket = []byte("meta")
	revKey     = []byte("revision")
	formatKey  = []byte("format")
)

// Options tune a Store. The zero value is good.
type Options struct {
	// History is how many recent changes Watch can replay (default 8192).
	History int
	// MaxBatch bounds how many updates share one commit (default 512).
	MaxBatch int
	// NoSync skips fsync; only for tests and benchmarks that say so.
	NoSync bool
}

// Store is a store.Store on a bbolt file.
type Store struct {
	db       *bbolt.DB
	reqs     chan *request // read by run; closed by Close
	done     chan struct{} // closed when run returns
	maxBatch int

	mu       sync.Mutex // protects the fields below
	closed   bool
	rev      store.Revision
	history  []store.Change // oldest first, at most histSize
	histSize int
	watchers map[*watcher]struct{}
}

var _ store.Store = (*Store)(nil)

type request struct {
	ctx  context.Context
	fn   func(store.Tx) error
	done chan result // buffered, written once by run
}

type result struct {
	rev store.Revision
	err error
}

// Open opens or creates the store file at path.
func Open(path string, opts Options) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	var rev store.Revision
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(kvBucket); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := meta.Get(revKey); len(v) == 8 {
			rev = store.Revision(binary.BigEndian.Uint64(v))
		}
		// A file without a format version was written by a weft from
		// before versions, in format 1.
		if v := meta.Get(formatKey); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("format version %q is not a number", v)
			}
			return store.CheckFormat(n)
		}
		return meta.Put(formatKey, []byte(strconv.Itoa(store.FormatVersion)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		reqs:     make(chan *request, 1024),
		done:     make(chan struct{}),
		maxBatch: opts.MaxBatch,
		rev:      rev,
		histSize: opts.History,
		watchers: map[*watcher]struct{}{},
	}
	if s.maxBatch <= 0 {
		s.maxBatch = 512
	}
	if s.histSize <= 0 {
		s.histSize = 8192
	}
	go s.run() // ends when Close closes s.reqs
	return s, nil
}

// Revision returns the last committed revision.
func (s *Store) Revision() store.Revision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Close stops the writer, closes every watch and the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for w := range s.watchers {
		w.closeLocked()
		delete(s.watchers, w)
	}
	s.mu.Unlock()
	close(s.reqs)
	<-s.done
	return s.db.Close()
}

// Ping implements store.Store: an embedded store is reachable while open.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	return ctx.Err()
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var rev store.Revision
	err := s.db.View(func(btx *bbolt.Tx) error {
		if v := btx.Bucket(metaBucket).Get(revKey); len(v) == 8 {
			rev = store.Revision(binary.BigEndian.Uint64(v))
		}
		return fn(&tx{b: btx.Bucket(kvBucket), w: txbuf.New(true)})
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return 0, store.ErrClosed
	}
	return rev, err
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) (rev store.Revision, err error) {
	req := &request{ctx: ctx, fn: fn, done: make(chan result, 1)}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, store.ErrClosed
	}
	defer func() {
		// Close may have closed reqs between the check and the send.
		if r := recover(); r != nil {
			rev, err = 0, store.ErrClosed
		}
	}()
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once queued the request is always answered, so that a caller never
	// wonders whether a write it gave up on was committed.
	r := <-req.done
	return r.rev, r.err
}

// run is the single writer. It takes every queued update, runs them in one
// bbolt transaction, commits once and answers them all.
func (s *Store) run() {
	defer close(s.done)
	for first := range s.reqs {
		batch := []*request{first}
	drain:
		for len(batch) < s.maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*request) {
	results := make([]result, len(batch))
	var changes []store.Change
	btx, err := s.db.Begin(true)
	if err != nil {
		for _, r := range batch {
			r.done <- result{err: fmt.Errorf("begin transaction: %w", err)}
		}
		return
	}
	kv := btx.Bucket(kvBucket)
	s.mu.Lock()
	rev := s.rev
	s.mu.Unlock()
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i].err = err
			continue
		}
		t := &tx{b: kv, w: txbuf.New(false)}
		if err := call(r.fn, t); err != nil {
			results[i].err = err
			continue
		}
		if t.w.Len() == 0 {
			results[i].rev = rev
			continue
		}
		rev++
		ch, err := t.apply(rev)
		if err != nil {
			// The bbolt transaction may hold part of this write; the whole
			// batch must go.
			btx.Rollback()
			for _, r := range batch {
				r.done <- result{err: fmt.Errorf("write: %w", err)}
			}
			return
		}
		results[i].rev = rev
		changes = append(changes, ch)
	}
	if len(changes) == 0 {
		btx.Rollback()
		for i, r := range batch {
			r.done <- results[i]
		}
		return
	}
	var rb [8]byte
	binary.BigEndian.PutUint64(rb[:], uint64(rev))
	if err := btx.Bucket(metaBucket).Put(revKey, rb[:]); err != nil {
		btx.Rollback()
		for _, r := range batch {
			r.done <- result{err: fmt.Errorf("write revision: %w", err)}
		}
		return
	}
	if err := btx.Commit(); err != nil {
		for _, r := range batch {
			r.done <- result{err: fmt.Errorf("commit: %w", err)}
		}
		return
	}
	now := time.Now()
	for i := range changes {
		changes[i].Committed = now
	}
	s.publish(rev, changes)
	for i, r := range batch {
		r.done <- results[i]
	}
}

// call runs fn, turning a panic into an error so that one bad request
// cannot stop the writer.
func call(fn func(store.Tx) error, t store.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: transaction panicked: %v", r)
		}
	}()
	return fn(t)
}

// tx reads through to bbolt and, for updates, buffers its writes so that a
// failing function leaves nothing behind.
type tx struct {
	b *bbolt.Bucket
	w *txbuf.Buffer
}

func encode(create, mod store.Revision, value []byte) []byte {
	out := make([]byte, 16+len(value))
	binary.BigEndian.PutUint64(out[0:], uint64(create))
	binary.BigEndian.PutUint64(out[8:], uint64(mod))
	copy(out[16:], value)
	return out
}

func decode(key, raw []byte) (store.KV, error) {
	if len(raw) < 16 {
		return store.KV{}, fmt.Errorf("store: corrupt record %q", key)
	}
	return store.KV{
		Key:            string(key),
		CreateRevision: store.Revision(binary.BigEndian.Uint64(raw[0:])),
		ModRevision:    store.Revision(binary.BigEndian.Uint64(raw[8:])),
		Value:          slices.Clone(raw[16:]),
	}, nil
}

func (t *tx) stored(key string) (store.KV, bool, error) {
	raw := t.b.Get([]byte(key))
	if raw == nil {
		return store.KV{}, false, nil
	}
	kv, err := decode([]byte(key), raw)
	return kv, err == nil, err
}

func (t *tx) Get(key string) (store.KV, bool, error) { return t.w.Get(key, t.stored) }

func (t *tx) List(prefix, after string, limit int) ([]store.KV, error) {
	var out []store.KV
	c := t.b.Cursor()
	start := []byte(prefix)
	if after >= prefix {
		start = append([]byte(after), 0)
	}
	want := limit
	if want > 0 {
		want += t.w.Extra()
	}
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
		if want > 0 && len(out) >= want {
			break
		}
		if t.w.Shadows(string(k)) {
			continue
		}
		kv, err := decode(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, kv)
	}
	return t.w.Merge(out, prefix, after, limit, t.stored)
}

func (t *tx) Count(prefix string) (int, error) {
	n := 0
	c := t.b.Cursor()
	for k, _ := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, _ = c.Next() {
		if !t.w.Shadows(string(k)) {
			n++
		}
	}
	return n + t.w.Puts(prefix), nil
}

// Unguarded implements store.Tx. Nothing is compared at a bolt commit:
// write transactions run one at a time, so no read can be out of date
// when its transaction commits, guarded or not.
func (t *tx) Unguarded() store.Reader { return t }

func (t *tx) Put(key string, value []byte) error { return t.w.Put(key, value) }

func (t *tx) Delete(key string) error { return t.w.Delete(key, t.stored) }

// apply writes the buffered changes into the bbolt bucket at rev.
func (t *tx) apply(rev store.Revision) (store.Change, error) {
	ch := store.Change{Revision: rev, Events: make([]store.Event, 0, t.w.Len())}
	err := t.w.Each(func(k string, value []byte, deleted bool) error {
		old, existed, err := t.stored(k)
		if err != nil {
			return err
		}
		if deleted {
			if err := t.b.Delete([]byte(k)); err != nil {
				return err
			}
			old.ModRevision = rev
			ch.Events = append(ch.Events, store.Event{Type: store.EventDelete, KV: old})
			return nil
		}
		create := rev
		if existed {
			create = old.CreateRevision
		}
		if err := t.b.Put([]byte(k), encode(create, rev, value)); err != nil {
			return err
		}
		ch.Events = append(ch.Events, store.Event{Type: store.EventPut, KV: store.KV{Key: k, Value: value, CreateRevision: create, ModRevision: rev}})
		return nil
	})
	return ch, err
}
