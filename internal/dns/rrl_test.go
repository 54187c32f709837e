package dns

import (
	"net/netip"
	"testing"
	"time"
)

// TestRRLBuckets: a subnet gets rate responses at once, then rate per
// second; its neighbours in the same /24 (/56) share its bucket; every
// second limited response slips.
func TestRRLBuckets(t *testing.T) {
	r := newRRL(4, 2)
	now := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.200")
	var got []verdict
	for i := range 8 {
		ip := a
		if i%2 == 1 {
			ip = b
		}
		got = append(got, r.take(ip, now))
	}
	want := []verdict{send, send, send, send, drop, slip, drop, slip}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
	if v := r.take(netip.MustParseAddr("192.0.3.1"), now); v != send {
		t.Errorf("another /24: %v, want send", v)
	}
	if v := r.take(a, now.Add(250*time.Millisecond)); v != send {
		t.Errorf("a quarter second later (one token at 4/s): %v, want send", v)
	}
	if v := r.take(a, now.Add(250*time.Millisecond)); v == send {
		t.Errorf("the refilled token was used twice")
	}
	v6 := r.take(netip.MustParseAddr("2001:db8:0:ff::1"), now)
	for range 4 {
		v6 = r.take(netip.MustParseAddr("2001:db8:0:ff:8000::1"), now)
	}
	if v6 == send {
		t.Errorf("two addresses of one IPv6 /56 have separate buckets")
	}
}

// TestRRLTableFull: when every tracked subnet is active, a new one is
// limited; once they are idle, they are forgotten and it is served.
func TestRRLTableFull(t *testing.T) {
	r := newRRL(1, 2)
	now := time.Unix(1000, 0)
	for i := range rrlSubnets {
		r.take(netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1}), now)
	}
	if len(r.buckets) != rrlSubnets {
		t.Fatalf("%d buckets, want %d", len(r.buckets), rrlSubnets)
	}
	fresh := netip.MustParseAddr("198.51.100.1")
	if v := r.take(fresh, now); v == send {
		t.Errorf("a new subnet with the table full of active ones was served")
	}
	if v := r.take(fresh, now.Add(2*time.Second)); v != send {
		t.Errorf("a new subnet once the others are idle: %v, want send", v)
	}
	if len(r.buckets) > 1 {
		t.Errorf("%d buckets kept after the idle ones were forgotten", len(r.buckets))
	}
}

// BenchmarkRRLTake is the rate limiter's cost per UDP response from a
// client that is not on loopback: 1,000 subnets, 16 goroutines.
func BenchmarkRRLTake(b *testing.B) {
	r := newRRL(1<<30, 2)
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			r.take(netip.AddrFrom4([4]byte{10, byte(i >> 8 & 3), byte(i), 7}), time.Now())
		}
	})
}
