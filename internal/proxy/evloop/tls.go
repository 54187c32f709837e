package evloop

import (
	"context"
	"net"
	"time"

	"github.com/weftmesh/weft/internal/proxy/evloop/tlsrec"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// ClientTLS originates TLS to upstream hosts: a cluster's
// tlsctx.Client, with its certificate checks and ssl.* counters. The
// loops offer the protocol the connection speaks (tlsctx.ALPNHTTP11 or
// tlsctx.ALPNH2), as the goroutine path's pools do.
type ClientTLS interface {
	Handshake(ctx context.Context, c net.Conn, alpn tlsctx.ALPN) (net.Conn, error)
}

// TLS terminates TLS on a listener's connections on the loops: the
// handshake runs on a goroutine per new connection (crypto/tls cannot
// pause one half-way), bounded by Timeout; the records afterwards are
// sealed and opened on the connection's loop (package tlsrec).
type TLS struct {
	// Handshake runs the server side of the handshake: weft's
	// tlsctx.Server.Handshake, with its certificate checks and ssl.*
	// counters, so that the loops accept and refuse exactly the clients
	// the goroutine path does.
	Handshake tlsrec.HandshakeFunc
	// Timeout bounds each handshake; 0 means tlsctx.HandshakeTimeout,
	// the goroutine path's.
	Timeout time.Duration
}
