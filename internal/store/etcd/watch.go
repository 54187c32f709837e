package etcd

import (
	"context"
	"errors"
	"strings"
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
	// A watcher of every key (the xDS server's) covers every key weft
	// writes, the sequence key included: it sees every weft revision and
	// can tell when one of this replica's commits may be delivered ahead
	// of its event (local.go). A watcher of a prefix (discovery, the
	// console's events) is only sent its prefix's changes by etcd, and
	// takes nothing from the commits: most writes are not its.
	key := s.kvPrefix + prefix
	var local chan localCommit // nil: no commits
	if prefix == "" {
		key = s.rootPrefix
		local = s.local.add()
	}
	// Without previous values: etcd would read each event's previous
	// value from its backend for every watcher, though only a delete's is
	// used (deletedValues reads those).
	wch := s.c.Watch(wctx, key, clientv3.WithPrefix(), clientv3.WithRev(int64(from)+1))
	out := make(chan store.Change, s.opts.WatchBuffer)
	o := newOrderer(prefix, from)
	// The first watch of every key keeps the mirror (mirror.go).
	keeps := prefix == "" && from > 0 && s.mirror.claim(o)
	if keeps {
		// Loaded before the watch starts, so that the caller's next
		// write can use it.
		tree, err := s.loadMirror(ctx, int64(from))
		if err != nil {
			// The watch goes on; writes read from etcd.
			s.log.Warn("reading the keys for the mirror; writes read from etcd", "err", err)
			s.mirror.release(o)
			keeps = false
		} else {
			s.mirror.loaded(o, tree, int64(from))
		}
	}
	go func() { // ends with ctx, Close, a broken etcd watch, a broken order or a slow receiver
		defer close(out)
		defer cancel()
		if local != nil {
			defer s.local.remove(local)
		}
		if keeps {
			defer s.mirror.release(o)
		}
		send := func(c store.Change) bool {
			select {
			case out <- c:
				return true
			default:
				// Too far behind: the receiver resynchronises.
				s.log.Warn("watch receiver fell behind; closing its watch", "prefix", prefix, "buffer", cap(out), "revision", int64(c.Revision))
				return false
			}
		}
		sendLocal := func(cs []localCommit) bool {
			for _, lc := range cs {
				if keeps {
					s.mirror.apply(o, lc.events, s.kvPrefix, lc.rev)
				}
				c, ok := o.change(lc)
				if !ok {
					continue
				}
				s.metrics.learned(viaCommit, lc.at.Sub(lc.sent))
				if !send(c) {
					return false
				}
			}
			return true
		}
		for {
			select {
			case <-s.closing:
				return
			case lc := <-local:
				if !sendLocal(o.fromCommit(lc)) {
					return
				}
			case resp, ok := <-wch:
				if !ok || resp.Canceled || resp.Err() != nil {
					return
				}
				s.observe(resp.Header.Revision)
				changes := s.changes(resp.Events, prefix)
				// A revision this replica's commit already delivered is
				// skipped below: its deletes need no values.
				if err := s.deletedValues(wctx, changes, func(rev store.Revision) bool { return o.early[rev] }); err != nil {
					s.log.Warn("reading the values of deleted keys; closing the watch", "prefix", prefix, "err", err)
					return
				}
				for _, r := range changes {
					deliver, ok := o.fromWatch(r.c.Revision)
					if !ok {
						s.log.Warn("watch event older than a revision already delivered (a write to weft's keys outside weft?); closing the watch", "prefix", prefix, "revision", int64(r.c.Revision))
						return
					}
					if !deliver {
						continue
					}
					if keeps {
						s.mirror.apply(o, r.c.Events, s.kvPrefix, r.c.Revision)
					}
					if len(r.c.Events) > 0 {
						if !r.sent.IsZero() {
							s.metrics.learned(viaWatch, r.c.Committed.Sub(r.sent))
						}
						if !send(r.c) {
							return
						}
					}
					if !sendLocal(o.afterWatch()) {
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

// watched is one revision of a watch response: its events under the
// watcher's prefix (maybe none) and when its commit was sent (from the
// sequence key; zero when it holds none).
type watched struct {
	c    store.Change
	sent time.Time
}

// changes groups a watch response's events by revision (etcd never splits
// one revision's events over two responses: fragmentation is off), keeping
// only the events under the kv prefix and prefix; every revision is
// listed, with or without events.
func (s *Store) changes(evs []*clientv3.Event, prefix string) []watched {
	var out []watched
	now := time.Now()
	for _, ev := range evs {
		rev := store.Revision(ev.Kv.ModRevision)
		if n := len(out); n == 0 || out[n-1].c.Revision != rev {
			// etcd does not say when a revision was committed; the moment
			// this replica learnt of it is the closest it knows.
			out = append(out, watched{c: store.Change{Revision: rev, Committed: now}})
		}
		w := &out[len(out)-1]
		key := string(ev.Kv.Key)
		if key == s.seqKey && ev.Type == mvccpb.PUT {
			w.sent, _ = sentAt(ev.Kv.Value)
			continue
		}
		key, ok := strings.CutPrefix(key, s.kvPrefix)
		if !ok || !hasPrefix(key, prefix) {
			continue
		}
		var e store.Event
		switch ev.Type {
		case mvccpb.PUT:
			e = store.Event{Type: store.EventPut, KV: store.KV{
				Key: key, Value: ev.Kv.Value,
				CreateRevision: store.Revision(ev.Kv.CreateRevision), ModRevision: store.Revision(ev.Kv.ModRevision),
			}}
		case mvccpb.DELETE:
			// Its value and create revision: deletedValues.
			e = store.Event{Type: store.EventDelete, KV: store.KV{Key: key, ModRevision: store.Revision(ev.Kv.ModRevision)}}
		default:
			continue
		}
		w.c.Events = append(w.c.Events, e)
	}
	return out
}

// maxDeletedReads bounds the reads of one Txn of deletedValues, under
// etcd's default --max-txn-ops (128).
const maxDeletedReads = 100

// deletedValues fills in the value and create revision every delete event
// of cs had before it (the store's contract), read at the revision before
// the delete: serializable (the watch's member has applied it; another
// may not have, then linearizable), up to maxDeletedReads keys per Txn.
// Deletes are rare (a resource deleted, a client token expired), so this
// costs etcd less than previous values on every event of every watch. The
// revisions delivered says were delivered already (this replica's
// commits: local.go) are left as they are.
func (s *Store) deletedValues(ctx context.Context, cs []watched, delivered func(store.Revision) bool) error {
	type ref struct{ c, e int }
	var refs []ref
	for i := range cs {
		if delivered(cs[i].c.Revision) {
			continue
		}
		for j, e := range cs[i].c.Events {
			if e.Type == store.EventDelete {
				refs = append(refs, ref{i, j})
			}
		}
	}
	for len(refs) > 0 {
		n := min(len(refs), maxDeletedReads)
		batch := refs[:n]
		refs = refs[n:]
		read := func(serializable bool) (*clientv3.TxnResponse, error) {
			ops := make([]clientv3.Op, len(batch))
			for k, r := range batch {
				e := cs[r.c].c.Events[r.e]
				opts := []clientv3.OpOption{clientv3.WithRev(int64(e.KV.ModRevision) - 1)}
				if serializable {
					opts = append(opts, clientv3.WithSerializable())
				}
				ops[k] = clientv3.OpGet(s.kvPrefix+e.KV.Key, opts...)
			}
			rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
			defer cancel()
			resp, err := s.c.Txn(rctx).Then(ops...).Commit()
			return resp, s.wrap(rctx, err)
		}
		resp, err := read(true)
		if errors.Is(err, rpctypes.ErrFutureRev) {
			resp, err = read(false)
		}
		if err != nil {
			return err
		}
		for k, r := range batch {
			kvs := resp.Responses[k].GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue // etcd reports no delete of a missing key
			}
			e := &cs[r.c].c.Events[r.e]
			e.KV.Value = kvs[0].Value
			e.KV.CreateRevision = store.Revision(kvs[0].CreateRevision)
		}
	}
	return nil
}
