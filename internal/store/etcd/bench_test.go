package etcd

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// BenchmarkMemberRequests times the etcd requests a weft write is made of,
// sent to the leader and to a follower of a three-member cluster on this
// machine: a commit (a Txn with a compare and two puts), a linearizable
// read (the first of a transaction) and a serializable read at a fixed
// revision (the others). It shows what sending writes to the leader would
// save, and what the serializable reads save.
//
//	go test ./internal/store/etcd/ -run '^$' -bench BenchmarkMemberRequests -benchtime 300x
func BenchmarkMemberRequests(b *testing.B) {
	c := etcdtest.Start(b, 3)
	ctx := context.Background()
	leader, err := c.Leader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var follower *etcdtest.Member
	for _, m := range c.Members {
		if m != leader {
			follower = m
			break
		}
	}
	for _, m := range []struct {
		name string
		*etcdtest.Member
	}{{"leader", leader}, {"follower", follower}} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		put, err := cli.Put(ctx, "k", "v")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(m.name+"/commit", func(b *testing.B) {
			for b.Loop() {
				if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("k"), ">", 0)).
					Then(clientv3.OpPut("k", "v"), clientv3.OpPut("seq", "")).Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/linearizable-read", func(b *testing.B) {
			for b.Loop() {
				if _, err := cli.Get(ctx, "k"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/serializable-read-at-revision", func(b *testing.B) {
			for b.Loop() {
				if _, err := cli.Get(ctx, "k", clientv3.WithRev(put.Header.Revision), clientv3.WithSerializable()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
