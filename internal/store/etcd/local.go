package etcd

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
)

// A replica learns of its own writes from the commit's response, not from
// etcd's watch: the watch event reaches it a round trip or more later
// (the member serving the watch may be a follower that learns of the
// commit from the leader's next message), and on a machine whose cores
// are busy recomputing, every wakeup counts. The watch stays the source
// of truth; the commit only lets a watcher deliver a revision early when
// that keeps the exact revision order:
//
//   - every weft write puts the sequence key, so the sequence key's
//     previous mod revision in the commit's response (prev) is the weft
//     write just before this one;
//   - a watcher of every key (the xDS server's; prefix watchers take no
//     commits) delivers a committed revision rev at once when it has
//     already delivered everything up to prev (its watch covers every key
//     weft writes, so it sees every weft revision); otherwise it parks the
//     commit until its watch reaches prev;
//   - the watch event of a revision delivered so is then skipped. A watch
//     event older than what the watcher delivered that it did not deliver
//     itself (a write to weft's keys by something other than weft) breaks
//     the order: the watcher closes its channel and the receiver
//     resynchronises, as after any dropped watch.
//
// A commit that cannot be handed over (a watcher's queue full, too many
// parked) is dropped: its watch event delivers it.

// write is one key a transaction wrote.
type write struct {
	key     string // without the kv prefix
	value   []byte
	deleted bool
}

// localCommit is one of this replica's commits, as its watchers see it.
type localCommit struct {
	rev, prev store.Revision
	events    []store.Event // every key, filtered per watcher
	sent      time.Time     // when the commit was sent
	at        time.Time     // when its response arrived
}

// Bounds of the commits handed over to one watcher.
const (
	localQueue  = 256  // commits waiting for the watcher's goroutine
	localParked = 256  // commits waiting for an earlier revision's watch event
	localEarly  = 4096 // revisions delivered ahead of their watch event
)

// localWatchers are the watchers of one Store that take its commits.
type localWatchers struct {
	mu sync.Mutex
	m  map[chan localCommit]struct{}
}

func (l *localWatchers) add() chan localCommit {
	ch := make(chan localCommit, localQueue)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[chan localCommit]struct{}{}
	}
	l.m[ch] = struct{}{}
	return ch
}

func (l *localWatchers) remove(ch chan localCommit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, ch)
}

// committed hands a successful commit's change to this replica's watchers.
// writes are the transaction's keys in the order of its ops; resp is the
// Txn's response, one op response per write and then the sequence key's.
func (s *Store) committed(writes []write, resp *clientv3.TxnResponse, sent, at time.Time) {
	rev := store.Revision(resp.Header.Revision)
	if len(resp.Responses) != len(writes)+1 {
		return // not the response this transaction asked for: the watch delivers it
	}
	var prev store.Revision
	if p := resp.Responses[len(writes)].GetResponsePut().GetPrevKv(); p != nil {
		prev = store.Revision(p.ModRevision)
	}
	c := localCommit{rev: rev, prev: prev, sent: sent, at: at}
	for i, w := range writes {
		if w.deleted {
			// etcd reports no event for deleting a key that did not exist.
			pkvs := resp.Responses[i].GetResponseDeleteRange().GetPrevKvs()
			if len(pkvs) == 0 {
				continue
			}
			c.events = append(c.events, store.Event{Type: store.EventDelete, KV: store.KV{
				Key: w.key, Value: pkvs[0].Value, CreateRevision: store.Revision(pkvs[0].CreateRevision), ModRevision: rev,
			}})
			continue
		}
		create := rev
		if p := resp.Responses[i].GetResponsePut().GetPrevKv(); p != nil {
			create = store.Revision(p.CreateRevision)
		}
		c.events = append(c.events, store.Event{Type: store.EventPut, KV: store.KV{
			Key: w.key, Value: bytes.Clone(w.value), CreateRevision: create, ModRevision: rev,
		}})
	}
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	for ch := range s.local.m {
		select {
		case ch <- c:
		default: // the watch delivers it
		}
	}
}

// orderer is one watcher's state: what it delivered, from the watch or
// from this replica's commits, so that each revision is delivered once
// and in order.
type orderer struct {
	prefix string // the watcher's, without the kv prefix
	// seen is the last revision delivered (or found to hold nothing for
	// the watcher): every weft write up to it has been handled.
	seen   store.Revision
	early  map[store.Revision]bool        // delivered from a commit, watch event not yet seen
	parked map[store.Revision]localCommit // by the revision they wait for (prev)
}

func newOrderer(prefix string, from store.Revision) *orderer {
	return &orderer{prefix: prefix, seen: from, early: map[store.Revision]bool{}, parked: map[store.Revision]localCommit{}}
}

// fromWatch takes one revision from the watch. deliver says whether to
// hand it to the receiver; ok=false means the order is broken and the
// watcher must close.
func (o *orderer) fromWatch(rev store.Revision) (deliver, ok bool) {
	if rev <= o.seen {
		if o.early[rev] {
			delete(o.early, rev)
			return false, true
		}
		return false, false
	}
	// The watch is in order: anything delivered early below rev had its
	// event already, or never will.
	for r := range o.early {
		if r < rev {
			delete(o.early, r)
		}
	}
	o.seen = rev
	return true, true
}

// fromCommit takes one of this replica's commits and returns the commits
// now deliverable, in order: c itself when the watcher has seen the
// revision before it, then any parked commit that waited for it.
func (o *orderer) fromCommit(c localCommit) []localCommit {
	if c.rev <= o.seen {
		return nil // the watch was first
	}
	if c.prev == 0 {
		// The store's first write: what came before it (its format key)
		// is no weft write, so the watch delivers it.
		return nil
	}
	if c.prev > o.seen {
		if len(o.parked) < localParked {
			o.parked[c.prev] = c
		}
		return nil
	}
	return o.release(c)
}

// afterWatch returns the parked commits the watch's last revision made
// deliverable, and forgets those it overtook.
func (o *orderer) afterWatch() []localCommit {
	for p, c := range o.parked {
		if c.rev <= o.seen {
			delete(o.parked, p)
		}
	}
	c, ok := o.parked[o.seen]
	if !ok {
		return nil
	}
	delete(o.parked, o.seen)
	return o.release(c)
}

func (o *orderer) release(c localCommit) []localCommit {
	var out []localCommit
	for {
		if len(o.early) >= localEarly {
			return out // the watch is far behind: let it deliver
		}
		o.early[c.rev] = true
		o.seen = c.rev
		out = append(out, c)
		next, ok := o.parked[c.rev]
		if !ok {
			return out
		}
		delete(o.parked, c.rev)
		c = next
	}
}

// change is c's events under the watcher's prefix; ok=false when none is.
func (o *orderer) change(c localCommit) (store.Change, bool) {
	evs := slices.DeleteFunc(slices.Clone(c.events), func(e store.Event) bool {
		return !hasPrefix(e.KV.Key, o.prefix)
	})
	return store.Change{Revision: c.rev, Events: evs, Committed: c.at}, len(evs) > 0
}

func hasPrefix(key, prefix string) bool {
	return len(key) >= len(prefix) && key[:len(prefix)] == prefix
}

// sentAt reads the commit time a sequence key's value holds.
func sentAt(v []byte) (time.Time, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}
