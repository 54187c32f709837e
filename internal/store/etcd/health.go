package etcd

import (
	"context"
	"slices"
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
// sent there hangs until its timeout. Each endpoint is asked for its
// status every interval through a connection of its own; the client uses
// those that answered and know a leader (all of them when none did, so
// that it recovers by itself).
//
// The probe's connection to the member that says it is the leader also
// carries the commits (Store.leader, commitClient): a commit sent to a
// follower is forwarded to the leader, and when the leader dies the
// follower, until its election timeout tells it so, forwards it into the
// void, where it waits for the request timeout. On the leader's own
// connection, a commit in flight when it dies fails at once (unavailable:
// it may or may not have been applied), and the next ones wait for a new
// leader first. Reads stay on all members: a linearizable read on a
// follower waits through an election and then succeeds.
func (s *Store) guardEndpoints(interval time.Duration) {
	all := slices.Clone(s.opts.Endpoints)
	// A probe's client is made when first needed and again after it could
	// not be: with authentication on, making one needs its member up.
	probes := make([]*clientv3.Client, len(all))
	defer func() {
		s.leader.Store(nil)
		for _, c := range probes {
			if c != nil {
				c.Close()
			}
		}
	}()
	current := all
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		}
		healthy := make([]string, 0, len(all))
		var leader *clientv3.Client
		for i, ep := range all {
			if probes[i] == nil {
				c, err := clientv3.New(clientv3.Config{
					Endpoints: []string{ep}, DialTimeout: probeTimeout, TLS: s.opts.TLS,
					Username: s.opts.Username, Password: s.opts.Password, Logger: zap.NewNop(),
				})
				if err != nil {
					continue // not answering
				}
				probes[i] = c
			}
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			st, err := probes[i].Status(ctx, ep)
			cancel()
			// A member cut off from the others answers, but knows no
			// leader once its election timeout passed.
			if err == nil && st.Leader != 0 {
				healthy = append(healthy, ep)
				if st.Leader == st.Header.MemberId {
					leader = probes[i]
				}
			}
		}
		s.leader.Store(leader)
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
