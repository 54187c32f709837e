package listener

import (
	"context"
	"crypto/tls"
	"net"
)

// TLS terminates TLS on the connections of a filter chain (its
// transport_socket). Handshake returns the decrypted connection; on error
// the caller closes c.
type TLS interface {
	Handshake(ctx context.Context, c net.Conn) (net.Conn, error)
}

// startTLS runs the chain's handshake on c, if it has TLS. false means
// the handshake failed and c is closed: never served in plaintext.
func (l *Listener) startTLS(ctx context.Context, c *Conn) bool {
	if c.Chain.TLS == nil {
		return true
	}
	tc, err := c.Chain.TLS.Handshake(ctx, c.Conn)
	if err != nil {
		l.log.Debug("downstream TLS handshake failed", "src", c.Src.String(), "chain", c.Chain.Name, "err", err)
		_ = c.Close()
		return false
	}
	useTLS(c, tc)
	return true
}

// useTLS makes c's reads and writes go through tc.
func useTLS(c *Conn, tc net.Conn) {
	c.Conn = tc
	if st, ok := tc.(interface{ ConnectionState() tls.ConnectionState }); ok && c.ServerName == "" {
		c.ServerName = lowerSNI(st.ConnectionState().ServerName)
	}
}

// resumeTLS serves c over tc, the TLS the event loops terminated. false
// means c's chain (chosen again under the configuration now in force) has
// no TLS any more and c is closed: never served in plaintext.
func (l *Listener) resumeTLS(c *Conn, tc net.Conn) bool {
	if c.Chain.TLS == nil {
		l.log.Debug("connection from the loops closed: its chain has no TLS any more", "src", c.Src.String(), "chain", c.Chain.Name)
		_ = c.Close()
		return false
	}
	useTLS(c, tc)
	return true
}

// Scheme is "https" for a connection served over TLS, else "http" (what
// Envoy puts in X-Forwarded-Proto when the request has none).
func (c *Conn) Scheme() string {
	if c.Chain != nil && c.Chain.TLS != nil {
		return "https"
	}
	return "http"
}
