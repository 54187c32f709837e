package proxy

import (
	"context"
	"testing"
	"time"
)

// TestPageSchedule: the executable's pages are released once the proxy is
// live, again every refresh while nothing changes, and settle after a
// change when refresh is far off.
func TestPageSchedule(t *testing.T) {
	tests := []struct {
		name            string
		settle, refresh time.Duration
		change          bool // send a change after the first release
	}{
		{"refresh while nothing changes", time.Millisecond, time.Millisecond, false},
		{"again after a change", time.Millisecond, time.Hour, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			live, changes := make(chan struct{}), make(chan struct{}, 1)
			released := make(chan struct{}, 16)
			done := make(chan struct{})
			go func() { // ends when ctx is cancelled below
				defer close(done)
				pageSchedule(ctx, live, changes, tc.settle, tc.refresh, func() {
					select {
					case released <- struct{}{}:
					default:
					}
				})
			}()
			defer func() { cancel(); <-done }()
			close(live)
			wait := func(what string) {
				t.Helper()
				select {
				case <-released:
				case <-time.After(10 * time.Second):
					t.Fatalf("no release %s", what)
				}
			}
			wait("once live")
			if tc.change {
				changes <- struct{}{}
				wait("after the change")
				return
			}
			wait("at the first refresh")
			wait("at the second refresh")
		})
	}
}
