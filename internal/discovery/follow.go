package discovery

import (
	"context"
	"fmt"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/follow"
)

// Source is what Follow needs from the store.
type Source = follow.Source

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
// compacted) it reloads and publishes a Full update (internal/store/follow
// does the following). publish runs on Follow's goroutine, one call at a
// time. A record Load or Apply leaves out is passed to skip (when not
// nil), on Follow's goroutine, once per load or change (a load read
// again after a store error reports only the read it keeps), before the
// update that leaves it out is published. Follow returns ctx's error, or the store's
// when it cannot read.
func Follow(ctx context.Context, src Source, skip func(key string, err error), publish func(Update)) error {
	var ix *Index
	// The records a load left out, passed to skip once the load is the
	// one kept: follow.Run reads again after a store error or a compacted
	// revision, and each read finds them anew.
	type skipped struct {
		key string
		err error
	}
	var skips []skipped
	read := func(tx store.Tx) (err error) {
		skips = skips[:0]
		ix, err = Load(tx, 0, func(key string, err error) { skips = append(skips, skipped{key, err}) })
		if err != nil {
			return fmt.Errorf("load discovery index: %w", err)
		}
		return nil
	}
	full := func(rev store.Revision) {
		if skip != nil {
			for _, s := range skips {
				skip(s.key, s.err)
			}
		}
		skips = nil
		ix = ix.WithRevision(rev)
		publish(Update{Index: ix, Full: true})
	}
	apply := func(batch []store.Change) {
		for _, c := range batch {
			next, changed := ix.Apply(c, skip)
			if next == ix {
				continue
			}
			ix = next
			publish(Update{Index: ix, Changed: changed})
		}
	}
	return follow.Run(ctx, src, cloudmap.KeyPrefix, read, full, apply)
}
