package etcd

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// increment adds one to the counter under key, read first: its commit
// compares the key, so no try of it can be applied twice.
func increment(ctx context.Context, s *Store, key string, during func()) error {
	_, err := s.Update(ctx, func(tx store.Tx) error {
		kv, ok, err := tx.Get(key)
		if err != nil {
			return err
		}
		n := 0
		if ok {
			if n, err = strconv.Atoi(string(kv.Value)); err != nil {
				return err
			}
		}
		if during != nil {
			during()
		}
		return tx.Put(key, strconv.AppendInt(nil, int64(n+1), 10))
	})
	return err
}

// counter returns the counter's value and how many times it was put
// (etcd's version of the key), read through a plain client.
func counter(t *testing.T, c *etcdtest.Cluster, s *Store, key string) (value string, puts int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Client(t).Get(ctx, s.kvPrefix+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s: %d keys", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Version
}

// A member that stops answering keeps the requests already sent to it
// until they time out, and the client sends it more until the probe
// notices (about two probe intervals). Writes sent from the moment a
// follower is paused must all succeed (their reads that went to it are
// made again through another member), each applied once.
func TestWritesRightAfterMemberPaused(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s := open(t, c.Endpoints(), "/pausenow")
	if !waitLeaderKnown(ctx, s) {
		t.Fatal("the probe never found the leader")
	}
	follower, err := c.Follower(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower.Pause()
	defer follower.Resume()
	const writes = 40
	for i := range writes {
		if err := increment(ctx, s, "n", nil); err != nil {
			t.Fatalf("write %d, sent after %s was paused: %v", i, follower.Name, err)
		}
	}
	if got := testutil.ToFloat64(s.metrics.retried.WithLabelValues("read")); got < 1 {
		t.Fatalf("no read went to the paused member (retried reads: %v): the test proved nothing", got)
	}
	if v, puts := counter(t, c, s, "n"); v != strconv.Itoa(writes) || puts != writes {
		t.Fatalf("after %d acknowledged increments: value %s, put %d times", writes, v, puts)
	}
}

// The leader is paused (or killed) while a write is between its reads and
// its commit: the commit, sent to the paused leader, times out and is sent
// again through another member once etcd elected a new leader (a killed
// leader's connection is down before the commit: it goes to another
// member at once). Either way the write succeeds and is applied once,
// also after the old leader comes back with the first try in its socket.
func TestCommitRetriedWhenLeaderLost(t *testing.T) {
	for _, fault := range []string{"paused", "killed"} {
		t.Run(fault, func(t *testing.T) {
			c := etcdtest.Start(t, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			// Half of it, the first try's time, covers etcd's election
			// (1-2 s, twice that when a vote splits).
			s, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/lostlead", RequestTimeout: 16 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !waitLeaderKnown(ctx, s) {
				t.Fatal("the probe never found the leader")
			}
			if err := increment(ctx, s, "n", nil); err != nil {
				t.Fatal(err)
			}
			leader, err := c.Leader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			done := false
			err = increment(ctx, s, "n", func() {
				if done {
					return
				}
				done = true
				if fault == "paused" {
					leader.Pause()
				} else {
					leader.Kill()
				}
			})
			if fault == "paused" {
				leader.Resume()
			} else {
				leader.Restart(t)
			}
			if err != nil {
				t.Fatalf("write whose commit went to the %s leader: %v", fault, err)
			}
			// A paused leader keeps the commit until its first try's
			// time runs out: it is tried again. A killed one breaks the
			// connection at once: the commit, unless it was already in
			// flight (tried again), goes through another member after
			// the election (commitClient).
			got := testutil.ToFloat64(s.metrics.retried.WithLabelValues("commit"))
			if fault == "paused" && got != 1 || got > 1 {
				t.Fatalf("commits tried again: %v, want 1 (paused) or at most 1 (killed)", got)
			}
			// The old leader catches up; a write through the cluster then
			// shows every put there was.
			if err := c.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
			if err := increment(ctx, s, "n", nil); err != nil {
				t.Fatal(err)
			}
			if v, puts := counter(t, c, s, "n"); v != "3" || puts != 3 {
				t.Fatalf("after 3 acknowledged increments: value %s, put %d times", v, puts)
			}
		})
	}
}

// Only a commit that writes a key its compares check (or that compares
// the sequence key) may be tried twice.
func TestGuardedCommits(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c.Endpoints(), "/guarded")
	ctx := context.Background()
	blind := s.newTx(ctx, false)
	if err := blind.Put("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if blind.guarded(false) {
		t.Fatal("a put of a key never read counts as guarded")
	}
	readFirst := s.newTx(ctx, false)
	if _, _, err := readFirst.Get("a"); err != nil {
		t.Fatal(err)
	}
	if err := readFirst.Put("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if !readFirst.guarded(false) {
		t.Fatal("a put of a key read first is not guarded")
	}
	if err := readFirst.Put("b", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if !readFirst.guarded(false) {
		t.Fatal("a put of a key not read, with a put of a key read, is not guarded")
	}
	readOther := s.newTx(ctx, false)
	if _, _, err := readOther.Get("a"); err != nil {
		t.Fatal(err)
	}
	if err := readOther.Put("c", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if readOther.guarded(false) {
		t.Fatal("a put of a key never read counts as guarded because another key was read")
	}
	if !readOther.guarded(true) {
		t.Fatal("under the sequence key's compare, a transaction that read is not guarded")
	}
	listed := s.newTx(ctx, false)
	if _, err := listed.List("dir/", "", 0); err != nil {
		t.Fatal(err)
	}
	if err := listed.Put("dir/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if !listed.guarded(false) {
		t.Fatal("a put inside a listed range is not guarded")
	}
}
