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
		{"largest base and max", &durationpb.Duration{Seconds: most}, &durationpb.Duration{Seconds: most}, math.MaxInt64},
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
