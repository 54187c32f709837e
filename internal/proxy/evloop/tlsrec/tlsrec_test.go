package tlsrec

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/proxy/tlstest"
)

// ioDeadline bounds every blocking read or write a test makes.
const ioDeadline = 10 * time.Second

// peers is a tlsrec Conn on one end of a loopback TCP connection and a
// tls.Conn of crypto/tls on the other.
type peers struct {
	c     *Conn    // tlsrec's side
	raw   net.Conn // its socket, read and written by the test as a loop would
	peer  *tls.Conn
	praw  net.Conn // the peer's socket under peer
	state tls.ConnectionState
}

// serverCert returns a CA and a server certificate for "server", the
// SPIFFE ID spiffe://mesh/server in its URI SAN.
func serverCert(t testing.TB) (*tlstest.CA, tls.Certificate) {
	t.Helper()
	ca := tlstest.NewCA(t, "mesh ca")
	return ca, ca.Issue(t, []string{"server"}, "spiffe://mesh/server").TLS(t)
}

// dial connects a loopback TCP pair: the accepted end and the dialled end.
func dial(t *testing.T) (accepted, dialled net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialled, err = net.DialTimeout("tcp", ln.Addr().String(), ioDeadline)
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close(); dialled.Close() })
	for _, c := range []net.Conn{accepted, dialled} {
		if err := c.SetDeadline(time.Now().Add(ioDeadline)); err != nil {
			t.Fatal(err)
		}
	}
	return accepted, dialled
}

// serve runs tlsrec's server side (hs) against a crypto/tls client with
// ccfg and returns both once the handshakes are done. The client's
// handshake error is returned rather than failing t.
func serve(t *testing.T, hs HandshakeFunc, ccfg *tls.Config) (*peers, error, error) {
	t.Helper()
	raw, praw := dial(t)
	peer := tls.Client(praw, ccfg)
	cerr := make(chan error, 1)
	go func() { cerr <- peer.Handshake() }() // ends with the handshake (the sockets' deadlines bound it)
	ctx, cancel := context.WithTimeout(t.Context(), ioDeadline)
	defer cancel()
	c, serr := Handshake(ctx, raw, hs)
	if serr != nil {
		raw.Close() // as the caller must: the client's handshake ends too
	}
	return &peers{c: c, raw: raw, peer: peer, praw: praw}, serr, <-cerr
}

// mustServe is serve with crypto/tls on both sides at one version,
// failing on error.
func mustServe(t *testing.T, version uint16) *peers {
	t.Helper()
	scfg, ccfg := configs(t, version)
	p, serr, cerr := serve(t, Server(scfg), ccfg)
	if serr != nil || cerr != nil {
		t.Fatalf("handshake: server %v, client %v", serr, cerr)
	}
	return p
}

func configs(t testing.TB, version uint16) (server, client *tls.Config) {
	t.Helper()
	ca, cert := serverCert(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}},
		&tls.Config{RootCAs: ca.Pool(), ServerName: "server", MinVersion: version, MaxVersion: version}
}

// flush writes c's pending ciphertext to its socket, as a loop's write
// path would.
func (p *peers) flush(t *testing.T) {
	t.Helper()
	for out := p.c.Pending(); len(out) > 0; out = p.c.Pending() {
		n, err := p.raw.Write(out)
		p.c.Drain(n)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// feedUntil reads the socket in whatever pieces it gives and feeds them
// until want bytes of plaintext have come out, as a loop's read path
// would.
func (p *peers) feedUntil(t *testing.T, want int) []byte {
	t.Helper()
	var plain []byte
	buf := make([]byte, 4096)
	for len(plain) < want {
		n, err := p.raw.Read(buf)
		if err != nil {
			t.Fatalf("read after %d of %d plaintext bytes: %v", len(plain), want, err)
		}
		if plain, err = p.c.Feed(plain, buf[:n]); err != nil {
			t.Fatalf("feed after %d of %d plaintext bytes: %v", len(plain), want, err)
		}
	}
	return plain
}

// readRecord reads one whole TLS record off r.
func readRecord(t *testing.T, r io.Reader) []byte {
	t.Helper()
	rec := make([]byte, 5)
	if _, err := io.ReadFull(r, rec); err != nil {
		t.Fatalf("record header: %v", err)
	}
	n := int(rec[3])<<8 | int(rec[4])
	rec = append(rec, make([]byte, n)...)
	if _, err := io.ReadFull(r, rec[5:]); err != nil {
		t.Fatalf("record body: %v", err)
	}
	return rec
}

var versions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

// TestRecordSplitAtEveryByte feeds a record cut in two at every byte
// boundary, header included: nothing comes out of the first piece, the
// whole message out of the second. Then byte by byte.
func TestRecordSplitAtEveryByte(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			p := mustServe(t, v.v)
			msg := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			first := true
			for k, size := 1, 2; k < size; k++ {
				if _, err := p.peer.Write(msg); err != nil {
					t.Fatal(err)
				}
				rec := readRecord(t, p.raw)
				if first {
					size, first = len(rec), false
				}
				plain, err := p.c.Feed(nil, rec[:k])
				if err != nil || len(plain) != 0 {
					t.Fatalf("split at %d of %d: first piece gave %q, %v", k, len(rec), plain, err)
				}
				plain, err = p.c.Feed(plain, rec[k:])
				if err != nil || !bytes.Equal(plain, msg) {
					t.Fatalf("split at %d of %d: %q, %v; want %q", k, len(rec), plain, err, msg)
				}
			}
			if _, err := p.peer.Write(msg); err != nil {
				t.Fatal(err)
			}
			var plain []byte
			for _, b := range readRecord(t, p.raw) {
				var err error
				if plain, err = p.c.Feed(plain, []byte{b}); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(plain, msg) {
				t.Fatalf("byte by byte: %q", plain)
			}
			// And the answer reaches the crypto/tls peer.
			if _, err := p.c.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			p.flush(t)
			got := make([]byte, len("HTTP/1.1 204 No Content\r\n\r\n"))
			if _, err := io.ReadFull(p.peer, got); err != nil || string(got) != "HTTP/1.1 204 No Content\r\n\r\n" {
				t.Fatalf("peer read %q, %v", got, err)
			}
		})
	}
}

// TestSeveralRecordsPerFeed: five records in one Feed give five messages;
// a 1 MB body crosses many full-size records both ways.
func TestSeveralRecordsPerFeed(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			p := mustServe(t, v.v)
			var all, want []byte
			for i := range 5 {
				m := []byte(strings.Repeat(string(rune('a'+i)), 100*(i+1)))
				want = append(want, m...)
				if _, err := p.peer.Write(m); err != nil {
					t.Fatal(err)
				}
				all = append(all, readRecord(t, p.raw)...)
			}
			plain, err := p.c.Feed(nil, all)
			if err != nil || !bytes.Equal(plain, want) {
				t.Fatalf("five records in one feed: %d bytes, %v; want %d", len(plain), err, len(want))
			}

			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			go func() { // ends when the body is written or the sockets' deadlines pass
				_, _ = p.peer.Write(big)
			}()
			if got := p.feedUntil(t, len(big)); !bytes.Equal(got, big) {
				t.Fatalf("1 MB upload: %d bytes came out, not the body", len(got))
			}
			if _, err := p.c.Write(big); err != nil {
				t.Fatal(err)
			}
			done := make(chan []byte, 1)
			go func() { // ends when the body is read or the deadline passes
				b := make([]byte, len(big))
				_, _ = io.ReadFull(p.peer, b)
				done <- b
			}()
			p.flush(t)
			if got := <-done; !bytes.Equal(got, big) {
				t.Fatal("1 MB download: the peer read another body")
			}
		})
	}
}

// TestDataBehindHandshake: the client's first request arrives in the same
// read as its Finished; Feed(nil, nil) right after Handshake returns it,
// without the socket becoming readable again.
func TestDataBehindHandshake(t *testing.T) {
	scfg, ccfg := configs(t, tls.VersionTLS13)
	raw, praw := dial(t)
	gate := make(chan struct{})
	peer := tls.Client(praw, ccfg)
	cerr := make(chan error, 1)
	go func() { // ends once the request is written (the deadlines bound it)
		err := peer.Handshake()
		if err == nil {
			_, err = peer.Write([]byte("request"))
		}
		close(gate)
		cerr <- err
	}()
	// The server reads the client's second flight only after the request
	// was sent behind it.
	c, err := Handshake(t.Context(), &gated{Conn: raw, gate: gate}, Server(scfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-cerr; err != nil {
		t.Fatal(err)
	}
	plain, err := c.Feed(nil, nil)
	if err != nil || string(plain) != "request" {
		t.Fatalf("Feed(nil, nil) after the handshake: %q, %v", plain, err)
	}
}

// gated holds its first Read after a Write until gate is closed.
type gated struct {
	net.Conn
	gate  <-chan struct{}
	wrote bool
}

func (g *gated) Write(p []byte) (int, error) { g.wrote = true; return g.Conn.Write(p) }

func (g *gated) Read(p []byte) (int, error) {
	if g.wrote {
		<-g.gate
	}
	return g.Conn.Read(p)
}

// TestSessionTicketThroughFeed: as a TLS 1.3 client, the server's
// NewSessionTicket arrives after the handshake and is taken in by Feed;
// a second connection resumes with it.
func TestSessionTicketThroughFeed(t *testing.T) {
	ca, cert := serverCert(t)
	scfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "server", MinVersion: tls.VersionTLS13, ClientSessionCache: cache}
	for i, wantResumed := range []bool{false, true} {
		raw, praw := dial(t)
		srv := tls.Server(praw, scfg)
		serr := make(chan error, 1)
		go func() { // ends when the server has handshaken and written its greeting
			err := srv.Handshake()
			if err == nil {
				_, err = srv.Write([]byte("hello"))
			}
			serr <- err
		}()
		c, err := Handshake(t.Context(), raw, Client(ccfg))
		if err != nil {
			t.Fatal(err)
		}
		if err := <-serr; err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("connection %d: resumed %v, want %v", i, got, wantResumed)
		}
		p := &peers{c: c, raw: raw}
		if got := p.feedUntil(t, 5); string(got) != "hello" {
			t.Fatalf("connection %d: %q", i, got)
		}
	}
}

// TestCloseNotifyBothWays: the peer's close_notify ends Feed with io.EOF
// after the data before it; CloseWrite's reaches the peer as io.EOF, and
// Write fails after it.
func TestCloseNotifyBothWays(t *testing.T) {
	p := mustServe(t, tls.VersionTLS13)
	if _, err := p.c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := p.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Write([]byte("more")); err == nil {
		t.Error("Write after CloseWrite: no error")
	}
	p.flush(t)
	got, err := io.ReadAll(p.peer)
	if err != nil || string(got) != "bye" {
		t.Fatalf("peer read %q, %v; want bye then EOF", got, err)
	}

	if _, err := p.peer.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := p.peer.Close(); err != nil { // close_notify
		t.Fatal(err)
	}
	all, err := io.ReadAll(p.raw)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := p.c.Feed(nil, all)
	if string(plain) != "last" || err != io.EOF {
		t.Fatalf("Feed of data and close_notify: %q, %v; want last, EOF", plain, err)
	}
	if _, err := p.c.Feed(nil, nil); err != io.EOF {
		t.Errorf("Feed after close_notify: %v, want EOF again", err)
	}
}

// TestCorruptRecord: a record with one bit flipped fails authentication;
// the error is sticky, Pending holds the alert, the peer sees it, and
// the write side is closed too.
func TestCorruptRecord(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			p := mustServe(t, v.v)
			if _, err := p.peer.Write([]byte("tampered with")); err != nil {
				t.Fatal(err)
			}
			rec := readRecord(t, p.raw)
			rec[len(rec)-3] ^= 0x40
			plain, err := p.c.Feed(nil, rec)
			if err == nil || len(plain) != 0 || !strings.Contains(err.Error(), "bad record MAC") {
				t.Fatalf("corrupt record: %q, %v; want a bad record MAC error", plain, err)
			}
			if _, err2 := p.c.Feed(nil, nil); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("Feed after the error: %v, want %v again", err2, err)
			}
			if _, err := p.c.Write([]byte("x")); err == nil {
				t.Error("Write after an alert was sent: no error")
			}
			if out := p.c.Pending(); len(out) == 0 {
				t.Fatal("no alert pending")
			}
			p.flush(t)
			_, err = p.peer.Read(make([]byte, 10))
			if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
				t.Errorf("peer read: %v, want the bad record MAC alert", err)
			}
		})
	}
}

// TestHandshakeEndsWithContext: a client that never speaks does not hold
// the handshake past its context.
func TestHandshakeEndsWithContext(t *testing.T) {
	scfg, _ := configs(t, tls.VersionTLS13)
	raw, _ := dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := Handshake(ctx, raw, Server(scfg)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent client: %v, want the context's deadline", err)
	}
}

// TestNotTLS: a peer speaking plaintext HTTP is refused by the handshake.
func TestNotTLS(t *testing.T) {
	scfg, _ := configs(t, tls.VersionTLS13)
	raw, praw := dial(t)
	if _, err := praw.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := Handshake(t.Context(), raw, Server(scfg)); err == nil {
		t.Fatal("plaintext HTTP: handshake succeeded")
	}
}

// TestLargeOutputNotKept: once a large response is drained, the Conn
// does not keep the output buffer it grew to.
func TestLargeOutputNotKept(t *testing.T) {
	p := mustServe(t, tls.VersionTLS13)
	if _, err := p.c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if p.c.mc.out.Cap() < 1<<20 {
		t.Fatalf("output buffer %d bytes for a 1 MB response", p.c.mc.out.Cap())
	}
	go func() { _, _ = io.Copy(io.Discard, p.peer) }() // ends when the sockets close at cleanup
	p.flush(t)
	if got := p.c.mc.out.Cap(); got > keepOut {
		t.Errorf("output buffer of %d bytes kept after it was drained", got)
	}
}

// TestClose: Close queues close_notify (the peer reads EOF) and ends the
// Conn: Feed and Write fail after it.
func TestClose(t *testing.T) {
	p := mustServe(t, tls.VersionTLS13)
	if err := p.c.Close(); err != nil {
		t.Fatal(err)
	}
	p.flush(t)
	if got, err := io.ReadAll(p.peer); err != nil || len(got) != 0 {
		t.Fatalf("peer read %q, %v; want EOF", got, err)
	}
	if _, err := p.c.Write([]byte("x")); err == nil {
		t.Error("Write after Close: no error")
	}
	if _, err := p.c.Feed(nil, []byte{23, 3, 3, 0, 1, 0}); err == nil {
		t.Error("Feed after Close: no error")
	}
}

// TestDrainedOutputReused: an output buffer drained to its end is reused
// from its start: writes of two full records each, after one that ended
// with a short record, go on in the same buffer, never grown past
// keepOut (and so dropped and made again).
func TestDrainedOutputReused(t *testing.T) {
	p := mustServe(t, tls.VersionTLS13)
	go func() { _, _ = io.Copy(io.Discard, p.peer) }() // ends when the sockets close at cleanup
	// A full record and one of a byte.
	if _, err := p.c.Write(make([]byte, 16<<10+1)); err != nil {
		t.Fatal(err)
	}
	p.flush(t)
	var first *byte
	for i := range 10 {
		if _, err := p.c.Write(make([]byte, 32<<10)); err != nil {
			t.Fatal(err)
		}
		out := p.c.Pending()
		if i == 0 {
			first = &out[:1][0]
		}
		if c := p.c.mc.out.Cap(); c > keepOut || &out[:1][0] != first {
			t.Fatalf("write %d of 32 KiB: an output buffer of %d bytes, new: %v; want the first write's reused (at most %d)", i, c, &out[:1][0] != first, keepOut)
		}
		p.flush(t)
	}
}
