package etcd

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
)

// A replica that follows every key (weft server's xDS watcher does) keeps
// a copy of weft's keys as of the last revision its watch delivered: the
// mirror. An Update's first attempt reads from it instead of asking etcd,
// so that a write whose checks are all in the mirror is one etcd request,
// its commit. That is the serializable first read of tx.get with the read
// answered here: the mirror is exactly etcd's state at its revision R (a
// snapshot, maybe behind), and the commit compares the mod revision of
// every key the attempt read and every range it listed or counted against
// R, so a write after R to anything the attempt depended on fails the
// commit, and the attempt runs again on a linearizable read (as after any
// stale first read: Store.attempt). An attempt that fails or writes
// nothing on the mirror runs again the same way: a snapshot behind may
// have missed what it looked for.
//
// Only the first Watch of every key started while no other keeps the
// mirror keeps it: it reads all of weft's keys at the revision it starts
// from, then applies each revision it delivers, its own commits
// (local.go) and the watch's, before handing them on. When that watch
// ends (a slow receiver, compaction, a broken order, the store closing),
// the mirror is dropped until the next watch of every key loads one.
//
// Memory: one btree node entry per key, sharing the values with the watch
// events (which the watch receiver holds anyway). Measured with real
// creates (BenchmarkMirrorMemory, internal/appmesh/ops: 2,000 virtual
// nodes with client tokens): 2.2 KiB of heap per resource for 1,633 bytes
// of keys and values in etcd, about 1.4 times the data; what bounds it is
// in docs/ha.md ("How a write is made safe on etcd").
//
// Measured (BenchmarkUpdateFromMirror: a route-like write reading eight
// keys and a count, three members on this 2-vCPU machine, load average
// 5-8, four runs of 300 writes each way): 3.6-4.8 ms per write (median
// 4.0) against 3.9-4.8 (4.6) with the reads from etcd, and 3.2-3.8 ms of
// the members' CPU per write (3.6) against 3.6-4.5 (4.1): the read round
// trip and its work on a member, about half a millisecond of each.
// Cloud Map's RegisterInstance, whose reads are not batched, went from 8
// read requests one after the other to none (TestInstanceWritesOnEtcd).

// mirrorDegree is the btree's degree (google/btree's own examples use 32;
// a clone copies a node of up to 2*degree entries on the first write to it).
const mirrorDegree = 32

// mirror is a Store's copy of its keys; the zero value keeps none.
type mirror struct {
	mu sync.Mutex // protects the fields below
	// owner is the watch keeping the mirror; nil: none.
	owner *orderer
	// tree holds weft's keys (with the kv prefix) at rev; nil while the
	// owner loads it.
	tree *btree.BTreeG[*mvccpb.KeyValue]
	rev  int64
}

func lessKV(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }

// claim makes o the mirror's keeper when it has none.
func (m *mirror) claim(o *orderer) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owner != nil {
		return false
	}
	m.owner, m.tree, m.rev = o, nil, 0
	return true
}

// release drops the mirror kept by o.
func (m *mirror) release(o *orderer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owner == o {
		m.owner, m.tree, m.rev = nil, nil, 0
	}
}

// loaded installs the keys read at rev as o's mirror.
func (m *mirror) loaded(o *orderer, tree *btree.BTreeG[*mvccpb.KeyValue], rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owner == o {
		m.tree, m.rev = tree, rev
	}
}

// apply adds one delivered revision's events (every key's: o watches all)
// and moves the mirror to seen, o's last delivered revision.
func (m *mirror) apply(o *orderer, evs []store.Event, prefix string, seen store.Revision) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owner != o || m.tree == nil {
		return
	}
	for _, e := range evs {
		key := []byte(prefix + e.KV.Key)
		if e.Type == store.EventDelete {
			m.tree.Delete(&mvccpb.KeyValue{Key: key})
			continue
		}
		m.tree.ReplaceOrInsert(&mvccpb.KeyValue{
			Key: key, Value: slices.Clip(e.KV.Value), // shared with the watch's receiver, which may append
			CreateRevision: int64(e.KV.CreateRevision), ModRevision: int64(e.KV.ModRevision),
		})
	}
	m.rev = int64(seen)
}

// snapshot returns a copy of the mirror (lazily copied: google/btree's
// Clone) and its revision, or nil when there is none or it is behind min.
// The copy is the caller's: the owner's later changes do not reach it.
func (m *mirror) snapshot(min int64) (*btree.BTreeG[*mvccpb.KeyValue], int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tree == nil || m.rev < min || m.rev == 0 {
		return nil, 0
	}
	return m.tree.Clone(), m.rev
}

// loadMirror reads every key of the store at revision rev, for a mirror.
func (s *Store) loadMirror(ctx context.Context, rev int64) (*btree.BTreeG[*mvccpb.KeyValue], error) {
	tree := btree.NewG(mirrorDegree, lessKV)
	start, end := s.kvPrefix, prefixEnd(s.kvPrefix)
	for {
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		resp, err := s.c.Get(rctx, start, clientv3.WithRange(end), clientv3.WithRev(rev),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(mirrorPage))
		err = s.wrap(rctx, err)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			tree.ReplaceOrInsert(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return tree, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// mirrorPage is how many keys one read of loadMirror asks for.
const mirrorPage = 1000

// fromMirror makes an Update's first attempt read from the mirror when
// there is one at least as recent as every revision this replica has
// seen (an older one would only fail the commit); it says whether it did.
func (t *tx) fromMirror() bool {
	snap, rev := t.s.mirror.snapshot(t.s.known.Load())
	if snap == nil {
		return false
	}
	t.snap, t.rev, t.stale = snap, rev, true
	return true
}

// snapGet is the key from the mirror's snapshot (nil: absent).
func (t *tx) snapGet(full string) *mvccpb.KeyValue {
	kv, _ := t.snap.Get(&mvccpb.KeyValue{Key: []byte(full)})
	return kv
}

// snapRange is up to want keys (0: all) of [start, end) in the mirror's
// snapshot, in key order, and whether the range holds more.
func (t *tx) snapRange(start, end string, want int64) (kvs []*mvccpb.KeyValue, more bool) {
	endKey := []byte(end)
	t.snap.AscendGreaterOrEqual(&mvccpb.KeyValue{Key: []byte(start)}, func(kv *mvccpb.KeyValue) bool {
		if bytes.Compare(kv.Key, endKey) >= 0 {
			return false
		}
		if want > 0 && int64(len(kvs)) == want {
			more = true
			return false
		}
		kvs = append(kvs, kv)
		return true
	})
	return kvs, more
}
