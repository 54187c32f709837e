package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
	"github.com/weftmesh/weft/internal/store/storetest"
)

func open(t testing.TB, endpoints []string, prefix string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Endpoints: endpoints, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func factory(c *etcdtest.Cluster) storetest.Factory {
	var n atomic.Int64
	return storetest.Factory{
		New: func(t *testing.T) store.Store {
			return open(t, c.Endpoints(), fmt.Sprintf("/test%d", n.Add(1)))
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			s.Close()
			return open(t, c.Endpoints(), s.(*Store).opts.Prefix)
		},
		Compact: func(t *testing.T, s store.Store) store.Store {
			es := s.(*Store)
			resp, err := es.c.Get(context.Background(), es.formatKey)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := es.c.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

func TestStoreOneMember(t *testing.T) {
	storetest.Run(t, factory(etcdtest.Start(t, 1)))
}

// The contract again with every store following all its keys, as weft
// server's stores do: their writes' first attempts read from the mirror.
func TestStoreMirrored(t *testing.T) {
	f := factory(etcdtest.Start(t, 1))
	follow := func(t *testing.T, s store.Store) store.Store {
		etcdtest.FollowAll(t, s)()
		return s
	}
	newStore, reopen := f.New, f.Reopen
	f.New = func(t *testing.T) store.Store { return follow(t, newStore(t)) }
	f.Reopen = func(t *testing.T, s store.Store) store.Store { return follow(t, reopen(t, s)) }
	storetest.Run(t, f)
}

func TestStoreThreeMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("the one-member run covers the contract; -short skips the cluster run")
	}
	storetest.Run(t, factory(etcdtest.Start(t, 3)))
}

func TestNewerFormatRefused(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/future/meta/format", fmt.Sprint(store.FormatVersion+1)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/future"})
	if err == nil || !strings.Contains(err.Error(), "newer weft") {
		t.Fatalf("open of a newer store: %v, want a refusal naming a newer weft", err)
	}
}

// With the only member gone, reads and writes fail with ErrUnavailable
// within the request timeout instead of hanging; they work again when it
// is back.
func TestUnavailable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	s, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/u", RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("a", nil) }); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Pause()
	_, err = s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", nil) })
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("update with etcd paused: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping with etcd paused: %v", err)
	}
	c.Members[0].Resume()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.WaitHealthy(wctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", nil) }); err != nil {
		t.Fatalf("update after resume: %v", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, Options{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond})
	if err == nil || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("open of an unreachable etcd: %v, want ErrUnavailable naming the endpoint", err)
	}
}

// A watcher that does not read is dropped once its buffer is full; the
// channel closes so that it resynchronises.
func TestSlowWatcherDropped(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	dropped := make(chan struct{})
	var once sync.Once
	logs := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), "fell behind") {
			once.Do(func() { close(dropped) })
		}
		return len(p), nil
	}), nil))
	s, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/slow", WatchBuffer: 2, Log: logs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var from store.Revision
	for i := 0; i < 5; i++ {
		r, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put(fmt.Sprint(i), nil) })
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			from = r - 1
		}
	}
	ch, err := s.Watch(ctx, "", from)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-dropped:
	case <-time.After(20 * time.Second):
		t.Fatal("a watcher that read nothing of 5 changes through a buffer of 2 was not dropped")
	}
	deadline := time.After(20 * time.Second)
	got := 0
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				if got > 2 {
					t.Fatalf("read %d changes through a buffer of 2", got)
				}
				return
			}
			got++
		case <-deadline:
			t.Fatal("the channel of a watcher that fell behind stayed open")
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A paused member stops getting requests once the probe notices it: every
// write after that succeeds although a third of the endpoints hang.
func TestPausedMemberAvoided(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	switched := make(chan struct{}, 8)
	logs := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), "endpoints in use changed") {
			select {
			case switched <- struct{}{}:
			default:
			}
		}
		return len(p), nil
	}), nil))
	s, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/paused", Log: logs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	follower, err := c.Follower(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower.Pause()
	defer follower.Resume()
	select {
	case <-switched:
	case <-time.After(30 * time.Second):
		t.Fatal("the paused member was not dropped from the endpoints in use")
	}
	write := func(i int) error {
		_, err := s.Update(ctx, func(tx store.Tx) error {
			if _, _, err := tx.Get("k"); err != nil {
				return err
			}
			return tx.Put("k", fmt.Appendf(nil, "%d", i))
		})
		return err
	}
	// A write sent in the moment between the probe's verdict and the
	// balancer dropping the member's connection is tried again through
	// another member (TestWritesRightAfterMemberPaused): none fails.
	if err := write(0); err != nil {
		t.Fatalf("first write with %s paused: %v", follower.Name, err)
	}
	for i := 1; i < 30; i++ {
		if err := write(i); err != nil {
			t.Fatalf("write %d with %s paused: %v", i, follower.Name, err)
		}
	}
}

// An Update's first read may be served from a member behind the cluster
// (serializable): its outcome must still be the one a current snapshot
// gives. staleAt makes the first read of every first attempt read at an
// old revision, as a member that far behind would answer.
func TestStaleFirstReadNeverDecides(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c.Endpoints(), "/stale")
	ctx := context.Background()
	old, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("counter", []byte("0")) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("counter", []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("node", []byte("blue")) }); err != nil {
		t.Fatal(err)
	}
	s.staleAt = int64(old) // "counter" is 0 there and "node" absent

	// A write that depends on a key the stale snapshot holds an older
	// value of: the commit's compare fails, and the write is made from
	// the current value (no lost update).
	runs := 0
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		runs++
		kv, _, err := tx.Get("counter")
		if err != nil {
			return err
		}
		return tx.Put("counter", append(kv.Value, '+'))
	}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, "counter"); v != "1+" || runs != 2 {
		t.Errorf("counter %q after %d runs, want \"1+\" after 2 (the stale run's commit must fail)", v, runs)
	}

	// An attempt that fails on what the stale snapshot lacks runs again
	// on a current one.
	errMissing := errors.New("node missing")
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		if _, ok, err := tx.Get("node"); err != nil {
			return err
		} else if !ok {
			return errMissing
		}
		return tx.Put("route", []byte("to blue"))
	}); err != nil {
		t.Fatalf("update needing a node written before it began: %v", err)
	}

	// An attempt that writes nothing is decided on a current snapshot.
	var seen string
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		kv, _, err := tx.Get("node")
		seen = string(kv.Value)
		return err
	}); err != nil || seen != "blue" {
		t.Fatalf("read-only update saw %q (%v), want blue", seen, err)
	}
}

// Updates through members other than the one a key was written through
// always see it, on a real three-member cluster (a follower may lag the
// quorum that acknowledged the write).
func TestUpdateSeesWritesThroughOtherMembers(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	var stores []*Store
	for _, ep := range c.Endpoints() {
		stores = append(stores, open(t, []string{ep}, "/members"))
	}
	for i := range 100 {
		key := fmt.Sprintf("k%d", i)
		if _, err := stores[i%3].Update(ctx, func(tx store.Tx) error { return tx.Put(key, []byte("v")) }); err != nil {
			t.Fatal(err)
		}
		other := stores[(i+1)%3]
		if _, err := other.Update(ctx, func(tx store.Tx) error {
			if _, ok, err := tx.Get(key); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%s not found", key)
			}
			return tx.Put("seen", []byte(key))
		}); err != nil {
			t.Fatalf("write %d through member %d, update through member %d: %v", i, i%3, (i+1)%3, err)
		}
	}
}

func get(t *testing.T, s *Store, key string) string {
	t.Helper()
	var v string
	if _, err := s.View(context.Background(), func(tx store.Tx) error {
		kv, _, err := tx.Get(key)
		v = string(kv.Value)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// Prefetch reads several keys in one request, and a key read through it
// is checked at commit like any other: a write to it after the snapshot
// fails the transaction, which runs again.
func TestPrefetch(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c.Endpoints(), "/pre")
	other := open(t, c.Endpoints(), "/pre")
	ctx := context.Background()
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		for _, k := range []string{"a", "b", "c", "x"} {
			if err := tx.Put(k, []byte(k+"1")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// One Range (the first read) and one Txn for four keys.
	m := c.Members[0].ClientURL
	ranges, txs := etcdtest.Handled(t, m, "Range"), etcdtest.Handled(t, m, "Txn")
	var got []string
	if _, err := s.View(ctx, func(tx store.Tx) error {
		if _, _, err := tx.Get("x"); err != nil {
			return err
		}
		if err := tx.(interface{ Prefetch(...string) error }).Prefetch("a", "b", "c", "missing"); err != nil {
			return err
		}
		for _, k := range []string{"a", "b", "c", "missing"} {
			kv, _, err := tx.Get(k)
			if err != nil {
				return err
			}
			got = append(got, string(kv.Value))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a1,b1,c1," {
		t.Errorf("prefetched reads gave %q, want a1,b1,c1 and nothing", got)
	}
	if r, x := etcdtest.Handled(t, m, "Range")-ranges, etcdtest.Handled(t, m, "Txn")-txs; r != 1 || x != 1 {
		t.Errorf("a view reading five keys, four prefetched, made %.0f Range and %.0f Txn requests, want 1 and 1", r, x)
	}

	// A write to a prefetched key between the snapshot and the commit.
	runs := 0
	if _, err := s.Update(ctx, func(tx store.Tx) error {
		runs++
		if _, _, err := tx.Get("x"); err != nil {
			return err
		}
		if err := tx.(interface{ Prefetch(...string) error }).Prefetch("a", "b"); err != nil {
			return err
		}
		if runs == 1 {
			if _, err := other.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte("b2")) }); err != nil {
				return err
			}
		}
		a, _, err := tx.Get("a")
		if err != nil {
			return err
		}
		b, _, err := tx.Get("b")
		if err != nil {
			return err
		}
		return tx.Put("out", append(a.Value, b.Value...))
	}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, "out"); v != "a1b2" || runs != 2 {
		t.Errorf("out = %q after %d runs, want a1b2 after 2 (the write to b must fail the first commit)", v, runs)
	}
}
