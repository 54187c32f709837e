package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// TestAckKeepsCurrent: a state-of-the-world stream that keeps, after the
// ACK or NACK of its latest response, that the client is owed nothing
// more of the response's version (handle sets current) sends exactly what
// a stream that looks the subscription's names up again after every
// request sends (current cleared after each handle, as before). Random
// scripts of snapshots with random names, ACKs, NACKs, stale requests,
// changed subscriptions and odd versions, in both encodings.
func TestAckKeepsCurrent(t *testing.T) {
	for _, preEncode := range []bool{true, false} {
		t.Run(fmt.Sprintf("preEncode=%v", preEncode), func(t *testing.T) {
			for seed := range uint64(40) {
				ackKeepsCurrent(t, seed, preEncode)
			}
		})
	}
}

func ackKeepsCurrent(t *testing.T, seed uint64, preEncode bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 13))
	pool := []string{"rds_a", "rds_b", "rds_c", "rds_d"}
	pick := func() []string {
		var names []string
		for _, n := range pool {
			if rng.IntN(3) > 0 {
				names = append(names, n)
			}
		}
		return names
	}
	c := newHub(slog.New(slog.DiscardHandler), newMetrics(nil), owner)
	// kept is the stream under test; looked clears current after every
	// request, so that next looks the names up again (the obvious rule).
	var kept, looked *stream
	for i, sp := range []**stream{&kept, &looked} {
		s := c.open(int64(i+1), false, "")
		s.preEncode = preEncode
		s.is = &identState{streams: []*stream{s}}
		s.is.replicas.Store(1)
		*sp = s
	}
	both := []*stream{kept, looked}
	var out []outgoing
	snapshotOf := func(v int) *snapshot {
		snap := newSnapshot()
		ts := &typeSnapshot{}
		snap.types[typeRoute] = ts
		for _, name := range pick() {
			value := []byte(name + strconv.Itoa(v%3)) // contents repeat: versions may too
			ts.entries = append(ts.entries, newEntry(typeRoute, name, sha256.Sum256(value), false, value))
		}
		ts.version = versionOfNames(ts)
		ts.full = &fullResponse{names: &nameSet{}}
		return snap
	}
	// sent describes what next sent (or not) and the stream's state.
	sent := func(s *stream, o []outgoing) string {
		st := &s.types[typeRoute]
		var got string
		for _, x := range o {
			switch {
			case x.enc.set():
				got += "enc " + x.enc.ts.version
			default:
				got += fmt.Sprintf("sotw %s %d", x.sotw.GetVersionInfo(), len(x.sotw.GetResources()))
			}
		}
		returned := slices.Sorted(maps.Keys(st.sub.ReturnedResources()))
		return fmt.Sprintf("sent [%s] awaiting %v known %q sentVersion %q acked %q returned %v", got, st.awaiting, st.known, st.sentVersion, st.acked, returned)
	}
	step := func(i int, what string, req func(s *stream) request) {
		t.Helper()
		var got [2]string
		for j, s := range both {
			var err error
			if req != nil {
				err = s.handle(context.Background(), c, req(s))
				if s == looked {
					s.types[typeRoute].current = ""
				}
			}
			if err == nil {
				out, _, err = s.next(c, out[:0], 0)
			}
			if err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, i, what, err)
			}
			got[j] = sent(s, out)
			clear(out)
		}
		if got[0] != got[1] {
			t.Fatalf("seed %d step %d (%s):\n kept current: %s\n looked up:    %s", seed, i, what, got[0], got[1])
		}
	}
	snap := snapshotOf(0)
	for _, s := range both {
		s.is.snap.Store(snap)
	}
	names := pick()
	step(0, "subscribe", func(*stream) request { return request{typeURL: rdsType, names: names} })
	var oldNonce [2]string
	for i := 1; i < 300; i++ {
		switch op := rng.IntN(10); {
		case op < 2:
			snap = snapshotOf(i)
			for _, s := range both {
				s.is.snap.Store(snap)
			}
			step(i, "snapshot", nil)
		case op < 5:
			step(i, "ack", func(s *stream) request {
				st := &s.types[typeRoute]
				return request{typeURL: rdsType, version: st.sentVersion, nonce: st.sentNonce, names: names}
			})
		case op < 6:
			step(i, "nack", func(s *stream) request {
				st := &s.types[typeRoute]
				return request{typeURL: rdsType, version: st.known, nonce: st.sentNonce, names: names, errDetail: &rpcstatus.Status{Message: "no"}}
			})
		case op < 7:
			names = pick()
			step(i, "ack, new names", func(s *stream) request {
				st := &s.types[typeRoute]
				return request{typeURL: rdsType, version: st.sentVersion, nonce: st.sentNonce, names: names}
			})
		case op < 8:
			other := pick()
			step(i, "stale", func(s *stream) request {
				return request{typeURL: rdsType, version: "old", nonce: oldNonce[s.id-1], names: other}
			})
		case op < 9:
			step(i, "ack naming another version", func(s *stream) request {
				st := &s.types[typeRoute]
				return request{typeURL: rdsType, version: "other", nonce: st.sentNonce, names: names}
			})
		default:
			step(i, "request without nonce", func(s *stream) request {
				return request{typeURL: rdsType, version: snap.types[typeRoute].version, names: names}
			})
		}
		if rng.IntN(4) == 0 {
			for _, s := range both {
				oldNonce[s.id-1] = s.types[typeRoute].sentNonce
			}
		}
	}
}

// versionOfNames is a version made of ts's entries' names and sums.
func versionOfNames(ts *typeSnapshot) string {
	h := sha256.New()
	for _, e := range ts.entries {
		h.Write([]byte(e.name))
		h.Write(e.sum[:])
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:6])
}
