package etcd

import (
	"context"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"
)

// Defaults of the endpoint probe.
const (
	DefaultProbeInterval = time.Second
	probeTimeout         = time.Second
)

// guardEndpoints keeps the client's endpoints to the members that answer.
// etcd's client spreads requests over every endpoint and only notices a
// member that stopped answering (paused, or cut off without a reset) when
// its keepalive fails, several seconds later; meanwhile every request
// sent there hangs until its timeout. Each endpoint is probed every
// interval through a connection of its own, all at once; the client uses
// those that answered and know a leader (all of them when none did, so
// that it recovers by itself).
//
// The probe is a serializable count of one key with etcd's require-leader
// flag: the member answers from its own state, and refuses when it knows
// no leader (cut off from the others). It costs a member about a fifth of
// a Status call (BenchmarkMemberRequests), which every replica would
// otherwise send to every member every interval. Status, which names the
// leader, is asked only when the leader is not known: at the start, when
// the leader did not answer, and when a member answers with a raft term
// other than the one the leader was found in (an election happened).
//
// The probe's connection to the leader also carries the commits
// (Store.leader, commitClient): a commit sent to a follower is forwarded
// to the leader, and when the leader dies the follower, until its
// election timeout tells it so, forwards it into the void, where it waits
// for the request timeout. On the leader's own connection, a commit in
// flight when it dies fails at once (unavailable: it may or may not have
// been applied), and the next ones wait for a new leader first. Reads
// stay on all members: a linearizable read on a follower waits through an
// election and then succeeds.
func (s *Store) guardEndpoints(interval time.Duration) {
	all := slices.Clone(s.opts.Endpoints)
	// A probe's client is made when first needed and again after it could
	// not be: with authentication on, making one needs its member up.
	probes := make([]*clientv3.Client, len(all))
	defer func() {
		s.leader.Store(nil)
		s.answering.Store(nil)
		for _, c := range probes {
			if c != nil {
				c.Close()
			}
		}
	}()
	current := all
	leader, term := -1, uint64(0) // the leader's index in all, and the term it was found in
	results := make([]probed, len(all))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		}
		var wg sync.WaitGroup
		for i, ep := range all {
			wg.Go(func() { // ends with its probe (probeTimeout, plus dialling a new client)
				if probes[i] == nil {
					probes[i] = s.probeClient(ep)
				}
				results[i] = probe(probes[i], s.formatKey)
			})
		}
		wg.Wait()
		healthy := make([]string, 0, len(all))
		elected := leader < 0 || !results[leader].ok
		for i, r := range results {
			if r.ok {
				healthy = append(healthy, all[i])
				elected = elected || r.term != term
			}
		}
		if elected {
			leader, term = s.findLeader(all, probes, results)
		}
		answering := make([]*clientv3.Client, 0, len(all))
		for i, r := range results {
			if r.ok && probes[i] != nil {
				answering = append(answering, probes[i])
			}
		}
		s.answering.Store(&answering)
		if leader >= 0 {
			s.leader.Store(probes[leader])
		} else {
			s.leader.Store(nil)
		}
		if len(healthy) == 0 {
			healthy = all
		}
		if !slices.Equal(healthy, current) {
			s.log.Warn("etcd endpoints in use changed", "answering", healthy, "all", all)
			s.c.SetEndpoints(healthy...)
			current = healthy
		}
	}
}

// probed is one endpoint's answer to a probe.
type probed struct {
	ok   bool   // it answered and knows a leader
	term uint64 // its raft term
}

// probeClient makes the client of one endpoint's probes; nil when the
// member does not answer.
func (s *Store) probeClient(ep string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{ep}, DialTimeout: probeTimeout, TLS: s.opts.TLS,
		Username: s.opts.Username, Password: s.opts.Password, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil
	}
	return c
}

// probe asks one member, through its own client, for a serializable count
// of key, refused by a member that knows no leader.
func probe(c *clientv3.Client, key string) probed {
	if c == nil {
		return probed{}
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), probeTimeout)
	defer cancel()
	resp, err := c.Get(ctx, key, clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return probed{}
	}
	return probed{ok: true, term: resp.Header.RaftTerm}
}

// findLeader asks the members that answered the probe for their status
// and returns the index of the one that says it is the leader, and its
// term; -1 when none does (an election under way: the next round asks
// again).
func (s *Store) findLeader(all []string, probes []*clientv3.Client, results []probed) (int, uint64) {
	for i, ep := range all {
		if !results[i].ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		st, err := probes[i].Status(ctx, ep)
		cancel()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i, st.RaftTerm
		}
	}
	return -1, 0
}

// commitClient is the client a commit is sent with: the leader's while
// its connection is up. When the probe found no leader, or the leader's
// connection broke (it died: a request would wait for a connection until
// its timeout), a linearizable read first waits until the cluster has a
// leader again (it fails with ctx), so that the commit does not reach a
// follower that still forwards to the dead leader, where it would be lost
// and wait for the request timeout.
func (s *Store) commitClient(ctx context.Context) *clientv3.Client {
	l := s.leader.Load()
	if l != nil && l.ActiveConnection().GetState() == connectivity.Ready {
		return l
	}
	if s.guardDone != nil {
		s.c.Get(ctx, s.formatKey, clientv3.WithCountOnly()) // an error shows in the commit
	}
	return s.c
}
