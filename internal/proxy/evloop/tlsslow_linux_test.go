package evloop

import (
	"bytes"
	"crypto/tls"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// slowTLSPeer reads want bytes from peer in small reads with pauses, so
// that the loop's side of a small socket meets a full socket (EAGAIN) in
// the middle of what it sealed for one write. The returned channel
// yields what it read.
func slowTLSPeer(t *testing.T, peer *tls.Conn, want int) <-chan []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() { // ends when it has read want bytes, or the peer fails (closed at the test's end)
		b := make([]byte, want)
		n := 0
		for n < want {
			k, err := peer.Read(b[n:min(want, n+1500)])
			n += k
			if err != nil {
				break
			}
			if n/1500%8 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
		got <- b[:n]
	}()
	return got
}

// waitWritable waits until fd takes bytes again, the loop's EPOLLOUT;
// if it does not within 5s, the peer stopped reading: the test fails
// with what it read.
func waitWritable(t *testing.T, fd int, got <-chan []byte, want []byte) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, 5000)
		if err == unix.EINTR {
			continue
		}
		if err == nil && n > 0 {
			return
		}
		select {
		case b := <-got:
			checkSame(t, "the socket stayed full, the upstream stopped reading", b, want)
		case <-time.After(time.Second):
		}
		t.Fatalf("the socket did not become writable within 5s (%v)", err)
	}
}

// slowLoop is a bare loop with an epoll set, so that flushUp may watch
// for writable when the socket is full.
func slowLoop(t *testing.T) *loop {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ep) })
	return &loop{ep: ep}
}

// checkSame fails the test unless got is want, saying where they part.
func checkSame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < min(len(got), len(want)) && got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: %d bytes, the first difference at %d; want %d bytes, in order", what, len(got), i, len(want))
}

// TestTLSKeptChainSlowPeer: a retry's kept body to an HTTP/1.1 upstream
// over TLS that reads slowly through a small socket, the body growing
// (more chunks kept, then the request's rest in out) while records
// sealed for an earlier write still wait for the socket, arrives whole
// and in order, kept (a retry may follow) or not; the socket was full
// mid-batch many times (EAGAIN after records were sealed). The
// batched-write tests' sockets hold everything.
func TestTLSKeptChainSlowPeer(t *testing.T) {
	for _, replayable := range []bool{true, false} {
		t.Run(map[bool]string{true: "kept", false: "not kept"}[replayable], func(t *testing.T) {
			body := tlsBody()
			body = append(body, body[:5000]...) // not a whole chunk at the end
			tail := []byte("the request's rest, in out after the kept chain")
			want := append(bytes.Clone(body), tail...)
			fd, tc, peer := tlsUpPair(t, 4096)
			l := slowLoop(t)
			u := &up{fd: fd, tls: tc, replayable: replayable}
			got := slowTLSPeer(t, peer, len(want))
			full := 0
			for b := body; len(b) > 0; {
				k := min(len(b), 7000) // the client's body as it comes: pieces across chunks
				u.kept.Append(l.chunks(), b[:k])
				b = b[k:]
				l.flushUp(u)
				if u.wantOut {
					full++
					if len(b) > 0 {
						continue // more queued behind the records waiting
					}
				}
			}
			u.out = append(l.getBuf(), tail...)
			for u.outPending() || u.tlsPending() {
				l.flushUp(u)
				if u.wantOut {
					full++
					waitWritable(t, fd, got, want)
				}
			}
			if u.wantOut {
				t.Fatal("all written and still watching for writable")
			}
			checkSame(t, "the upstream read", <-got, want)
			if full == 0 {
				t.Fatal("the socket was never full: the test did not test partial writes")
			}
			t.Logf("%d bytes, the socket full %d times", len(want), full)
		})
	}
}

// TestTLSH2OutSlowPeer: an HTTP/2 upstream connection's output over TLS
// to a peer that reads slowly through a small socket, two streams'
// frames of mixed sizes added while records sealed for an earlier write
// still wait for the socket, arrives whole and in order.
func TestTLSH2OutSlowPeer(t *testing.T) {
	body := tlsBody()
	fd, tc, peer := tlsUpPair(t, 4096)
	l := slowLoop(t)
	c := testH2Up(l, h2MaxFrame)
	c.u.fd, c.u.tls = fd, tc
	sizes := []int{h2MaxFrame, 7000, 123, h2MaxFrame, 9000}
	var want bytes.Buffer // the frames, as x/net's Framer writes them
	wfr := http2.NewFramer(&want, nil)
	for i, b := 0, body; len(b) > 0; i++ {
		k := min(len(b), sizes[i%len(sizes)])
		_ = wfr.WriteData(1, false, b[:k])
		_ = wfr.WriteData(3, false, b[:k])
		b = b[k:]
	}
	got := slowTLSPeer(t, peer, want.Len())
	full := 0
	for i, b := 0, body; len(b) > 0; i++ {
		k := min(len(b), sizes[i%len(sizes)])
		_ = c.fr.WriteData(1, false, b[:k])
		_ = c.fr.WriteData(3, false, b[:k])
		b = b[k:]
		if i%3 == 2 {
			l.flushUp(c.u)
			if c.u.wantOut {
				full++
			}
		}
	}
	for c.out.len() > 0 || c.u.tlsPending() {
		l.flushUp(c.u)
		if c.u.wantOut {
			full++
			waitWritable(t, fd, got, want.Bytes())
		}
	}
	out := <-got
	checkSame(t, "the upstream read", out, want.Bytes())
	d := readData(t, out)
	checkSame(t, "stream 1", d[1], body)
	checkSame(t, "stream 3", d[3], body)
	if full == 0 {
		t.Fatal("the socket was never full: the test did not test partial writes")
	}
	t.Logf("%d bytes, the socket full %d times", want.Len(), full)
}
