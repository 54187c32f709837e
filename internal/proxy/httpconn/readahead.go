package httpconn

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/internal/proxy/route"
)

// Reading a request's body while its attempt waits for a connect. A
// transport reads the body only once it has a connection, so while the
// upstream's connect was slow nothing read a body still arriving: its end,
// which starts the route timeout (requestComplete), was not seen, and the
// request was answered when the connect failed (503 UF at the cluster's
// connect timeout) or held until the client left; an HTTP/1.1 client
// that left was not noticed either (its connection is read by nothing
// meanwhile). Envoy's codec reads the body while its pool connects, the
// router buffering it, so the route timeout starts at the body's end
// (Filter::onRequestComplete) whatever the pool is doing, and the
// client's close is seen at once; the loops do the same. Here the body
// is read ahead, into memory, from the moment the fallback Transport
// starts a connect for the attempt (cluster.WithConnecting), up to
// route.MaxRetryBuffer (Envoy's default per-connection buffer limit, past which
// its codec stops reading the client), until the transport's first read
// of the body, which takes what was read, then reads on itself.

// errBodyFailed is the cause a stream ends with when its body's read
// ahead failed: the client left or broke the body's framing
// (downstreamError tells which).
var errBodyFailed = errors.New("the request body's read failed while the upstream connected")

// aheadBody is a request body that can be read ahead (start) while its
// attempt waits for a connect. The transport reads it as any body, on
// one goroutine at a time.
type aheadBody struct {
	src io.Reader // the stream's body (countingBody)
	s   *stream
	// handed: the transport reads (Read) or the forwarder took it back
	// (release); no read ahead starts any more. Set under mu; read
	// without it on each Read.
	handed atomic.Bool
	stop   atomic.Bool // the read ahead stops after the read under way
	mu     sync.Mutex
	done   chan struct{} // closed when the read ahead ends; nil when none started; under mu
	// Written by the read ahead, read once done is closed.
	buf []byte
	err error // the read ahead's last error: the body's end, or its failure
	off int   // what Read has taken of buf
}

// aheadOf is the aheadBody under req's body (forward's), nil when none.
func aheadOf(req *http.Request) *aheadBody {
	if nc, ok := req.Body.(*noCloseBody); ok {
		ab, _ := nc.r.(*aheadBody)
		return ab
	}
	return nil
}

// start starts reading the body ahead, once, unless the transport reads
// it already. Called on the transport's dialing goroutine.
func (b *aheadBody) start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handed.Load() || b.done != nil {
		return
	}
	b.done = make(chan struct{})
	go b.readAhead() // ends at the body's end, at route.MaxRetryBuffer, when a read fails, or at the read under way when Read or release stops it
}

// readAhead reads the body into buf. A read that fails but for a timeout
// of the stream (abortBody) or release's abort ends the stream
// (errBodyFailed), so that the attempt waiting for its connect ends at
// once: the client left, or sent a malformed body.
func (b *aheadBody) readAhead() {
	defer close(b.done)
	for !b.stop.Load() && len(b.buf) < route.MaxRetryBuffer {
		if len(b.buf) == cap(b.buf) {
			b.buf = slices.Grow(b.buf, min(max(cap(b.buf), 4<<10), route.MaxRetryBuffer-len(b.buf)))
		}
		n, err := b.src.Read(b.buf[len(b.buf):min(cap(b.buf), route.MaxRetryBuffer)])
		b.buf = b.buf[:len(b.buf)+n]
		if err != nil {
			b.err = err
			if err != io.EOF && !b.stop.Load() && !b.s.timedOut() {
				b.s.cancel(errBodyFailed)
			}
			return
		}
	}
}

// Read takes over the body: the read ahead, stopped after the read
// under way, gives what it read first.
func (b *aheadBody) Read(p []byte) (int, error) {
	if !b.handed.Load() {
		if done := b.takeOver(); done != nil {
			<-done
		}
	}
	if b.off < len(b.buf) {
		n := copy(p, b.buf[b.off:])
		b.off += n
		if b.off == len(b.buf) {
			b.buf, b.off = nil, 0
		}
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.src.Read(p)
}

// takeOver stops the read ahead after the read under way and keeps
// another from starting; it returns what closes when the read ahead
// ended, nil when none started.
func (b *aheadBody) takeOver() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handed.Store(true)
	if b.done != nil {
		b.stop.Store(true)
	}
	return b.done
}

// release gives the body back to the forwarder once the request's
// attempts are over (the drain of its rest, or the connection's next
// request, reads on): a read ahead still waiting for the client (the
// transport never read the body: its connect failed, or the client or a
// timeout ended the attempt) has its read aborted (abortBody's: the
// HTTP/1.1 connection closes after the reply, whose body did not
// arrive) and is waited for.
func (b *aheadBody) release() {
	done := b.takeOver()
	if done == nil {
		return
	}
	select {
	case <-done:
	default:
		b.s.abortBody()
		<-done
	}
}
