package etcd

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// BenchmarkMemberRequests times the etcd requests a weft write is made of,
// sent to the leader and to a follower of a three-member cluster on this
// machine: a commit (a Txn with a compare and two puts), a linearizable
// read (the first of a transaction) and a serializable read at a fixed
// revision (the others), eight such reads in one Txn, and the endpoint
// probe's Status. It shows what sending writes to the leader would save,
// and what the serializable reads save. Besides the time per request it
// reports the CPU the three members used per request (member-us/op, from
// /proc: user and system time; coarse, so use a few hundred requests).
//
//	go test ./internal/store/etcd/ -run '^$' -bench BenchmarkMemberRequests -benchtime 300x
func BenchmarkMemberRequests(b *testing.B) {
	c := etcdtest.Start(b, 3)
	ctx := context.Background()
	leader, err := c.Leader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	follower, err := c.Follower(ctx)
	if err != nil {
		b.Fatal(err)
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
		run := func(name string, op func() error) {
			b.Run(m.name+"/"+name, func(b *testing.B) {
				cpu0 := membersCPU(c)
				for b.Loop() {
					if err := op(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((membersCPU(c)-cpu0).Microseconds())/float64(b.N), "member-us/op")
			})
		}
		run("status", func() error {
			_, err := cli.Status(ctx, m.ClientURL)
			return err
		})
		run("8-serializable-reads-in-one-txn", func() error {
			ops := make([]clientv3.Op, 8)
			for i := range ops {
				ops[i] = clientv3.OpGet(fmt.Sprintf("k%d", i), clientv3.WithRev(put.Header.Revision), clientv3.WithSerializable())
			}
			_, err := cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		b.Run(m.name+"/commit", func(b *testing.B) {
			cpu0 := membersCPU(c)
			defer func() { b.ReportMetric(float64((membersCPU(c)-cpu0).Microseconds())/float64(b.N), "member-us/op") }()
			for b.Loop() {
				if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("k"), ">", 0)).
					Then(clientv3.OpPut("k", "v"), clientv3.OpPut("seq", "")).Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/linearizable-read", func(b *testing.B) {
			cpu0 := membersCPU(c)
			defer func() { b.ReportMetric(float64((membersCPU(c)-cpu0).Microseconds())/float64(b.N), "member-us/op") }()
			for b.Loop() {
				if _, err := cli.Get(ctx, "k"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/serializable-read-at-revision", func(b *testing.B) {
			cpu0 := membersCPU(c)
			defer func() { b.ReportMetric(float64((membersCPU(c)-cpu0).Microseconds())/float64(b.N), "member-us/op") }()
			for b.Loop() {
				if _, err := cli.Get(ctx, "k", clientv3.WithRev(put.Header.Revision), clientv3.WithSerializable()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// membersCPU is the CPU time (user and system) the cluster's members used
// so far, from /proc.
func membersCPU(c *etcdtest.Cluster) time.Duration {
	var d time.Duration
	for _, m := range c.Members {
		d += procstat.CPU(m.Pid())
	}
	return d
}

// BenchmarkUpdateFromMirror times a write shaped like a route's weight
// update (one batch of eight key reads, a count of a prefix, one put) on a
// three-member cluster on this machine, with its reads made to etcd (one
// read Txn, then the commit) and from the mirror of a replica that
// follows every key (the commit alone). Besides the time per write it
// reports the members' CPU per write (member-us/op) and this process's
// (self-us/op: the replica's side, the benchmark loop included).
//
//	go test ./internal/store/etcd/ -run '^$' -bench BenchmarkUpdateFromMirror -benchtime 300x
func BenchmarkUpdateFromMirror(b *testing.B) {
	c := etcdtest.Start(b, 3)
	ctx := context.Background()
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = fmt.Sprintf("mesh/r/%d", i)
	}
	for _, mirrored := range []bool{false, true} {
		name := "reads-from-etcd"
		if mirrored {
			name = "reads-from-mirror"
		}
		b.Run(name, func(b *testing.B) {
			s := open(b, c.Endpoints(), "/bench-"+name)
			if _, err := s.Update(ctx, func(tx store.Tx) error {
				for _, k := range keys {
					if err := tx.Put(k, []byte(strings.Repeat("x", 300))); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			if mirrored {
				etcdtest.FollowAll(b, s)()
			}
			cpu0, self0 := membersCPU(c), procstat.CPU(os.Getpid())
			n := 0
			for b.Loop() {
				n++
				if _, err := s.Update(ctx, func(tx store.Tx) error {
					if err := tx.(interface {
						PrefetchReads(keys, counts []string, lists map[string]int) error
					}).PrefetchReads(keys, []string{"mesh/"}, nil); err != nil {
						return err
					}
					for _, k := range keys {
						if _, _, err := tx.Get(k); err != nil {
							return err
						}
					}
					if _, err := tx.Count("mesh/"); err != nil {
						return err
					}
					return tx.Put(keys[0], []byte(strings.Repeat("y", 290)+strconv.Itoa(n)))
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((membersCPU(c)-cpu0).Microseconds())/float64(b.N), "member-us/op")
			b.ReportMetric(float64((procstat.CPU(os.Getpid())-self0).Microseconds())/float64(b.N), "self-us/op")
		})
	}
}
