package etcd

import (
	"context"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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
func (s *Store) guardEndpoints(interval time.Duration) {
	all := slices.Clone(s.opts.Endpoints)
	// A probe's client is made when first needed and again after it could
	// not be: with authentication on, making one needs its member up.
	probes := make([]*clientv3.Client, len(all))
	defer func() {
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
			}
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
