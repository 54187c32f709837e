package tlsrec

import (
	"bytes"
	"crypto/tls"
	"io"
	"testing"
)

// TestReserveKeepsOutput: records of three full plaintexts sealed at once
// after Reserve, sent and drained, round after round, reuse one output
// buffer no larger than keepOut, from a Conn that holds none (as Drain
// leaves it after a write larger than keepOut). Grown by doubling as
// crypto/tls appends each record (18, 40, then 80 KiB), the buffer passed
// keepOut with the third record, and Drain dropped it: three new ones
// every round.
func TestReserveKeepsOutput(t *testing.T) {
	p := mustServe(t, tls.VersionTLS13)
	go func() { _, _ = io.Copy(io.Discard, p.peer) }() // ends when the test's sockets close
	plain := make([]byte, 3*maxPlaintext)
	send := func() {
		p.c.Reserve(len(plain))
		for b := plain; len(b) > 0; b = b[maxPlaintext:] {
			if _, err := p.c.Write(b[:maxPlaintext]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 10 { // past crypto/tls's small first records (Config.DynamicRecordSizingDisabled)
		send()
		p.flush(t)
	}
	p.c.mc.out = bytes.Buffer{}
	var first *byte
	for round := range 5 {
		send()
		buf := p.c.mc.out.AvailableBuffer()
		p.flush(t)
		if n := p.c.mc.out.Cap(); n > keepOut || n == 0 {
			t.Fatalf("round %d: the output buffer holds %d bytes after the flush; want it kept, no larger than keepOut (%d)", round, n, keepOut)
		}
		at := &buf[:1][0]
		if first == nil {
			first = at
		} else if at != first {
			t.Fatalf("round %d: the records went in a new output buffer; want the one of round 0", round)
		}
	}
}
