// Package tlsrec is a TLS record layer that never blocks, for an event
// loop: crypto/tls itself (not a fork), run over a connection held in
// memory, so that a loop can feed it the ciphertext it read and send the
// ciphertext it produces.
//
// # How it works
//
// crypto/tls reads its records from a net.Conn. When that Read fails with
// a net.Error whose Temporary method reports true, tls.Conn does not keep
// the error: the bytes of a partial record stay in its buffer and the next
// Read carries on from them. The connection under a Conn is such a memory
// connection: Read hands out the bytes given to Feed and, once they are
// used up, returns a temporary "would block" error; Write appends to an
// output buffer that the caller drains. Every other error of crypto/tls (a
// record that fails authentication, a close_notify, a protocol violation)
// stays sticky, as TLS requires, and the alert crypto/tls sends for it
// lands in the output buffer.
//
// The handshake cannot be resumed half-way in crypto/tls, so it runs on a
// goroutine of the caller's over the real socket: Handshake passes the
// memory connection's reads and writes through to the socket (blocking,
// with the socket's deadlines and the context's) until the handshake is
// done, then switches it to memory. The handshake function is the
// caller's: crypto/tls with a tls.Config (Server, Client), or weft's
// tlsctx.Server.Handshake, whose certificate checks (the peer's chain
// against the mesh's trust bundle, its SPIFFE URI SAN against the
// listener's matchers) then apply unchanged.
//
// # How a loop uses it
//
// A Conn belongs to one goroutine at a time: the handshake goroutine until
// Handshake returns, then the loop that serves the socket.
//
//  1. On accept, the loop hands the socket to a goroutine that calls
//     Handshake (with a deadline) and gives the Conn back to the loop, or
//     closes the socket on error. The goroutine needs a net.Conn: the
//     connection as Go's listener accepted it, whose descriptor the loop
//     takes afterwards (SyscallConn, or net.Conn's File for a duplicate),
//     or net.FileConn over a duplicate of a descriptor the loop accepted.
//     The goroutine lives for the handshake only.
//  2. The loop calls Feed(plain, nil) once at once: the handshake may have
//     read application data that arrived behind its last message, and the
//     socket will not report it readable again.
//  3. On readable, the loop reads into its read buffer and calls
//     plain, err = Feed(plain[:0], buf[:n]): the plaintext of every complete
//     record is appended to plain; a partial record stays inside the Conn
//     and buf may be reused at once. plain goes to the loop's parser.
//     err == io.EOF is the peer's close_notify (after the plaintext before
//     it); any other error is final for reading and, usually, the
//     connection.
//  4. A response is Written (plaintext in, ciphertext out): Write never
//     touches the socket.
//  5. After Feed and after Write, Pending returns the ciphertext to send
//     (Write's records, the reply to a KeyUpdate, an alert): the loop
//     writes it with its ordinary write path (write or writev, waiting for
//     writable on EAGAIN) and calls Drain with the bytes the kernel took.
//     The loop bounds Pending as it bounds any output: stop reading the
//     peer while it is above the loop's limit.
//  6. To end: CloseWrite (close_notify into Pending), flush, close the
//     socket. After an error from Feed, flush Pending (the alert) before
//     closing.
package tlsrec

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// HandshakeFunc runs one side of a TLS handshake on c and returns the
// *tls.Conn it made over c. tlsctx.Server.Handshake is one.
type HandshakeFunc func(ctx context.Context, c net.Conn) (net.Conn, error)

// Server returns a HandshakeFunc for the server side with cfg.
func Server(cfg *tls.Config) HandshakeFunc {
	return func(ctx context.Context, c net.Conn) (net.Conn, error) {
		tc := tls.Server(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		return tc, nil
	}
}

// Client returns a HandshakeFunc for the client side with cfg.
func Client(cfg *tls.Config) HandshakeFunc {
	return func(ctx context.Context, c net.Conn) (net.Conn, error) {
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		return tc, nil
	}
}

// Conn is a TLS connection after its handshake, driven by Feed, Write and
// Pending/Drain. It is not safe for concurrent use.
type Conn struct {
	tc *tls.Conn
	mc *memConn
}

// minRead is the least free room Feed offers crypto/tls for plaintext;
// growStep is what it adds when dst has less.
const (
	minRead  = 512
	growStep = 4096
)

// Handshake runs hs over raw, blocking, until it completes or ctx ends,
// and returns the Conn that carries the connection on from there. raw
// stays the caller's: Handshake closes it only when ctx ends mid-way (that
// is how crypto/tls interrupts a handshake); on any error the caller
// closes it. After Handshake, nothing reads or writes raw but the caller.
func Handshake(ctx context.Context, raw net.Conn, hs HandshakeFunc) (*Conn, error) {
	mc := &memConn{raw: raw, local: raw.LocalAddr(), remote: raw.RemoteAddr()}
	nc, err := hs(ctx, mc)
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil, fmt.Errorf("tls handshake: the handshake function returned a %T, not a *tls.Conn", nc)
	}
	// The handshake's context watcher has ended when HandshakeContext
	// returned, so nothing else uses mc.raw from here on.
	mc.raw = nil
	return &Conn{tc: tc, mc: mc}, nil
}

// Feed gives the Conn ciphertext read from the socket and appends the
// plaintext of every record now complete to dst. Bytes of a record not yet
// complete are kept inside the Conn; ciphertext is not retained, so the
// caller may reuse it when Feed returns. Feed(dst, nil) returns what is
// already buffered.
//
// io.EOF means the peer sent close_notify: dst holds the plaintext before
// it. Any other error is crypto/tls's and sticky: every later Feed returns
// it, and Pending may hold the alert that tells the peer.
func (c *Conn) Feed(dst, ciphertext []byte) ([]byte, error) {
	c.mc.in = ciphertext
	defer func() { c.mc.in = nil }()
	for {
		if cap(dst)-len(dst) < minRead {
			dst = slices.Grow(dst, growStep)
		}
		n, err := c.tc.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		switch {
		case err == nil:
		case errors.Is(err, errWouldBlock):
			return dst, nil
		default:
			return dst, err
		}
	}
}

// Write seals p into TLS records appended to Pending. It fails once the
// write side has failed or been closed (CloseWrite, Close, an alert sent).
func (c *Conn) Write(p []byte) (int, error) {
	return c.tc.Write(p)
}

// Reserve makes room in Pending's buffer for the records of n bytes of
// plaintext at TLS's largest record size (RFC 8446 5.2: at most 256
// bytes over its plaintext each, and a 5-byte header), in one allocation
// of that size when it has less. A caller that seals several records
// before sending them so keeps one buffer: grown by doubling from none
// (as Drain leaves a Conn after a large write), three full records took
// it to 80 KiB, past keepOut, dropped and made again at every such
// write. Records smaller than the largest (crypto/tls's first ones on a
// connection) may still grow it.
func (c *Conn) Reserve(n int) {
	need := n + (n/maxPlaintext+1)*(5+256)
	b := &c.mc.out
	if b.Available() >= need {
		return
	}
	nb := make([]byte, b.Len(), b.Len()+need)
	copy(nb, b.Bytes())
	*b = *bytes.NewBuffer(nb)
}

// maxPlaintext is the most plaintext a TLS record carries (RFC 8446 5.1).
const maxPlaintext = 16384

// Pending returns the ciphertext waiting to be sent, in order. The slice
// is valid until the next call of any other method.
func (c *Conn) Pending() []byte { return c.mc.out.Bytes() }

// Drain drops the first n bytes of Pending: the bytes the socket took.
// Once all is sent, the output buffer is kept for the next response,
// from its start, unless a large one grew it past keepOut. (Emptied by
// Next alone, a bytes.Buffer appends the next record behind the bytes
// already sent when they leave room for it, and grows for the one after:
// an HTTP/2 connection's writes of two full records each made a new
// buffer every few writes, of 64 or 72 KiB, the latter past keepOut and
// dropped once drained.)
func (c *Conn) Drain(n int) {
	c.mc.out.Next(n)
	if c.mc.out.Len() == 0 {
		if c.mc.out.Cap() > keepOut {
			c.mc.out = bytes.Buffer{}
		} else {
			c.mc.out.Reset()
		}
	}
}

// keepOut is the largest output buffer an idle Conn keeps: a few records'
// worth, so a large download does not stay pinned to the connection.
const keepOut = 64 << 10

// CloseWrite appends close_notify to Pending; Write fails after it, Feed
// still works (the peer may answer before closing).
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// Close appends close_notify to Pending unless it was sent, and ends the
// Conn: Write and Feed fail after it. It does not close the socket.
func (c *Conn) Close() error { return c.tc.Close() }

// Resume gives the connection back to blocking I/O over raw (a
// goroutine's net.Conn over the same socket): it writes Pending to raw,
// then the returned *tls.Conn reads and writes raw directly, as during
// Handshake, carrying on from any partial record it holds. The Conn must
// not be used after it; plaintext that Feed returned and nobody consumed
// is the caller's to put in front. For a loop that hands a connection to
// the goroutine path.
func (c *Conn) Resume(raw net.Conn) (*tls.Conn, error) {
	if p := c.mc.out.Bytes(); len(p) > 0 {
		if _, err := raw.Write(p); err != nil {
			return nil, fmt.Errorf("resume tls: write pending records: %w", err)
		}
	}
	c.mc.out = bytes.Buffer{}
	c.mc.in = nil
	c.mc.raw = raw
	return c.tc, nil
}

// ConnectionState is the handshake's outcome (version, cipher suite, ALPN,
// the peer's verified certificates).
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// errWouldBlock is what the memory connection's Read returns when the fed
// bytes are used up: temporary, so crypto/tls keeps no error.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsrec: no more input" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// memConn is the net.Conn under the tls.Conn: the socket itself during
// the handshake (raw set), memory afterwards.
type memConn struct {
	raw           net.Conn
	local, remote net.Addr
	in            []byte       // ciphertext fed and not yet read by crypto/tls
	out           bytes.Buffer // ciphertext written by crypto/tls, not yet drained
	closed        bool
}

func (m *memConn) Read(p []byte) (int, error) {
	if m.raw != nil {
		return m.raw.Read(p)
	}
	if m.closed {
		return 0, net.ErrClosed
	}
	if len(m.in) == 0 {
		return 0, errWouldBlock
	}
	n := copy(p, m.in)
	m.in = m.in[n:]
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error) {
	if m.raw != nil {
		return m.raw.Write(p)
	}
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.out.Write(p)
}

// Close closes the socket only during the handshake (crypto/tls's way to
// interrupt it when its context ends); afterwards the socket is the
// loop's.
func (m *memConn) Close() error {
	if m.raw != nil {
		return m.raw.Close()
	}
	m.closed = true
	return nil
}

func (m *memConn) LocalAddr() net.Addr  { return m.local }
func (m *memConn) RemoteAddr() net.Addr { return m.remote }

func (m *memConn) SetDeadline(t time.Time) error {
	if m.raw != nil {
		return m.raw.SetDeadline(t)
	}
	return nil
}

func (m *memConn) SetReadDeadline(t time.Time) error {
	if m.raw != nil {
		return m.raw.SetReadDeadline(t)
	}
	return nil
}

func (m *memConn) SetWriteDeadline(t time.Time) error {
	if m.raw != nil {
		return m.raw.SetWriteDeadline(t)
	}
	return nil
}

var _ io.ReadWriteCloser = (*memConn)(nil)
