package discovery

import (
	"context"
	"errors"
	"fmt"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// Source is what Follow needs from the store.
type Source interface {
	View(ctx context.Context, fn func(store.Tx) error) (store.Revision, error)
	Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error)
}

// Update is one step of Follow: the new index and what changed since the
// previous one. Full means anything may have changed (the first index, or
// a reload after the watch was dropped); Changed is then nil.
type Update struct {
	Index   *Index
	Changed []ServiceRef
	Full    bool
}

// Follow loads the index, calls publish with it, then calls publish after
// every store change that touches Cloud Map records, until ctx ends. When
// the store drops the watch (the reader fell behind, or history was
// compacted) it reloads and publishes a Full update. publish runs on
// Follow's goroutine, one call at a time. Follow returns ctx's error, or
// the store's when it cannot read.
func Follow(ctx context.Context, src Source, publish func(Update)) error {
	for {
		var ix *Index
		rev, err := src.View(ctx, func(tx store.Tx) (err error) {
			ix, err = Load(tx, 0)
			return err
		})
		if err != nil {
			return fmt.Errorf("load discovery index: %w", err)
		}
		ix = ix.WithRevision(rev)
		changes, err := src.Watch(ctx, cloudmap.KeyPrefix, rev)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if err != nil {
			return fmt.Errorf("watch discovery index: %w", err)
		}
		publish(Update{Index: ix, Full: true})
		for c := range changes {
			next, changed := ix.Apply(c)
			if next == ix {
				continue
			}
			ix = next
			publish(Update{Index: ix, Changed: changed})
		}
		// The channel closed: ctx ended, the store closed, or we fell behind.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
