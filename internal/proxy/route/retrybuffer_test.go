package route

import "testing"

// TestOutgrewRetryBuffer: a body of exactly MaxRetryBuffer is still kept
// for a retry (Envoy gives up only once the buffer plus new data passes
// its limit); one byte more is not.
func TestOutgrewRetryBuffer(t *testing.T) {
	for n, want := range map[int64]bool{0: false, MaxRetryBuffer: false, MaxRetryBuffer + 1: true} {
		if got := OutgrewRetryBuffer(n); got != want {
			t.Errorf("OutgrewRetryBuffer(%d) = %v, want %v", n, got, want)
		}
	}
}
