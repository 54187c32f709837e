package evloop

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// tlsUpPair is an upstream connection's socket over TLS, handshaken: the
// loop's side (its descriptor, non-blocking, and its tlsrec.Conn) and
// the upstream's, Go's tls.Conn. The socket holds what a test writes
// without the upstream reading (sendBuf bytes), so a flush never meets
// a full socket.
func tlsUpPair(t *testing.T, sendBuf int) (int, *tlsrec.Conn, *tls.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]) })
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuf); err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, "up")
	peerFile := os.NewFile(uintptr(fds[1]), "upstream")
	peerConn, err := net.FileConn(peerFile) // a duplicate; peerFile's is closed here
	_ = peerFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	peer := tls.Server(peerConn, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"up.local"}).TLS(t)}})
	t.Cleanup(func() { _ = peer.Close() })
	done := make(chan error, 1)
	go func() { done <- peer.Handshake() }() // ends with the handshake, or when the loop's side closes
	dup, err := unix.Dup(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "loop")
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := tlsrec.Handshake(ctx, c, tlsrec.Client(&tls.Config{RootCAs: ca.Pool(), ServerName: "up.local"}))
	_ = c.Close() // the loop's descriptor stays
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return fds[0], tc, peer
}

// writeCalls returns how many write and writev system calls f made: f
// runs on this goroutine's thread alone (/proc/thread-self/io's syscw).
func writeCalls(t *testing.T, f func()) int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := syscw(t)
	f()
	return syscw(t) - before
}

func syscw(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/io")
	if err != nil {
		t.Skipf("no write counts: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no syscw in /proc/thread-self/io")
	return 0
}

// tlsBody is a retry's kept body in these tests: 12 chunks of bufSize.
func tlsBody() []byte {
	body := make([]byte, 12*bufSize)
	for i := range body {
		body[i] = byte(i*7 + i>>12)
	}
	return body
}

// TestTLSKeptChainBatched: a retry's kept body (12 chunks of 16 KiB) sent
// to an HTTP/1.1 upstream over TLS goes with a write per tlsBatch (4
// writes), every byte in order. Sealed and written a chunk at a time,
// it took a write per chunk (12), where plaintext takes one writev of up
// to 16 chunks (writeKept).
func TestTLSKeptChainBatched(t *testing.T) {
	body := tlsBody()
	fd, tc, peer := tlsUpPair(t, 4*len(body))
	l := &loop{}
	u := &up{fd: fd, tls: tc}
	u.kept.Append(l.chunks(), body)
	writes := writeCalls(t, func() { l.flushUp(u) })
	if u.outPending() || u.tlsPending() || u.wantOut {
		t.Fatalf("after flushUp: %d of %d bytes written, records pending %v; want all written (the socket holds them)", u.keptOff, len(body), u.tlsPending())
	}
	got := make([]byte, len(body))
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the upstream read %v; want the body's %d bytes in order", err, len(body))
	}
	if most := (len(body) + tlsBatch - 1) / tlsBatch; writes > most {
		t.Fatalf("the kept body of %d chunks (%d bytes) went in %d writes; want at most %d, a write per %d bytes sealed",
			len(body)/bufSize, len(body), writes, most, tlsBatch)
	}
	t.Logf("%d bytes in %d writes", len(body), writes)
	// Sealing a batch takes no new buffer for its records once the
	// connection has one (tlsrec.Conn.Reserve): grown by doubling, the
	// third record's took it past what a Conn keeps, made anew each time.
	if raceOn {
		return // allocations are counted without the race detector
	}
	// The socket holds the batches of the 5 runs: read after.
	allocs := testing.AllocsPerRun(4, func() {
		u.kept.Append(l.chunks(), body[:tlsBatch])
		l.flushUp(u)
	})
	if allocs > 0 {
		t.Fatalf("a batch of %d bytes sent over TLS allocated %v times; want none", tlsBatch, allocs)
	}
	for range 5 {
		if _, err := io.ReadFull(peer, got[:tlsBatch]); err != nil || !bytes.Equal(got[:tlsBatch], body[:tlsBatch]) {
			t.Fatalf("the upstream read %v; want a batch's %d bytes of the body", err, tlsBatch)
		}
	}
}

// TestTLSH2OutBatched: an HTTP/2 upstream connection's output over TLS
// (12 DATA frames of 16 KiB, in buffers of 32 KiB past the connection's
// own) goes with a write per tlsBatch, every frame in order. A buffer at
// a time took a write per 32 KiB (7), where plaintext takes one writev.
func TestTLSH2OutBatched(t *testing.T) {
	body := tlsBody()
	fd, tc, peer := tlsUpPair(t, 4*len(body))
	l := &loop{}
	c := testH2Up(l, h2MaxFrame)
	c.u.fd, c.u.tls = fd, tc
	for b := body; len(b) > 0; b = b[h2MaxFrame:] {
		_ = c.fr.WriteData(1, false, b[:h2MaxFrame])
	}
	total := c.out.len()
	writes := writeCalls(t, func() { l.flushUp(c.u) })
	if c.out.len() != 0 || c.u.tlsPending() || c.u.wantOut {
		t.Fatalf("after flushUp: %d of %d bytes left, records pending %v; want all written (the socket holds them)", c.out.len(), total, c.u.tlsPending())
	}
	got := make([]byte, total)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("the upstream read %v; want the output's %d bytes", err, total)
	}
	if d := readData(t, got)[1]; !bytes.Equal(d, body) {
		t.Fatalf("stream 1 sent %d bytes; want the body's %d, in order", len(d), len(body))
	}
	if most := (total + tlsBatch - 1) / tlsBatch; writes > most {
		t.Fatalf("%d bytes of frames went in %d writes; want at most %d, a write per %d bytes sealed", total, writes, most, tlsBatch)
	}
	t.Logf("%d bytes in %d writes", total, writes)
}
