package evloop

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestH2LoopPingFloodBounded: a client that sends PINGs and reads none
// of their answers is read no further once the answers waiting reach
// h2MaxOut (CVE-2019-9512): its writes stall well before 64 MB; once it
// reads, the connection goes on and serves a stream.
func TestH2LoopPingFloodBounded(t *testing.T) {
	pingFloodBounded(t, dialH2Raw(t, startH2(t), http2.ClientPreface))
}

// pingFloodBounded is TestH2LoopPingFloodBounded on h, a connection to a
// loop serving HTTP/2.
func pingFloodBounded(t *testing.T, h *h2Raw) {
	_ = h.c.SetDeadline(time.Time{})
	var chunk bytes.Buffer
	fr := http2.NewFramer(&chunk, nil)
	for chunk.Len() < 64<<10 {
		_ = fr.WritePing(false, [8]byte{1})
	}
	const limit = 64 << 20
	var written atomic.Int64
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() { // the flood, then stream 1; ends when written, stopped or the connection closes (Cleanup)
		for written.Load() < limit && !stop.Load() {
			n, err := h.c.Write(chunk.Bytes())
			written.Add(int64(n))
			if err != nil {
				done <- err
				return
			}
		}
		h.headers(1, true)
		done <- nil
	}()
	// Stalled: no byte written for a second (the proxy reads on as long
	// as it can, the old code to the end).
	last, since := int64(-1), time.Now()
	for time.Since(since) < time.Second {
		if n := written.Load(); n != last {
			if n >= limit {
				t.Fatalf("%d MB of PINGs taken from a client that reads nothing", n>>20)
			}
			last, since = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("stalled after %d KB of PINGs", last>>10)
	stop.Store(true)
	_ = h.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	f := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
	if hf, ok := f.(*http2.MetaHeadersFrame); !ok || hf.StreamID != 1 || hf.PseudoValue("status") != "200" {
		t.Fatalf("after the flood: %v", f)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// pingUntilGoAway sends a PING every 100 ms on h, which has no stream,
// until the proxy's GOAWAY, and checks it is a graceful one (the idle
// timeout's).
func pingUntilGoAway(t *testing.T, h *h2Raw) {
	t.Helper()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // ends when pingUntilGoAway returns or the connection fails
		w := http2.NewFramer(h.c, nil)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if w.WritePing(false, [8]byte{7}) != nil {
					return
				}
			}
		}
	}()
	if code := h.goAway(); code != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v", code)
	}
}

// TestH2LoopPingsDoNotKeepIdle: PINGs alone do not keep a connection
// without a stream from its idle timeout.
func TestH2LoopPingsDoNotKeepIdle(t *testing.T) {
	srv := startH2(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	h := dialH2Raw(t, srv, http2.ClientPreface)
	pingUntilGoAway(t, h)
}
