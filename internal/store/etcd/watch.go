package etcd

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
)

// DefaultWatchBuffer is how many changes a watcher may have unread before
// it is dropped and must resynchronise (Options.WatchBuffer).
const DefaultWatchBuffer = 4096

// Watch implements store.Store on an etcd watch from revision from+1. The
// channel closes when ctx ends, the store closes, the receiver falls
// Options.WatchBuffer changes behind, etcd compacts the revision the watch must
// resume from: in every case the receiver resynchronises from a View.
// While etcd cannot be reached the channel stays open and silent (the
// client reconnects, to another member if one is dead, and resumes from
// the last revision delivered), so that followers keep what they have
// instead of failing a resync against an unreachable store.
func (s *Store) Watch(ctx context.Context, prefix string, from store.Revision) (<-chan store.Change, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	// An etcd watch reports compaction only after it was created; read at
	// from first so that a compacted start fails here, as the contract
	// asks.
	if err := s.checkRevision(ctx, from); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	wch := s.c.Watch(wctx, s.kvPrefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(int64(from)+1), clientv3.WithPrevKV())
	out := make(chan store.Change, s.opts.WatchBuffer)
	go func() { // ends with ctx, Close, a broken etcd watch or a slow receiver
		defer close(out)
		defer cancel()
		for {
			select {
			case <-s.closing:
				return
			case resp, ok := <-wch:
				if !ok || resp.Canceled || resp.Err() != nil {
					return
				}
				for _, c := range s.changes(resp.Events) {
					select {
					case out <- c:
					default:
						// Too far behind: the receiver resynchronises.
						s.log.Warn("watch receiver fell behind; closing its watch", "prefix", prefix, "buffer", cap(out), "revision", int64(c.Revision))
						return
					}
				}
			}
		}
	}()
	return out, nil
}

func (s *Store) checkRevision(ctx context.Context, from store.Revision) error {
	rev := int64(from)
	if rev < 1 {
		rev = 1
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	_, err := s.c.Get(rctx, s.formatKey, clientv3.WithRev(rev), clientv3.WithCountOnly())
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return nil
	}
	return s.wrap(rctx, err)
}

// changes groups a watch response's events by revision: etcd never splits
// one revision's events over two responses (fragmentation is off).
func (s *Store) changes(evs []*clientv3.Event) []store.Change {
	var out []store.Change
	now := time.Now()
	for _, ev := range evs {
		var e store.Event
		switch ev.Type {
		case mvccpb.PUT:
			e = store.Event{Type: store.EventPut, KV: store.KV{
				Key: string(ev.Kv.Key[len(s.kvPrefix):]), Value: ev.Kv.Value,
				CreateRevision: store.Revision(ev.Kv.CreateRevision), ModRevision: store.Revision(ev.Kv.ModRevision),
			}}
		case mvccpb.DELETE:
			e = store.Event{Type: store.EventDelete, KV: store.KV{
				Key: string(ev.Kv.Key[len(s.kvPrefix):]), ModRevision: store.Revision(ev.Kv.ModRevision),
			}}
			if ev.PrevKv != nil {
				e.KV.Value = ev.PrevKv.Value
				e.KV.CreateRevision = store.Revision(ev.PrevKv.CreateRevision)
			}
		default:
			continue
		}
		rev := store.Revision(ev.Kv.ModRevision)
		if n := len(out); n > 0 && out[n-1].Revision == rev {
			out[n-1].Events = append(out[n-1].Events, e)
			continue
		}
		// etcd does not say when a revision was committed; the moment this
		// replica learnt of it is the closest it knows.
		out = append(out, store.Change{Revision: rev, Events: []store.Event{e}, Committed: now})
	}
	return out
}
