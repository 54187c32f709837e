package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/txbuf"
)

// errRestart makes Update run fn again: the snapshot it was reading was
// compacted away under it.
var errRestart = errors.New("store: snapshot compacted during the transaction, restarting it")

// tx reads at one etcd revision and buffers writes. It records what it
// read so that commit can tell whether a concurrent write invalidated it.
type tx struct {
	ctx      context.Context
	s        *Store
	readOnly bool
	// staleFirst lets the first read be serializable (see get); stale
	// says it was.
	staleFirst, stale bool
	rev               int64 // snapshot revision; 0 until the first read
	restart           bool  // a read failed with a compacted snapshot
	w                 *txbuf.Buffer
	// reads holds the mod revision of every key read (0: absent).
	reads map[string]int64
	// prefetched holds what Prefetch read, by key (nil: absent), for the
	// Gets to come.
	prefetched map[string]*mvccpb.KeyValue
	// counted and listed hold what PrefetchReads read for Count and for
	// List, by prefix.
	counted map[string][]*mvccpb.KeyValue
	listed  map[string]prefetchedList
	// ranges holds every [start, end) range a List or Count read, as etcd
	// keys.
	ranges []keyRange
	// snap, when set, is the mirror's copy at rev that every read of the
	// transaction answers from (mirror.go).
	snap *btree.BTreeG[*mvccpb.KeyValue]
}

type keyRange struct{ start, end string }

func (s *Store) newTx(ctx context.Context, readOnly bool) *tx {
	return &tx{ctx: ctx, s: s, readOnly: readOnly, w: txbuf.New(readOnly), reads: map[string]int64{}}
}

// get runs one etcd range read at the snapshot revision, fixing the
// snapshot at the first read.
//
// The first read of a View is linearizable (a quorum confirms the member
// is current), so that it sees every write acknowledged before it began,
// through any replica. The first read of an Update's first attempt is
// serializable (staleFirst): the member answers from its own state, which
// may lack the last writes, without the round to the leader and a quorum
// that costs every member CPU (a linearizable read costs the members
// about four times a serializable one: BenchmarkMemberRequests). That is
// safe because the commit compares every key and range read against what
// etcd holds when it commits: a snapshot that missed a write to anything
// the transaction read fails the Txn, and the next attempt reads
// linearizably. What the commit cannot check is an attempt that commits
// nothing (fn failed, or wrote nothing): those run again with a
// linearizable first read (Store.attempt). An answer older than a
// revision this replica has already seen (Store.known) is known to be
// stale: the read is made again linearizably at once.
//
// The later reads read the same fixed revision, whose content no member
// can disagree on: they are serializable, answered
// by the member from its own state without a round to the leader and a
// quorum; a member that has not applied the revision yet answers
// ErrFutureRev, and the read is made linearizable instead.
func (t *tx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return read(t, func(ctx context.Context, c *clientv3.Client, more ...clientv3.OpOption) (*clientv3.GetResponse, error) {
		return c.Get(ctx, key, append(opts[:len(opts):len(opts)], more...)...)
	}, func(r *clientv3.GetResponse) *etcdserverpb.ResponseHeader { return r.Header })
}

// ensureRev fixes the snapshot revision of a transaction that read
// nothing.
func (t *tx) ensureRev() error {
	if t.rev != 0 {
		return nil
	}
	_, err := t.get(t.s.formatKey, clientv3.WithCountOnly())
	return err
}

// toKV is a key as a transaction returns it. The value is clipped to its
// length: values read from the mirror are shared by every transaction
// reading them, and an append to one (a counter's) must not write into
// the array the others see.
func (t *tx) toKV(key string, create, mod int64, value []byte) store.KV {
	return store.KV{Key: key, Value: slices.Clip(value), CreateRevision: store.Revision(create), ModRevision: store.Revision(mod)}
}

// stored reads key as the store holds it at the snapshot, recording the
// read for the commit's compares.
func (t *tx) stored(key string) (store.KV, bool, error) { return t.lookup(key, true) }

// peek is stored without recording the read (Unguarded).
func (t *tx) peek(key string) (store.KV, bool, error) { return t.lookup(key, false) }

func (t *tx) lookup(key string, guard bool) (store.KV, bool, error) {
	kv, ok := t.prefetched[key]
	if !ok {
		kv, ok = t.fromListed(key)
	}
	if !ok && t.snap != nil {
		kv, ok = t.snapGet(t.s.kvPrefix+key), true
	}
	if !ok {
		resp, err := t.get(t.s.kvPrefix + key)
		if err != nil {
			return store.KV{}, false, err
		}
		if len(resp.Kvs) > 0 {
			kv = resp.Kvs[0]
		}
	}
	if kv == nil {
		if guard {
			t.reads[key] = 0
		}
		return store.KV{}, false, nil
	}
	if guard {
		t.reads[key] = kv.ModRevision
	}
	return t.toKV(key, kv.CreateRevision, kv.ModRevision, kv.Value), true, nil
}

func (t *tx) Get(key string) (store.KV, bool, error) { return t.w.Get(key, t.stored) }

func (t *tx) List(prefix, after string, limit int) ([]store.KV, error) {
	return t.list(prefix, after, limit, true)
}

func (t *tx) Count(prefix string) (int, error) { return t.count(prefix, true) }

// Unguarded implements store.Tx: its reads are the transaction's, at the
// same revision, but neither their keys nor their ranges are compared at
// the commit.
func (t *tx) Unguarded() store.Reader { return unguarded{t} }

// unguarded reads t's snapshot without recording what it read.
type unguarded struct{ t *tx }

func (u unguarded) Get(key string) (store.KV, bool, error) { return u.t.w.Get(key, u.t.peek) }

func (u unguarded) List(prefix, after string, limit int) ([]store.KV, error) {
	return u.t.list(prefix, after, limit, false)
}

func (u unguarded) Count(prefix string) (int, error) { return u.t.count(prefix, false) }

// read runs one read of a transaction, do given the client and the options
// it takes (get's comment says when each is used): at the snapshot revision
// when it is fixed, serializable; as the first read, serializable for an
// Update's first attempt unless the member is behind a revision this
// replica saw, linearizable otherwise, fixing the snapshot at the revision
// it read. A read whose member did not answer within its first try's time
// is made once more through another member (retry.go).
func read[R any](t *tx, do func(context.Context, *clientv3.Client, ...clientv3.OpOption) (R, error), header func(R) *etcdserverpb.ResponseHeader) (R, error) {
	deadline, first := t.s.tryTimeouts(time.Now())
	ctx, cancel := context.WithTimeout(t.ctx, first)
	defer cancel()
	resp, err := readOnce(t, ctx, t.s.c, do, header)
	if noAnswer(t.ctx, err) {
		if c := t.s.otherMember(nil); c != nil {
			t.s.metrics.retried.WithLabelValues("read").Inc()
			var rcancel context.CancelFunc
			ctx, rcancel = context.WithDeadline(t.ctx, deadline)
			defer rcancel()
			resp, err = readOnce(t, ctx, c, do, header)
		}
	}
	var none R
	if err != nil {
		err = t.s.wrap(ctx, err)
		if errors.Is(err, store.ErrCompacted) && !t.readOnly {
			t.restart = true
			return none, errRestart
		}
		return none, err
	}
	if t.rev == 0 {
		t.rev = header(resp).Revision
		if !t.stale {
			t.s.observe(t.rev)
		}
	}
	return resp, nil
}

// readOnce is one try of read, through client c.
func readOnce[R any](t *tx, ctx context.Context, c *clientv3.Client, do func(context.Context, *clientv3.Client, ...clientv3.OpOption) (R, error), header func(R) *etcdserverpb.ResponseHeader) (R, error) {
	var resp R
	var err error
	switch {
	case t.rev != 0:
		resp, err = do(ctx, c, clientv3.WithRev(t.rev), clientv3.WithSerializable())
		if errors.Is(err, rpctypes.ErrFutureRev) {
			resp, err = do(ctx, c, clientv3.WithRev(t.rev))
		}
	case t.staleFirst:
		opts := []clientv3.OpOption{clientv3.WithSerializable()}
		if t.s.staleAt != 0 {
			opts = append(opts, clientv3.WithRev(t.s.staleAt))
		}
		resp, err = do(ctx, c, opts...)
		switch {
		case err != nil:
		case header(resp).Revision < t.s.known.Load():
			// The member is behind what this replica already saw (its
			// own commits, its watch): that snapshot would only fail
			// the commit.
			t.s.metrics.stale.WithLabelValues(staleBehind).Inc()
			resp, err = do(ctx, c)
		default:
			t.s.metrics.stale.WithLabelValues(staleUsed).Inc()
			t.stale = true
			if t.s.staleAt != 0 {
				header(resp).Revision = t.s.staleAt
			}
		}
	default:
		resp, err = do(ctx, c)
	}
	return resp, err
}

// prefixEnd is the first key after every key with the prefix.
func prefixEnd(prefix string) string {
	return clientv3.GetPrefixRangeEnd(prefix)
}

// list is List; guard records what it read for the commit's compares.
func (t *tx) list(prefix, after string, limit int, guard bool) ([]store.KV, error) {
	start := t.s.kvPrefix + prefix
	if after >= prefix {
		start = t.s.kvPrefix + after + "\x00"
	}
	end := prefixEnd(t.s.kvPrefix + prefix)
	want := int64(0)
	if limit > 0 {
		want = int64(limit + t.w.Extra())
	}
	kvs, more, err := t.listRows(prefix, after, start, end, want)
	if err != nil {
		return nil, err
	}
	// What the result depends on: the keys returned and, for a page that
	// stopped at the limit, the range up to its last key; otherwise the
	// whole rest of the prefix.
	readEnd := end
	if more && len(kvs) > 0 {
		readEnd = string(kvs[len(kvs)-1].Key) + "\x00"
	}
	stored := t.peek
	if guard {
		t.ranges = append(t.ranges, keyRange{start, readEnd})
		stored = t.stored
	}
	var out []store.KV
	for _, kv := range kvs {
		key := string(kv.Key[len(t.s.kvPrefix):])
		if guard {
			t.reads[key] = kv.ModRevision
		}
		if t.w.Shadows(key) {
			continue
		}
		out = append(out, t.toKV(key, kv.CreateRevision, kv.ModRevision, kv.Value))
	}
	return t.w.Merge(out, prefix, after, limit, stored)
}

// listRows reads the rows of a List from start (want of them, 0: all),
// from what PrefetchReads read when that covers them, and says whether
// the range holds more.
func (t *tx) listRows(prefix, after, start, end string, want int64) ([]*mvccpb.KeyValue, bool, error) {
	if pre, ok := t.listed[prefix]; ok && after < prefix {
		switch {
		case want > 0 && int64(len(pre.kvs)) > want:
			return pre.kvs[:want], true, nil
		case want > 0 && int64(len(pre.kvs)) == want, !pre.more:
			return pre.kvs, pre.more, nil
		}
	}
	if t.snap != nil {
		kvs, more := t.snapRange(start, end, want)
		return kvs, more, nil
	}
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if want > 0 {
		opts = append(opts, clientv3.WithLimit(want))
	}
	resp, err := t.get(start, opts...)
	if err != nil {
		return nil, false, err
	}
	return resp.Kvs, resp.More, nil
}

// count is Count; guard records what it read for the commit's compares.
func (t *tx) count(prefix string, guard bool) (int, error) {
	start := t.s.kvPrefix + prefix
	end := prefixEnd(start)
	kvs, ok := t.counted[prefix]
	if !ok && t.snap != nil {
		kvs, _ = t.snapRange(start, end, 0)
		ok = true
	}
	if !ok && !guard && !t.w.Touches(prefix) {
		// Nothing to compare and none of the transaction's writes to
		// take out: etcd's count is the answer, without the keys.
		resp, err := t.get(start, clientv3.WithRange(end), clientv3.WithCountOnly())
		if err != nil {
			return 0, err
		}
		return int(resp.Count), nil
	}
	if !ok {
		// Keys only, not a bare count: commit needs each key's revision
		// to notice one deleted after the snapshot, and the keys the
		// transaction wrote must be told apart.
		resp, err := t.get(start, clientv3.WithRange(end), clientv3.WithKeysOnly())
		if err != nil {
			return 0, err
		}
		kvs = resp.Kvs
	}
	if guard {
		t.ranges = append(t.ranges, keyRange{start, end})
	}
	n := 0
	for _, kv := range kvs {
		key := string(kv.Key[len(t.s.kvPrefix):])
		if guard {
			t.reads[key] = kv.ModRevision
		}
		if !t.w.Shadows(key) {
			n++
		}
	}
	return n + t.w.Puts(prefix), nil
}

func (t *tx) Put(key string, value []byte) error { return t.w.Put(key, value) }

func (t *tx) Delete(key string) error { return t.w.Delete(key, t.stored) }

// commit writes the buffered changes in one etcd Txn guarded by what the
// transaction read:
//
//   - every key read (by Get, List or Count) still has the mod revision it
//     had at the snapshot (0 for a key read as absent): this catches a key
//     changed, created or deleted after the snapshot;
//   - every range List or Count read holds no key modified after the
//     snapshot (ModRevision < R+1 over the range): this catches a key
//     created inside a range, which no per-key compare can name.
//
// When that is more compares than MaxCompares, the transaction instead
// compares the sequence key, which every write transaction puts: it then
// fails if anything at all was written after the snapshot, which is
// correct, only less concurrent. ok=false means a conflict: run fn again.
func (t *tx) commit() (rev store.Revision, ok bool, err error) {
	if t.restart {
		return 0, false, nil
	}
	if t.w.Len() == 0 {
		if err := t.ensureRev(); err != nil {
			return 0, false, err
		}
		return store.Revision(t.rev), true, nil
	}
	var cmps []clientv3.Cmp
	seqCompared := false
	if t.rev != 0 {
		for key, mod := range t.reads {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.kvPrefix+key), "=", mod))
		}
		for _, r := range t.ranges {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.start), "<", t.rev+1).WithRange(r.end))
		}
		if len(cmps) > t.s.opts.MaxCompares {
			cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(t.s.seqKey), "<", t.rev+1)}
			seqCompared = true
			t.s.metrics.seqGuarded.Inc()
		}
	}
	// Every op returns the key's previous value, so that this replica can
	// hand its own change to its watchers from the response (see
	// local.go) with the events etcd's watch will carry.
	ops := make([]clientv3.Op, 0, t.w.Len()+1)
	writes := make([]write, 0, t.w.Len())
	t.w.Each(func(k string, value []byte, deleted bool) error {
		writes = append(writes, write{key: k, value: value, deleted: deleted})
		if deleted {
			ops = append(ops, clientv3.OpDelete(t.s.kvPrefix+k, clientv3.WithPrevKV()))
		} else {
			ops = append(ops, clientv3.OpPut(t.s.kvPrefix+k, string(value), clientv3.WithPrevKV()))
		}
		return nil
	})
	// The sequence key holds when the commit was sent (this replica's
	// clock), for the replicas' learn latency metric; its previous mod
	// revision is the weft write just before this one. The value also
	// tells this commit from others when a second try must find out
	// whether the first was applied.
	sent := time.Now()
	token := strconv.FormatInt(sent.UnixNano(), 10)
	ops = append(ops, clientv3.OpPut(t.s.seqKey, token, clientv3.WithPrevKV()))
	deadline, first := t.s.tryTimeouts(sent)
	if !t.guarded(seqCompared) {
		first = t.s.opts.RequestTimeout // no second try: it could apply the commit twice
	}
	ctx, cancel := context.WithTimeout(t.ctx, first)
	defer cancel()
	c := t.s.commitClient(ctx)
	resp, err := c.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if noAnswer(t.ctx, err) && first < t.s.opts.RequestTimeout && time.Until(deadline) > 0 {
		if other := t.s.otherMember(c); other != nil {
			// A second try of the same Txn: its compares fail if the
			// first was applied after all, and then the sequence key's
			// history says whether it was this commit. A linearizable
			// read first waits for the cluster to have a leader (the
			// first try may have failed with the leader).
			t.s.metrics.retried.WithLabelValues("commit").Inc()
			var rcancel context.CancelFunc
			ctx, rcancel = context.WithDeadline(t.ctx, deadline)
			defer rcancel()
			other.Get(ctx, t.s.formatKey, clientv3.WithCountOnly()) // an error shows in the Txn
			resp, err = other.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(t.s.seqKey, clientv3.WithKeysOnly())).Commit()
			if err == nil && !resp.Succeeded {
				rev, err := t.firstTryApplied(ctx, other, token, resp)
				if err != nil {
					return 0, false, fmt.Errorf("commit: finding whether a timed-out commit was applied: %w", t.s.wrap(ctx, err))
				}
				if rev != 0 {
					t.s.observe(rev)
					return store.Revision(rev), true, nil // its watch event tells this replica's watchers
				}
			}
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("commit: %w", t.s.wrap(ctx, err))
	}
	if !resp.Succeeded {
		t.s.metrics.conflicts.Inc()
		return 0, false, nil
	}
	t.s.observe(resp.Header.Revision)
	now := time.Now()
	t.s.metrics.commit.Observe(now.Sub(sent).Seconds())
	t.s.committed(writes, resp, sent, now)
	return store.Revision(resp.Header.Revision), true, nil
}

// firstTryApplied says at which revision the first try of a commit whose
// second try failed its compares was applied (0: it was not), from the
// sequence key's mod revision the second try's Else read.
func (t *tx) firstTryApplied(ctx context.Context, c *clientv3.Client, token string, resp *clientv3.TxnResponse) (int64, error) {
	if len(resp.Responses) != 1 {
		return 0, errors.New("unexpected response")
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || kvs[0].ModRevision <= t.rev {
		return 0, nil
	}
	return t.s.appliedAt(ctx, c, token, t.rev, kvs[0].ModRevision)
}

// backoff waits a little, randomly, before the next attempt of a
// conflicting transaction, so that contenders spread out.
func backoff(ctx context.Context, attempt int) error {
	limit := time.Millisecond << min(attempt, 6)
	d := rand.N(limit) + time.Millisecond/4
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
