package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// measureFailover SIGKILLs the first replica and times, for each of its
// proxies, the new stream on another replica and the first response
// applied there. On a delta stream a proxy whose resources are current
// is sent nothing (it names their versions when the stream opens), so
// only the stream is timed for all; on state-of-the-world streams
// everything is sent again.
func (b *bench) measureFailover(ctx context.Context) error {
	want, err := b.procs[0].streams()
	if err != nil {
		return err
	}
	killed := time.Now()
	for _, s := range b.sims {
		s.watchFrom(killed)
	}
	b.procs[0].Kill()
	// The proxies whose stream the kill ended are the replica's.
	var victims []*sim
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		done := 0
		victims = victims[:0]
		for _, s := range b.sims {
			down, c, a := s.failoverTimes()
			if down.IsZero() {
				continue
			}
			victims = append(victims, s)
			if !c.IsZero() && (b.protocol == "delta" || !a.IsZero()) {
				done++
			}
		}
		if done == want {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("failover: %d of %d proxies of the killed replica on another within 60 s", done, want)
		case <-tick.C:
		}
	}
	var conn, conf []time.Duration
	for _, s := range victims {
		_, c, a := s.failoverTimes()
		conn = append(conn, c.Sub(killed))
		if !a.IsZero() {
			conf = append(conf, a.Sub(killed))
		}
	}
	slices.Sort(conn)
	slices.Sort(conf)
	fmt.Printf("failover of %d proxies after SIGKILL of replica %s: new stream on another p50 %s p99 %s max %s",
		len(victims), b.procs[0].Name, ms(pct(conn, 50)), ms(pct(conn, 99)), ms(conn[len(conn)-1]))
	if len(conf) > 0 {
		fmt.Printf("; %d sent a configuration there: p50 %s p99 %s max %s", len(conf), ms(pct(conf, 50)), ms(pct(conf, 99)), ms(conf[len(conf)-1]))
	}
	fmt.Println()
	// Writes through the survivors still reach every proxy.
	w := uint32(b.writes + 2)
	b.track.arm(w, b.proxies)
	start := time.Now()
	if err := setWeights(ctx, client(b.procs[1]), w); err != nil {
		return err
	}
	if missing := b.track.wait(ctx, 30*time.Second); missing > 0 {
		return fmt.Errorf("after failover: %d proxies did not apply a write within 30 s", missing)
	}
	fmt.Printf("after failover, a write reached all %d proxies in %s\n", b.proxies, ms(time.Since(start)))
	return nil
}
