// Package follow keeps a reader in step with a store: it reads a snapshot,
// then hands over the changes committed after it, and reads a fresh
// snapshot whenever the store drops the watch (history compacted, the
// reader fell behind, a broken connection). It is the one store follow of
// weft: the xDS server (internal/xds/server) and Cloud Map discovery
// (internal/discovery, read by the DNS server) both use it.
//
// A Follower is a synchronous step machine, used from one goroutine:
//
//	f := follow.New(src, prefix)
//	if err := f.Load(ctx, read); err != nil { ... }
//	for {
//		select {
//		case c, ok := <-f.Changes():
//			if !ok { // the watch ended: reload, unless ctx did
//				if ctx.Err() != nil { return }
//				if err := f.Load(ctx, read); err != nil { ... }
//				continue
//			}
//			batch, _ := follow.Drain(c, f.Changes())
//			apply(batch)
//		case <-other: ...
//		}
//	}
//
// Run is that loop for a reader with nothing else to wait on.
package follow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/weftmesh/weft/internal/store"
)

// Source is what a Follower needs from the store.
type Source interface {
	View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error)
	Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error)
}

// Follower follows the keys under one prefix of a Source. Its methods are
// called from one goroutine.
type Follower struct {
	src    Source
	prefix string
	// ch is the watch opened by the last Load; nil before it (a nil
	// channel blocks, so a select on Changes waits for Load).
	ch  <-chan store.Change
	rev store.Revision
}

// New returns a Follower of the keys under prefix ("" for every key); it
// reads nothing until Load.
func New(src Source, prefix string) *Follower {
	return &Follower{src: src, prefix: prefix}
}

// Load calls read with a snapshot of the store (inside View) and opens the
// watch of the changes after it; it returns the snapshot's revision. read
// must replace whatever the reader holds: when the snapshot's revision is
// compacted before the watch opens, Load calls it again with a newer
// snapshot. Load returns read's error or the store's, wrapped, or ctx's.
func (f *Follower) Load(ctx context.Context, read func(tx store.Tx) error) (store.Revision, error) {
	f.ch = nil
	var wait time.Duration
	for {
		rev, err := f.src.View(ctx, read)
		if errors.Is(err, store.ErrUnavailable) {
			// A store that cannot be reached now (etcd lost): the reader
			// keeps what it holds and tries again, as long as ctx lasts.
			if wait, err = backoff(ctx, wait); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("read store: %w", err)
		}
		ch, err := f.src.Watch(ctx, f.prefix, rev)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if errors.Is(err, store.ErrUnavailable) {
			if wait, err = backoff(ctx, wait); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("watch store: %w", err)
		}
		f.ch, f.rev = ch, rev
		return rev, nil
	}
}

// Bounds of the wait between attempts to read a store that cannot be
// reached.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// backoff waits after a failed attempt (twice the last wait, within
// minRetry and maxRetry) and returns the wait, or ctx's error.
func backoff(ctx context.Context, last time.Duration) (time.Duration, error) {
	d := min(max(2*last, minRetry), maxRetry)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return d, ctx.Err()
	case <-t.C:
		return d, nil
	}
}

// Changes is the channel of the changes after the last Load, in revision
// order. It is closed when the watch ends: ctx ended, the store closed,
// or the store dropped a reader that fell behind; then the reader calls
// Load again (unless ctx ended). Nil before the first Load.
func (f *Follower) Changes() <-chan store.Change { return f.ch }

// Drain returns c followed by every change already queued on ch, without
// waiting: a batch applied at once, so that a burst of writes costs one
// recompute while a lone write is applied at once (no timer). closed says
// ch was found closed.
func Drain(c store.Change, ch <-chan store.Change) (batch []store.Change, closed bool) {
	batch = []store.Change{c}
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return batch, true
			}
			batch = append(batch, c)
		default:
			return batch, false
		}
	}
}

// Run follows src's keys under prefix until ctx ends: it calls read with
// a snapshot and then full(), and apply with each batch of changes after
// it; after a dropped watch it calls read and full again. read, full and
// apply run on Run's goroutine, one call at a time. Run returns ctx's
// error, or the store's when it cannot read.
func Run(ctx context.Context, src Source, prefix string, read func(store.Tx) error, full func(store.Revision), apply func([]store.Change)) error {
	f := New(src, prefix)
	for {
		rev, err := f.Load(ctx, read)
		if err != nil {
			return err
		}
		full(rev)
		for {
			c, ok := <-f.Changes()
			if !ok {
				break
			}
			batch, closed := Drain(c, f.Changes())
			apply(batch)
			if closed {
				break
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
