package etcd

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// Writers on two replicas interleave; the first replica delivers its own
// commits from their responses. Its watchers must still see every
// revision once, in order, with exactly the events a plain etcd watch
// reports (values, create and mod revisions, deletes of existing keys
// only), for the whole store and for a prefix.
func TestOwnCommitsKeepWatchOrder(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := open(t, c.Endpoints(), "/order")
	b := open(t, c.Endpoints(), "/order")
	from, err := a.View(ctx, func(store.Tx) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	all, err := a.Watch(ctx, "", from)
	if err != nil {
		t.Fatal(err)
	}
	onlyP, err := a.Watch(ctx, "p/", from)
	if err != nil {
		t.Fatal(err)
	}
	ref := c.Client(t).Watch(ctx, "/order/kv/", clientv3.WithPrefix(), clientv3.WithRev(int64(from)+1), clientv3.WithPrevKV())

	const perWriter = 40
	var wg sync.WaitGroup
	var last store.Revision
	var lastMu sync.Mutex
	for w, st := range []*Store{a, a, b, b} {
		wg.Go(func() {
			for i := range perWriter {
				rev, err := st.Update(ctx, func(tx store.Tx) error {
					k := fmt.Sprintf("%d", i%5)
					switch i % 4 {
					case 0: // two keys, one in p/
						if err := tx.Put("p/"+k, fmt.Appendf(nil, "%d-%d", w, i)); err != nil {
							return err
						}
						return tx.Put("q/"+k, fmt.Appendf(nil, "%d-%d", w, i))
					case 1: // read, then write (conflicts retry)
						if _, _, err := tx.Get("p/" + k); err != nil {
							return err
						}
						return tx.Put("p/"+k, fmt.Appendf(nil, "%d-%d", w, i))
					case 2: // a delete, of a key that may not exist, and a put outside p/
						if err := tx.Delete("p/" + k); err != nil {
							return err
						}
						return tx.Put(fmt.Sprintf("q/w%d", w), fmt.Appendf(nil, "%d", i))
					default: // only outside p/
						return tx.Delete(fmt.Sprintf("q/w%d", w))
					}
				})
				if err != nil {
					t.Errorf("writer %d, write %d: %v", w, i, err)
					return
				}
				lastMu.Lock()
				last = max(last, rev)
				lastMu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// What etcd's own watch says, up to the last write.
	var want []store.Change
	for len(want) == 0 || want[len(want)-1].Revision < last {
		select {
		case resp := <-ref:
			if err := resp.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Events {
				rev := store.Revision(ev.Kv.ModRevision)
				if n := len(want); n == 0 || want[n-1].Revision != rev {
					want = append(want, store.Change{Revision: rev})
				}
				e := store.Event{Type: store.EventPut, KV: store.KV{Key: strings.TrimPrefix(string(ev.Kv.Key), "/order/kv/"), Value: ev.Kv.Value,
					CreateRevision: store.Revision(ev.Kv.CreateRevision), ModRevision: rev}}
				if ev.Type == mvccpb.DELETE {
					e.Type = store.EventDelete
					e.KV.Value, e.KV.CreateRevision = ev.PrevKv.Value, store.Revision(ev.PrevKv.CreateRevision)
				}
				want[len(want)-1].Events = append(want[len(want)-1].Events, e)
			}
		case <-ctx.Done():
			t.Fatal("etcd's watch did not reach the last write")
		}
	}
	var wantP []store.Change
	for _, ch := range want {
		var evs []store.Event
		for _, e := range ch.Events {
			if strings.HasPrefix(e.KV.Key, "p/") {
				evs = append(evs, e)
			}
		}
		if len(evs) > 0 {
			wantP = append(wantP, store.Change{Revision: ch.Revision, Events: evs})
		}
	}
	compare(t, "every key", collect(ctx, t, all, len(want)), want)
	compare(t, "p/", collect(ctx, t, onlyP, len(wantP)), wantP)
	// Nothing came twice: the next change either watcher gets is a write
	// made now.
	end, err := a.Update(ctx, func(tx store.Tx) error { return tx.Put("p/end", nil) })
	if err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan store.Change{"every key": all, "p/": onlyP} {
		if got := collect(ctx, t, ch, 1); got[0].Revision != end {
			t.Errorf("%s: after the last write's revision %d came %d, want %d", name, want[len(want)-1].Revision, got[0].Revision, end)
		}
	}

	// The replica learnt of its own writes from their commits.
	if n := learnCount(t, a, viaCommit); n == 0 {
		t.Errorf("none of the first replica's %d writes reached its watchers from the commit", 2*perWriter)
	}
	if n := learnCount(t, b, viaCommit); n != 0 {
		t.Errorf("the second replica, which watches nothing, counted %d writes learnt from commits", n)
	}
}

func collect(ctx context.Context, t *testing.T, ch <-chan store.Change, n int) []store.Change {
	t.Helper()
	var got []store.Change
	for len(got) < n {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d changes", len(got), n)
			}
			got = append(got, c)
		case <-ctx.Done():
			t.Fatalf("got %d of %d changes", len(got), n)
		}
	}
	return got
}

func compare(t *testing.T, what string, got, want []store.Change) {
	t.Helper()
	for i := range want {
		g, w := got[i], want[i]
		if g.Revision != w.Revision || len(g.Events) != len(w.Events) {
			t.Fatalf("%s: change %d is revision %d with %d events, want revision %d with %d", what, i, g.Revision, len(g.Events), w.Revision, len(w.Events))
		}
		if g.Committed.IsZero() {
			t.Errorf("%s: revision %d has no commit time", what, g.Revision)
		}
		for j := range w.Events {
			ge, we := g.Events[j], w.Events[j]
			if ge.Type != we.Type || ge.KV.Key != we.KV.Key || !bytes.Equal(ge.KV.Value, we.KV.Value) ||
				ge.KV.CreateRevision != we.KV.CreateRevision || ge.KV.ModRevision != we.KV.ModRevision {
				t.Fatalf("%s: revision %d event %d is %+v, etcd's watch says %+v", what, g.Revision, j, ge, we)
			}
		}
	}
}

// learnCount reads weft_store_etcd_learn_seconds{via} as /metrics would.
func learnCount(t *testing.T, s *Store, via string) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_store_etcd_learn_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "via" && l.GetValue() == via {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

func commit(rev, prev store.Revision) localCommit {
	return localCommit{rev: store.Revision(rev), prev: store.Revision(prev), events: []store.Event{{Type: store.EventPut, KV: store.KV{Key: "k"}}}}
}

func revs(cs []localCommit) []store.Revision {
	var out []store.Revision
	for _, c := range cs {
		out = append(out, c.rev)
	}
	return out
}

// The ordering rules on their own: a commit goes out at once only when the
// revision before it was delivered, waits otherwise, and its watch event
// is then skipped; a watch event behind what was delivered that was not
// delivered early breaks the order.
func TestOrderer(t *testing.T) {
	o := newOrderer("", 10)
	if got := revs(o.fromCommit(commit(11, 10))); fmt.Sprint(got) != "[11]" {
		t.Fatalf("commit 11 after 10: delivered %v, want [11]", got)
	}
	// 13 follows 12, which another replica wrote: it waits, and so does
	// 14 behind it.
	if got := o.fromCommit(commit(13, 12)); got != nil {
		t.Fatalf("commit 13 before 12 was seen: delivered %v", revs(got))
	}
	if got := o.fromCommit(commit(14, 13)); got != nil {
		t.Fatalf("commit 14 behind a waiting 13: delivered %v", revs(got))
	}
	if d, ok := o.fromWatch(11); d || !ok {
		t.Fatalf("watch event of 11, delivered early: deliver=%v ok=%v, want skipped", d, ok)
	}
	if d, ok := o.fromWatch(12); !d || !ok {
		t.Fatalf("watch event of 12: deliver=%v ok=%v, want delivered", d, ok)
	}
	if got := revs(o.afterWatch()); fmt.Sprint(got) != "[13 14]" {
		t.Fatalf("after 12: delivered %v, want [13 14]", got)
	}
	for _, r := range []store.Revision{13, 14} {
		if d, ok := o.fromWatch(r); d || !ok {
			t.Fatalf("watch event of %d, delivered early: deliver=%v ok=%v, want skipped", r, d, ok)
		}
	}
	// The watch first: the commit is late and dropped.
	if d, ok := o.fromWatch(15); !d || !ok {
		t.Fatal("watch event of 15 not delivered")
	}
	if got := o.fromCommit(commit(15, 14)); got != nil {
		t.Fatalf("commit 15 after its watch event: delivered %v again", revs(got))
	}
	// A commit delivered early, then a watch event below it that was not
	// (someone else wrote weft's keys): the order is broken.
	if got := revs(o.fromCommit(commit(17, 15))); fmt.Sprint(got) != "[17]" {
		t.Fatalf("commit 17 after 15: delivered %v", got)
	}
	if _, ok := o.fromWatch(16); ok {
		t.Fatal("watch event of 16 after 17 was delivered: order not reported broken")
	}
	// The store's first write (no weft write before it) is left to the
	// watch: its format key came before it.
	if got := newOrderer("", 0).fromCommit(commit(3, 0)); got != nil {
		t.Fatalf("the store's first write, at revision 3, delivered from its commit: %v", revs(got))
	}
	// A parked commit overtaken by the watch is forgotten.
	o = newOrderer("p/", 20)
	o.fromCommit(commit(23, 22))
	o.fromWatch(21)
	o.fromWatch(22)
	o.fromWatch(23)
	o.afterWatch()
	if len(o.parked) != 0 {
		t.Fatalf("parked after the watch passed them: %v", o.parked)
	}
	// A prefix watcher gets only its keys; a commit with none still counts.
	lc := localCommit{rev: 24, prev: 23, events: []store.Event{{Type: store.EventPut, KV: store.KV{Key: "q/1"}}, {Type: store.EventPut, KV: store.KV{Key: "p/1"}}}}
	out := o.fromCommit(lc)
	if len(out) != 1 {
		t.Fatalf("commit 24 after 23: delivered %v", revs(out))
	}
	if c, ok := o.change(out[0]); !ok || len(c.Events) != 1 || c.Events[0].KV.Key != "p/1" {
		t.Fatalf("change for p/: %+v", c)
	}
	if _, ok := o.change(localCommit{rev: 25, events: []store.Event{{KV: store.KV{Key: "q/2"}}}}); ok {
		t.Fatal("a change with no key under p/ is delivered to its watcher")
	}
}
