package etcd

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// A request sent to a member that has just stopped answering (paused,
// cut off without a reset) waits for its timeout: the endpoint probe
// takes the member out of the client's endpoints within about two probe
// intervals, but a request already sent there stays there. So a read, or
// a commit that cannot be applied twice, gets half the request timeout on
// its first member and, when that runs out (or its connection breaks, as
// when the leader dies under a commit), is sent once more through a
// member that answered the last probe, within what is left of the
// request timeout: the store's answer still comes within RequestTimeout,
// and a write sent right after a member stopped answering succeeds
// instead of answering 503.

// tryTimeouts returns the deadline of a request started now, and how long
// its first try may take: all of it when no other member can be tried.
func (s *Store) tryTimeouts(start time.Time) (deadline time.Time, first time.Duration) {
	deadline = start.Add(s.opts.RequestTimeout)
	if s.guardDone == nil {
		return deadline, s.opts.RequestTimeout
	}
	return deadline, s.opts.RequestTimeout / 2
}

// noAnswer says whether a try failed without an answer from etcd's state
// while the caller's context is still live: its own timeout ran out (the
// member did not answer in time), its connection broke, or the member
// could not serve it (no leader, leader lost, too busy). Another member
// may answer.
func noAnswer(parent context.Context, err error) bool {
	return err != nil && parent.Err() == nil && unavailable(err)
}

// otherMember returns the client of a member that answered the last
// probe, not avoid and whose connection is not known broken, picked at
// random; nil when there is none.
func (s *Store) otherMember(avoid *clientv3.Client) *clientv3.Client {
	p := s.answering.Load()
	if p == nil {
		return nil
	}
	var cands []*clientv3.Client
	for _, c := range *p {
		if c == avoid {
			continue
		}
		// A connection known broken (a member that died since the
		// probe) would fail the try at once.
		if st := c.ActiveConnection().GetState(); st == connectivity.TransientFailure || st == connectivity.Shutdown {
			continue
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[rand.N(len(cands))]
}

// guarded says whether a second try of the commit can never apply it
// twice: it writes a key that its compares check (a key it read, whose
// mod revision is compared, or a key inside a compared range), or it
// compares the sequence key, which every commit puts. A commit is
// applied whole or not at all, so if the first try was applied after
// all, that key changed with it, and the second try fails its compares.
func (t *tx) guarded(seqCompared bool) bool {
	if t.rev == 0 {
		return false
	}
	if seqCompared {
		return true
	}
	found := false
	t.w.Each(func(k string, _ []byte, _ bool) error {
		if _, read := t.reads[k]; read {
			found = true
			return errStop
		}
		full := t.s.kvPrefix + k
		for _, r := range t.ranges {
			if full >= r.start && full < r.end {
				found = true
				return errStop
			}
		}
		return nil
	})
	return found
}

// errStop ends an iteration early.
var errStop = errors.New("stop")

// appliedAt looks for the commit whose sequence key value is token
// among the weft writes after revision from, up to revision to (the
// sequence key's mod revision at the latest: every weft write puts it),
// in etcd's history of the sequence key: the revision it was applied at,
// 0 when it was not.
func (s *Store) appliedAt(ctx context.Context, c *clientv3.Client, token string, from, to int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.Watch(clientv3.WithRequireLeader(ctx), s.seqKey, clientv3.WithRev(from+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return 0, err
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > to {
				return 0, nil
			}
			if ev.Type == mvccpb.PUT && string(ev.Kv.Value) == token {
				return ev.Kv.ModRevision, nil
			}
			if ev.Kv.ModRevision == to {
				return 0, nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("watch of the sequence key ended")
}
