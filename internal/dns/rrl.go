package dns

import (
	"net/netip"
	"sync"
	"time"
)

// rrl is response rate limiting: a token bucket per client subnet, as
// BIND's RRL counts responses, so that the server cannot be used to flood
// a spoofed victim. A bucket holds one second's worth of responses and
// refills at rate per second.
type rrl struct {
	rate float64
	slip int // every slip-th limited response slips (TC=1); <= 0 never

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	// overflow counts limited responses of subnets that found the table
	// full, for their slips.
	overflow int
	// swept is when forget last ran: at most every rrlSweep, so a flood
	// of new subnets does not scan the table at each query.
	swept time.Time
}

// rrlSweep is the least time between two scans of a full table.
const rrlSweep = 100 * time.Millisecond

type bucket struct {
	tokens  float64
	last    time.Time
	limited int // responses limited so far, for the slips
}

// verdict is what to do with one response.
type verdict int

const (
	send verdict = iota
	drop
	slip
)

func newRRL(rate, slip int) *rrl {
	return &rrl{rate: float64(rate), slip: slip, buckets: make(map[netip.Prefix]*bucket)}
}

// subnet is the prefix a client's responses are counted under.
func subnet(ip netip.Addr) netip.Prefix {
	bits := rrlV6Bits
	if ip.Is4() {
		bits = rrlV4Bits
	}
	p, _ := ip.Prefix(bits)
	return p
}

// take decides one response to ip at now.
func (r *rrl) take(ip netip.Addr, now time.Time) verdict {
	key := subnet(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[key]
	if b == nil {
		if len(r.buckets) >= rrlSubnets && now.Sub(r.swept) >= rrlSweep {
			r.swept = now
			r.forget(now)
		}
		if len(r.buckets) >= rrlSubnets {
			r.overflow++
			return r.verdict(r.overflow)
		}
		b = &bucket{tokens: r.rate, last: now}
		r.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(r.rate, b.tokens+el*r.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return send
	}
	b.limited++
	return r.verdict(b.limited)
}

func (r *rrl) verdict(n int) verdict {
	if r.slip > 0 && n%r.slip == 0 {
		return slip
	}
	return drop
}

// forget drops the buckets that have refilled: a subnet without a bucket
// starts full, so forgetting them changes nothing. Called with mu held.
func (r *rrl) forget(now time.Time) {
	for k, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.rate {
			delete(r.buckets, k)
		}
	}
}
