package etcd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// Once the probe has found the leader, commits are sent to it rather than
// spread over the members (which forward them, and lose them while a dead
// leader is not yet noticed): etcd's own count of Txn requests answered
// grows on the leader only.
func TestCommitsGoToTheLeader(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Endpoints: c.Endpoints(), Prefix: "/lead", ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Under load a probe round can time out (no leader known for an
	// interval, commits spread over the members) or the leader can
	// change: an attempt counts only when the leader stayed the same,
	// and one clean attempt out of five is asked for. Were commits not
	// sent to the leader, 20 of them would land on it alone in none.
	const writes, attempts = 20, 5
	var failures []string
	for range attempts {
		leader, err := c.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !waitLeaderKnown(ctx, s) {
			t.Fatal("the probe never found the leader")
		}
		before := map[string]float64{}
		for _, m := range c.Members {
			before[m.Name] = txns(t, m.ClientURL)
		}
		for i := range writes {
			if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("k", fmt.Appendf(nil, "%d", i)) }); err != nil {
				t.Fatal(err)
			}
		}
		var msgs []string
		for _, m := range c.Members {
			got := txns(t, m.ClientURL) - before[m.Name]
			want := 0.0
			if m == leader {
				want = writes
			}
			if got != want {
				msgs = append(msgs, fmt.Sprintf("member %s (leader: %v) answered %.0f Txn requests for %d writes, want %.0f", m.Name, m == leader, got, writes, want))
			}
		}
		if after, err := c.Leader(ctx); err != nil || after != leader {
			continue // an election during the writes: try again
		}
		if len(msgs) == 0 {
			return
		}
		failures = append(failures, strings.Join(msgs, "; "))
	}
	t.Fatalf("no attempt out of %d sent every commit to the leader: %s", attempts, strings.Join(failures, " | "))
}

// waitLeaderKnown waits until the store's probe knows a leader.
func waitLeaderKnown(ctx context.Context, s *Store) bool {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.leader.Load() == nil {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// txns is the member's count of Txn requests answered OK.
func txns(t *testing.T, clientURL string) float64 {
	t.Helper()
	return etcdtest.Handled(t, clientURL, "Txn")
}
