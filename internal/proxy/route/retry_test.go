package route

import (
	"math"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryBackoffCenturies: a retry_back_off of centuries compiles and
// draws back-offs as Envoy's, which counts them in milliseconds: a
// base_interval of 100 years without a max_interval has the default max,
// ten times the base, saturated past time.Duration's range (it wrapped
// negative and the policy was refused as max below base); base and max
// of Duration's largest value (10,000 years, saturated to MaxInt64 by
// AsDuration) draw a back-off in [0, MaxInt64] (the draw's bound,
// MaxInt64+1, wrapped and rand panicked).
func TestRetryBackoffCenturies(t *testing.T) {
	const most = 315_576_000_000 // seconds: Duration's maximum
	for _, c := range []struct {
		name      string
		base, max *durationpb.Duration
		wantMax   time.Duration
	}{
		{"100 years, no max", &durationpb.Duration{Seconds: 100 * 365 * 24 * 3600}, nil, math.MaxInt64},
		{"largest base and max", &durationpb.Duration{Seconds: most}, &durationpb.Duration{Seconds: most},
			time.Duration(math.MaxInt64).Truncate(time.Millisecond)},
		{"a second, no max", durationpb.New(time.Second), nil, 10 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := compileRetry(&routev3.RetryPolicy{RetryOn: "5xx",
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: c.base, MaxInterval: c.max}}, "r")
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if p.BackoffMax != c.wantMax {
				t.Errorf("max %v; want %v", p.BackoffMax, c.wantMax)
			}
			for n := 1; n <= 30; n++ {
				if d := p.Backoff(n); d < 0 || d > p.BackoffMax {
					t.Fatalf("back-off before retry %d: %v; want in [0, %v]", n, d, p.BackoffMax)
				}
			}
		})
	}
}

// TestRetryBackoffMilliseconds: retry_back_off intervals count in whole
// milliseconds, at least one, as Envoy's RetryPolicyImpl reads them
// (PROTOBUF_GET_MS_REQUIRED truncates, then a base or max below 1 ms is
// raised to 1 ms) before max is compared with base; back-offs are whole
// milliseconds below the interval (JitteredExponentialBackOffStrategy's
// random() % interval).
func TestRetryBackoffMilliseconds(t *testing.T) {
	for _, c := range []struct {
		name              string
		base, max         time.Duration // max 0: none
		wantBase, wantMax time.Duration
	}{
		{"100 us, no max", 100 * time.Microsecond, 0, time.Millisecond, 10 * time.Millisecond},
		{"100 us, max 200 us", 100 * time.Microsecond, 200 * time.Microsecond, time.Millisecond, time.Millisecond},
		{"1.9 ms, max 1.5 ms", 1900 * time.Microsecond, 1500 * time.Microsecond, time.Millisecond, time.Millisecond},
		{"25.9 ms, no max", 25900 * time.Microsecond, 0, 25 * time.Millisecond, 250 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(c.base)}
			if c.max > 0 {
				b.MaxInterval = durationpb.New(c.max)
			}
			p, err := compileRetry(&routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: b}, "r")
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if p.BackoffBase != c.wantBase || p.BackoffMax != c.wantMax {
				t.Errorf("base %v, max %v; want %v, %v", p.BackoffBase, p.BackoffMax, c.wantBase, c.wantMax)
			}
			for n := 1; n <= 30; n++ {
				ceil := p.backoffInterval(n)
				for range 20 {
					if d := p.Backoff(n); d < 0 || d >= ceil || d%time.Millisecond != 0 {
						t.Fatalf("back-off before retry %d: %v; want whole milliseconds in [0, %v)", n, d, ceil)
					}
				}
			}
		})
	}
	for _, b := range []*routev3.RetryPolicy_RetryBackOff{
		{BaseInterval: durationpb.New(0)},
		{BaseInterval: durationpb.New(time.Millisecond), MaxInterval: durationpb.New(0)},
		{BaseInterval: durationpb.New(2 * time.Millisecond), MaxInterval: durationpb.New(time.Millisecond)},
	} {
		if _, err := compileRetry(&routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: b}, "r"); err == nil {
			t.Errorf("base %v, max %v compiled; want refused", b.GetBaseInterval().AsDuration(), b.GetMaxInterval().AsDuration())
		}
	}
}

// TestRetryBackoffIntervalDoubles: the interval a back-off is drawn below
// doubles from the base while it stays within the max, then is the max,
// as nextBackOffMs doubles it, however many retries and however long the
// base: a 1 ms base under a max of 100 hours reaches the max (it stopped
// at base * 2^20, 17.5 minutes, from retry 21 on), and a base of
// 17,592,187 ms (4.9 hours) under its default max, ten times it, is at
// the max by retry 21 (shifted 20 times it wrapped to 1,002 s).
func TestRetryBackoffIntervalDoubles(t *testing.T) {
	hours := 17_592_187 * time.Millisecond
	for _, c := range []struct {
		name      string
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{"1 ms, 10 ms, retry 1", time.Millisecond, 10 * time.Millisecond, 1, time.Millisecond},
		{"1 ms, 10 ms, retry 4", time.Millisecond, 10 * time.Millisecond, 4, 8 * time.Millisecond},
		{"1 ms, 10 ms, retry 5", time.Millisecond, 10 * time.Millisecond, 5, 10 * time.Millisecond},
		{"1 ms, 3 ms, retry 2", time.Millisecond, 3 * time.Millisecond, 2, 2 * time.Millisecond},
		{"1 ms, 100 h, retry 22", time.Millisecond, 100 * time.Hour, 22, time.Millisecond << 21},
		{"1 ms, 100 h, retry 30", time.Millisecond, 100 * time.Hour, 30, 100 * time.Hour},
		{"1 ms, 100 h, retry 1000", time.Millisecond, 100 * time.Hour, 1000, 100 * time.Hour},
		{"4.9 h, default max, retry 21", hours, 10 * hours, 21, 10 * hours},
	} {
		p := &RetryPolicy{BackoffBase: c.base, BackoffMax: c.max}
		if got := p.backoffInterval(c.n); got != c.want {
			t.Errorf("%s: interval %v; want %v", c.name, got, c.want)
		}
	}
}
