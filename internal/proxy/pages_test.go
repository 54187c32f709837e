package proxy

import (
	"context"
	"runtime"
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

// TestAfterCollections: f runs after each collection, and not after one
// that follows its false.
func TestAfterCollections(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make(chan int, 16)
	n := 0
	afterCollections(ctx, func() bool {
		n++ // cleanups run one at a time
		calls <- n
		return n < 2
	})
	wait := func(want int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			runtime.GC()
			select {
			case got := <-calls:
				if got != want {
					t.Fatalf("call %d, want %d", got, want)
				}
				return
			case <-deadline:
				t.Fatalf("no call %d after collections", want)
			case <-time.After(10 * time.Millisecond): // collect again: the sentinel may predate a collection in progress
			}
		}
	}
	wait(1)
	wait(2)
	// A probe armed now runs after a later collection than the one f
	// would have been called after, had it not returned false.
	probe := make(chan struct{})
	afterCollections(ctx, func() bool { close(probe); return false })
	for done := false; !done; {
		runtime.GC()
		select {
		case <-probe:
			done = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	runtime.GC()
	select {
	case got := <-calls:
		t.Fatalf("call %d after f returned false", got)
	default:
	}
}
