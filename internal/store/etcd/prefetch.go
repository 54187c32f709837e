package etcd

import (
	"context"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A write's reads made ahead, in one request: Prefetch and PrefetchReads,
// and the reads that answer from what they read.

// maxPrefetch bounds the reads of one Prefetch Txn, under etcd's default
// --max-txn-ops (128).
const maxPrefetch = 100

// listSlack is how many rows more than asked a prefetched List reads, for
// the rows the transaction's own writes hide (a List asks for its limit
// plus the writes buffered when it runs).
const listSlack = 32

// prefetchedList is what PrefetchReads read for a List from the start of
// a prefix: its first rows, and whether there were more.
type prefetchedList struct {
	kvs  []*mvccpb.KeyValue
	more bool
}

// Prefetch reads keys the transaction is about to Get in one etcd Txn of
// range reads at its snapshot revision, instead of a round trip each: the
// Gets then answer from what it read, and record their reads for the
// commit's compares as any Get does (a key prefetched but never read is
// not compared: nothing depended on it). It does nothing before the
// snapshot is fixed (the first read decides it), for keys already read or
// written, or beyond maxPrefetch keys.
func (t *tx) Prefetch(keys ...string) error {
	if t.rev == 0 {
		return nil
	}
	want := t.unread(keys)
	if len(want) < 2 {
		return nil // one read is no better in a Txn
	}
	return t.PrefetchReads(want, nil, nil)
}

// unread returns keys, once each, less those already read, prefetched or
// written.
func (t *tx) unread(keys []string) []string {
	var want []string
	for _, k := range keys {
		if _, read := t.reads[k]; read || t.w.Shadows(k) || slices.Contains(want, k) {
			continue
		}
		if _, done := t.prefetched[k]; done {
			continue
		}
		want = append(want, k)
	}
	return want
}

// PrefetchReads reads, in one etcd Txn of range reads, what the
// transaction is about to read: keys it will Get, prefixes it will Count,
// and prefixes it will List from their start with at most the limit lists
// gives (plus the rows its own writes will hide). The reads to come then
// answer from it and record what they depend on for the commit's compares
// as usual (what was prefetched but never read is not compared). Made
// before the transaction's first read, it is that first read: it fixes
// the snapshot as get does (serializable for an Update's first attempt,
// linearizable otherwise), so that a write which reads what it checks
// up front costs one read round trip and its commit. Beyond maxPrefetch
// reads, it reads nothing: the reads go one by one as they come.
func (t *tx) PrefetchReads(keys, counts []string, lists map[string]int) error {
	if t.snap != nil {
		return nil // the mirror answers every read
	}
	keys = t.unread(keys)
	counts = slices.DeleteFunc(slices.Clone(counts), func(p string) bool { _, done := t.counted[p]; return done })
	n := len(keys) + len(counts) + len(lists)
	if n == 0 || n > maxPrefetch {
		return nil
	}
	var ops []clientv3.Op
	build := func(extra ...clientv3.OpOption) []clientv3.Op {
		ops = ops[:0]
		for _, k := range keys {
			ops = append(ops, clientv3.OpGet(t.s.kvPrefix+k, extra...))
		}
		for _, p := range counts {
			start := t.s.kvPrefix + p
			ops = append(ops, clientv3.OpGet(start, append([]clientv3.OpOption{clientv3.WithRange(prefixEnd(start)), clientv3.WithKeysOnly()}, extra...)...))
		}
		for _, p := range slices.Sorted(maps.Keys(lists)) {
			start := t.s.kvPrefix + p
			ops = append(ops, clientv3.OpGet(start, append([]clientv3.OpOption{clientv3.WithRange(prefixEnd(start)),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(int64(lists[p] + listSlack))}, extra...)...))
		}
		return ops
	}
	resp, err := t.readTxn(build)
	if err != nil {
		return err
	}
	if len(resp.Responses) != n {
		return nil // not what was asked: the reads go one by one
	}
	i := 0
	if len(keys) > 0 && t.prefetched == nil {
		t.prefetched = make(map[string]*mvccpb.KeyValue, len(keys))
	}
	for _, k := range keys {
		var kv *mvccpb.KeyValue
		if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			kv = kvs[0]
		}
		t.prefetched[k] = kv
		i++
	}
	for _, p := range counts {
		if t.counted == nil {
			t.counted = map[string][]*mvccpb.KeyValue{}
		}
		t.counted[p] = resp.Responses[i].GetResponseRange().GetKvs()
		i++
	}
	for _, p := range slices.Sorted(maps.Keys(lists)) {
		if t.listed == nil {
			t.listed = map[string]prefetchedList{}
		}
		r := resp.Responses[i].GetResponseRange()
		t.listed[p] = prefetchedList{kvs: r.GetKvs(), more: r.GetMore()}
		i++
	}
	return nil
}

// readTxn runs one etcd Txn of the range reads build returns (given the
// options every read takes) as get runs one read.
func (t *tx) readTxn(build func(...clientv3.OpOption) []clientv3.Op) (*clientv3.TxnResponse, error) {
	return read(t, func(ctx context.Context, c *clientv3.Client, opts ...clientv3.OpOption) (*clientv3.TxnResponse, error) {
		return c.Txn(ctx).Then(build(opts...)...).Commit()
	}, func(r *clientv3.TxnResponse) *etcdserverpb.ResponseHeader { return r.Header })
}

// fromListed answers a read of key from the rows PrefetchReads listed,
// when they cover it: a key under a listed prefix, up to the last row
// read (or anywhere under it when the rows were all there was), is among
// them or absent. ok=false: they do not say.
func (t *tx) fromListed(key string) (kv *mvccpb.KeyValue, ok bool) {
	for p, pre := range t.listed {
		if !strings.HasPrefix(key, p) {
			continue
		}
		full := t.s.kvPrefix + key
		if pre.more && (len(pre.kvs) == 0 || full > string(pre.kvs[len(pre.kvs)-1].Key)) {
			return nil, false
		}
		i, found := slices.BinarySearchFunc(pre.kvs, full, func(kv *mvccpb.KeyValue, k string) int { return strings.Compare(string(kv.Key), k) })
		if found {
			return pre.kvs[i], true
		}
		return nil, true
	}
	return nil, false
}
