package listener

import (
	"math"
	"testing"
	"time"
)

func TestLoopTimeout(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, none}, {-1, none}, {time.Second, time.Second}, {none, none}, {math.MaxInt64, none},
	} {
		if got := loopTimeout(c.in); got != c.want {
			t.Errorf("loopTimeout(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
