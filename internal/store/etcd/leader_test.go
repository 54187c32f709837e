package etcd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.leader.Load() == nil {
		select {
		case <-ctx.Done():
			t.Fatal("the probe never found the leader")
		case <-tick.C:
		}
	}
	before := map[string]float64{}
	for _, m := range c.Members {
		before[m.Name] = txns(t, m.ClientURL)
	}
	const writes = 20
	for i := range writes {
		if _, err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("k", fmt.Appendf(nil, "%d", i)) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members {
		got := txns(t, m.ClientURL) - before[m.Name]
		want := 0.0
		if m == leader {
			want = writes
		}
		if got != want {
			t.Errorf("member %s (leader: %v) answered %.0f Txn requests for %d writes, want %.0f", m.Name, m == leader, got, writes, want)
		}
	}
}

// txns is the member's count of Txn requests answered OK.
func txns(t *testing.T, clientURL string) float64 {
	t.Helper()
	resp, err := http.Get(clientURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_code="OK"`) && strings.Contains(line, `grpc_method="Txn"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}
