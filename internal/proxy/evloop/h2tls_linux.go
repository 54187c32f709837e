package evloop

// HTTP/2 over TLS on the loops: both sides are the h2c code over the
// loops' TLS records (tls_linux.go), so what this file holds is the few
// places where the two meet.
//
// Downstream, a TLS connection (whatever its ALPN said: the goroutine
// path, too, serves HTTP/2 on any connection that opens with the
// preface) becomes an HTTP/2 connection at its preface as an h2c one does
// (startH2); its frames are read from the plaintext Feed returns and
// written through writeSock, which seals them. Its streams are downs
// without a TLS connection of their own: overTLS tells them apart for
// X-Forwarded-Proto.
//
// Upstream, an HTTP/2 connection to a cluster with TLS connects as an
// HTTP/1.1 one (dial, onUp's connect, startUpHandshake offering ALPN h2,
// as the goroutine path's HTTP/2 pool does, and speaking HTTP/2 whatever
// the server chose, as it does too); its frames are read with h2UpReadSock.

import (
	"errors"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// overTLS reports whether d's requests came over TLS: its connection's,
// or for an HTTP/2 stream its HTTP/2 connection's.
func (d *down) overTLS() bool {
	if d.h2 != nil {
		return d.h2.c.d.tls != nil
	}
	return d.tls != nil
}

// upALPN is the protocol an upstream connection offers in its handshake:
// the one it speaks, as the goroutine path's pools offer theirs.
func upALPN(u *up) tlsctx.ALPN {
	if u.h2 != nil {
		return tlsctx.ALPNH2
	}
	return tlsctx.ALPNHTTP11
}

// h2UpReadSock is h2UpRead's read into u.in's spare room: rawRead, or
// over TLS the plaintext of the records read (readUpTLS). When the socket
// has nothing, the records the handshake read past its end are taken (a
// server's SETTINGS may have come with its last handshake message): the
// socket will not report them again.
func (l *loop) h2UpReadSock(u *up) (int, error) {
	if u.tls == nil {
		return rawRead(u.fd, u.in[len(u.in):cap(u.in)])
	}
	n, err := l.readUpTLS(u)
	if errors.Is(err, unix.EAGAIN) {
		return l.feedUpTLS(u, nil)
	}
	return n, err
}

// h2UpHandshaken: an upstream HTTP/2 connection's handshake is done and
// what waited for it (preface, SETTINGS, the streams' HEADERS) is sent
// (upHandshaken). Frames behind the handshake are read now.
func (l *loop) h2UpHandshaken(u *up) {
	if u.closed {
		return
	}
	l.h2UpRead(u.h2)
	if !u.closed && u.in != nil && u.off == len(u.in) {
		l.putBuf(u.in)
		u.in, u.off = nil, 0
	}
	if !u.closed && !u.wantOut {
		l.h2UpResume(u.h2) // streams held by h2MaxOut while connecting
	}
}

// h2UpRetire takes the HTTP/2 connections of p out of use when the
// cluster's TLS changed (poolTLS): no new stream goes to them, and each
// closes after its last stream.
func (l *loop) h2UpRetire(p *clusterPool) {
	for _, u := range slices.Clone(p.h2) {
		u.h2.goAway = true
		l.h2UpMaybeClose(u.h2)
	}
}
